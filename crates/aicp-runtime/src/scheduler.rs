//! The scheduler of one model version: a bounded queue, a dynamic batcher, and the engine
//! instances that run the batches, each on its own OS thread (never on the async runtime's).
//!
//! A request waits in the queue until an instance is free. The free instance gathers a batch:
//! the oldest request, then whatever else is waiting of the same shape and, with a queue delay,
//! whatever arrives until the oldest request has waited that long; it stops at
//! `max_batch_size` samples or at a preferred size. Requests of other shapes it passes over
//! (up to `MAX_PASSED_OVER`) lead the next batches, oldest first. Requests whose caller has
//! gone or whose deadline has passed are dropped here, before the engine. The batch runs as one
//! engine call and each request gets its own rows of the outputs back. One instance gathers at
//! a time, so a batch is never split between two.
//!
//! After a batch, an idle instance keeps polling its queue for a short while (`idle_poll`),
//! yielding its core to any other thread that wants it, before it goes to sleep: a request that
//! arrives meanwhile starts without waiting for a sleeping thread to be woken, which on a
//! virtual machine costs tens of microseconds.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aicp_core::{Error, ErrorKind, Input, Result, Tensor, panic_message};
use aicp_engine::Runnable;
use tokio::sync::oneshot;

use crate::policy::Policy;
use crate::stats::Stats;

/// What a request got from its engine run.
#[derive(Debug)]
pub struct Completed {
    /// Its own rows of every output, in the model's output order.
    pub outputs: Vec<Tensor>,
    /// From submission to the start of the engine run.
    pub queue: Duration,
    /// The engine run it was part of.
    pub compute: Duration,
}

/// A request waiting for an instance.
struct Job {
    /// Model-shaped, batch first.
    inputs: Vec<Input>,
    samples: usize,
    submitted: Instant,
    deadline: Option<Instant>,
    reply: oneshot::Sender<Result<Completed>>,
    /// The caller's tracing span (named by its request id), so that what the engine thread
    /// logs about the request carries the id.
    span: tracing::Span,
}

/// The queue and instances of one model version. Dropping it closes the queue; the instances
/// finish what they hold and stop.
pub struct Scheduler {
    queue: SyncSender<Job>,
    model: String,
    max_queue_size: usize,
    load: Arc<Load>,
}

/// Requests waiting in the queue and requests in an engine run, right now.
#[derive(Debug, Default)]
struct Load {
    waiting: AtomicUsize,
    running: AtomicUsize,
}

/// How busy a scheduler is at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct QueueState {
    /// Requests waiting for an instance.
    pub waiting: usize,
    /// Requests in an engine run.
    pub running: usize,
    /// Requests that may wait before more are refused as overloaded.
    pub max_queue_size: usize,
}

impl Scheduler {
    /// Starts one thread per runnable (each an instance of the model) behind one queue, and
    /// returns once every instance has prepared its thread ([`Runnable::prepare_thread`]);
    /// fails with the first instance's error if one cannot.
    pub fn start(
        model: &str,
        policy: Policy,
        runnables: Vec<Box<dyn Runnable>>,
        stats: Arc<Stats>,
    ) -> std::result::Result<Self, String> {
        let (queue, receiver) = std::sync::mpsc::sync_channel(policy.max_queue_size);
        let load = Arc::new(Load::default());
        let intake = Arc::new(Mutex::new(Intake {
            queue: receiver,
            held: VecDeque::new(),
            load: load.clone(),
        }));
        let policy = Arc::new(policy);
        let (prepared, preparing) = std::sync::mpsc::channel();
        let instances = runnables.len();
        for (i, mut runnable) in runnables.into_iter().enumerate() {
            let (intake, policy, stats) = (intake.clone(), policy.clone(), stats.clone());
            let (load, prepared) = (load.clone(), prepared.clone());
            std::thread::Builder::new()
                .name(format!("aicp-{model}-{i}"))
                .spawn(move || {
                    let ready = runnable.prepare_thread();
                    let failed = ready.is_err();
                    let _ = prepared.send(ready);
                    // Serving does not need it, and the wait below must not either.
                    drop(prepared);
                    if !failed {
                        run_instance(&intake, runnable.as_mut(), &policy, &stats, &load);
                    }
                })
                .map_err(|e| format!("cannot start an inference thread: {e}"))?;
        }
        // Only the instances hold senders now: one that panics before it answers ends the
        // count short instead of leaving this wait hanging. Dropping the queue on failure stops
        // the instances that did prepare.
        drop(prepared);
        let mut answered = 0;
        for ready in preparing.iter().take(instances) {
            ready.map_err(|e| format!("an instance cannot prepare its thread: {}", e.message))?;
            answered += 1;
        }
        if answered < instances {
            return Err("an instance stopped while it prepared its thread".into());
        }
        Ok(Self {
            queue,
            model: model.to_string(),
            max_queue_size: policy.max_queue_size,
            load,
        })
    }

    /// Requests waiting and running now.
    pub fn state(&self) -> QueueState {
        QueueState {
            waiting: self.load.waiting.load(Ordering::Relaxed),
            running: self.load.running.load(Ordering::Relaxed),
            max_queue_size: self.max_queue_size,
        }
    }

    /// Queues one request (model-shaped inputs holding `samples` samples) and waits for its
    /// outputs without blocking the caller's thread. Fails at once when the queue is full, and
    /// at `deadline` if the request has not finished by then.
    pub async fn submit(
        &self,
        inputs: Vec<Input>,
        samples: usize,
        deadline: Option<Instant>,
    ) -> Result<Completed> {
        let submitted = Instant::now();
        if deadline.is_some_and(|d| d <= submitted) {
            return Err(deadline_passed(Duration::ZERO));
        }
        let (reply, answer) = oneshot::channel();
        let job = Job {
            inputs,
            samples,
            submitted,
            deadline,
            reply,
            span: tracing::Span::current(),
        };
        // Counted before it is sent, so that an instance taking it at once never counts below 0.
        self.load.waiting.fetch_add(1, Ordering::Relaxed);
        self.queue.try_send(job).map_err(|e| {
            self.load.waiting.fetch_sub(1, Ordering::Relaxed);
            match e {
            TrySendError::Full(_) => Error::new(
                ErrorKind::Overloaded,
                format!(
                    "the server is overloaded: model {:?} has {} requests waiting (its max_queue_size); retry later",
                    self.model, self.max_queue_size
                ),
            ),
            TrySendError::Disconnected(_) => Error::new(
                ErrorKind::Unavailable,
                format!("model {:?} is being unloaded", self.model),
            ),
            }
        })?;
        let answer = match deadline {
            None => answer.await,
            // Giving up drops `answer`: an instance that has not started the request skips it.
            Some(deadline) => tokio::time::timeout_at(deadline.into(), answer)
                .await
                .map_err(|_| deadline_passed(submitted.elapsed()))?,
        };
        answer.unwrap_or_else(|_| Err(Error::internal("the model's inference thread stopped")))
    }
}

/// The request's deadline (its timeout, counted from its arrival) passed after it had waited
/// `waited` in this model's queue (zero: it passed before the request reached the queue).
fn deadline_passed(waited: Duration) -> Error {
    Error::new(
        ErrorKind::DeadlineExceeded,
        format!(
            "the request's timeout expired before its inference finished (it waited {} us in \
             the model's queue)",
            waited.as_micros()
        ),
    )
}

/// The receiving end of the queue, taken by one instance at a time, and the requests the last
/// batches passed over (of another shape, or more samples than the batch had room for): they
/// lead the next batches, oldest first, and still count as waiting.
struct Intake {
    queue: Receiver<Job>,
    held: VecDeque<Job>,
    load: Arc<Load>,
}

/// The most requests one batch passes over in the queue while it looks for requests of its own
/// shape. Texts of a few lengths, or pictures of a few sizes, then share runs by shape instead
/// of each run stopping at the first request of another shape; the bound keeps the search
/// short when every request is shaped differently.
const MAX_PASSED_OVER: usize = 64;

impl Intake {
    /// The next batch to run, or `None` once the queue is closed and empty.
    fn gather(&mut self, policy: &Policy) -> Option<Vec<Job>> {
        let first = loop {
            let job = match self.held.pop_front() {
                Some(job) => job,
                None => self.wait(policy.idle_poll)?,
            };
            self.load.waiting.fetch_sub(1, Ordering::Relaxed);
            if let Some(job) = still_wanted(job) {
                break job;
            }
        };
        let mut samples = first.samples;
        let until = first.submitted + policy.max_queue_delay;
        let mut batch = vec![first];
        if !policy.merges() {
            return Some(batch);
        }
        let room = |samples: usize| {
            samples < policy.max_batch_size && !policy.preferred_batch_sizes.contains(&samples)
        };
        // The requests passed over before come first, in their order; those this batch passes
        // over again stay ahead of any it passes over in the queue.
        let mut passed_over = VecDeque::with_capacity(self.held.len());
        let mut full = false;
        for job in std::mem::take(&mut self.held) {
            full = full || !room(samples);
            if full || samples + job.samples > policy.max_batch_size || !stackable(&batch[0], &job)
            {
                passed_over.push_back(job);
                continue;
            }
            self.load.waiting.fetch_sub(1, Ordering::Relaxed);
            if let Some(job) = still_wanted(job) {
                samples += job.samples;
                batch.push(job);
            }
        }
        while room(samples) && passed_over.len() < MAX_PASSED_OVER {
            let job = match self.queue.try_recv() {
                Ok(job) => job,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    let Some(left) = until.checked_duration_since(Instant::now()) else {
                        break;
                    };
                    match self.queue.recv_timeout(left) {
                        Ok(job) => job,
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            if samples + job.samples > policy.max_batch_size {
                passed_over.push_back(job);
                break;
            }
            if !stackable(&batch[0], &job) {
                passed_over.push_back(job);
                continue;
            }
            self.load.waiting.fetch_sub(1, Ordering::Relaxed);
            let Some(job) = still_wanted(job) else {
                continue;
            };
            samples += job.samples;
            batch.push(job);
        }
        self.held = passed_over;
        Some(batch)
    }

    /// The next request: polled for up to `idle_poll` (yielding the core between polls), then
    /// waited for asleep. `None` once the queue is closed.
    fn wait(&self, idle_poll: Duration) -> Option<Job> {
        let poll_until = Instant::now() + idle_poll;
        loop {
            match self.queue.try_recv() {
                Ok(job) => return Some(job),
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) if Instant::now() < poll_until => std::thread::yield_now(),
                Err(TryRecvError::Empty) => return self.queue.recv().ok(),
            }
        }
    }
}

/// The job, unless its caller has gone (dropped silently) or its deadline has passed (answered
/// with the error). Either way it never reaches the engine.
fn still_wanted(job: Job) -> Option<Job> {
    if job.reply.is_closed() {
        return None;
    }
    if job.deadline.is_some_and(|d| d <= Instant::now()) {
        let _ = job
            .reply
            .send(Err(deadline_passed(job.submitted.elapsed())));
        return None;
    }
    Some(job)
}

/// Whether two requests can share an engine run: every input of the same kind (tensors or
/// pixels) and type, and of the same shape after the batch dimension (always true for models
/// whose sample shape is fixed).
fn stackable(a: &Job, b: &Job) -> bool {
    a.inputs.len() == b.inputs.len()
        && a.inputs.iter().zip(&b.inputs).all(|(x, y)| {
            std::mem::discriminant(x) == std::mem::discriminant(y)
                && x.datatype() == y.datatype()
                && x.shape().get(1..) == y.shape().get(1..)
        })
}

fn run_instance(
    intake: &Mutex<Intake>,
    runnable: &mut dyn Runnable,
    policy: &Policy,
    stats: &Stats,
    load: &Load,
) {
    loop {
        let batch = {
            // Gathering never panics while holding the lock; a poisoned lock is still usable.
            let mut intake = intake.lock().unwrap_or_else(|p| p.into_inner());
            match intake.gather(policy) {
                Some(batch) => batch,
                None => return,
            }
        };
        execute(runnable, stats, load, batch);
    }
}

/// Where a request's answer goes, and how many rows of the batch are its.
struct Reply {
    samples: usize,
    submitted: Instant,
    sender: oneshot::Sender<Result<Completed>>,
    span: tracing::Span,
}

/// Runs one batch and answers each of its requests. A panic in the engine becomes an internal
/// error for the requests of this batch only. The batch counts as running until the engine is
/// done, not until every answer is sent: a caller that has its answer never sees its own
/// request still running.
fn execute(runnable: &mut dyn Runnable, stats: &Stats, load: &Load, batch: Vec<Job>) {
    let requests = batch.len();
    load.running.fetch_add(requests, Ordering::Relaxed);
    let samples: usize = batch.iter().map(|job| job.samples).sum();
    let (inputs, replies) = assemble(batch, samples);
    let started = Instant::now();
    let outcome =
        catch_unwind(AssertUnwindSafe(|| runnable.run(inputs?))).unwrap_or_else(|panic| {
            Err(Error::internal(format!(
                "the engine panicked: {}",
                panic_message(&*panic)
            )))
        });
    let compute = started.elapsed();
    load.running.fetch_sub(requests, Ordering::Relaxed);
    let answers = outcome.and_then(|outputs| {
        stats.record_execution(samples, compute);
        split(outputs, &replies, samples)
    });
    match answers {
        Ok(answers) => {
            // Checked first: entering each request's span costs even when the line is off.
            let log_runs = tracing::enabled!(tracing::Level::DEBUG);
            for (reply, outputs) in replies.into_iter().zip(answers) {
                let queue = started - reply.submitted;
                if log_runs {
                    reply.span.in_scope(|| {
                        tracing::debug!(
                            batch = samples,
                            queue_us = queue.as_micros() as u64,
                            compute_us = compute.as_micros() as u64,
                            "engine run"
                        );
                    });
                }
                let _ = reply.sender.send(Ok(Completed {
                    outputs,
                    queue,
                    compute,
                }));
            }
        }
        Err(error) => {
            for reply in replies {
                reply.span.in_scope(|| {
                    tracing::warn!(batch = samples, "engine run failed: {}", error.message);
                });
                let _ = reply.sender.send(Err(error.clone()));
            }
        }
    }
}

/// The engine's inputs: a lone request's as they are (no copy), or the requests' stacked along
/// the batch dimension (the batch holds one kind only, see [`stackable`]).
fn assemble(batch: Vec<Job>, samples: usize) -> (Result<Vec<Input>>, Vec<Reply>) {
    let mut replies = Vec::with_capacity(batch.len());
    let mut parts = Vec::with_capacity(batch.len());
    for job in batch {
        replies.push(Reply {
            samples: job.samples,
            submitted: job.submitted,
            sender: job.reply,
            span: job.span,
        });
        parts.push(job.inputs);
    }
    if parts.len() == 1 {
        return (Ok(parts.pop().unwrap_or_default()), replies);
    }
    let inputs = (0..parts[0].len())
        .map(|i| {
            let column: Vec<&Input> = parts.iter().filter_map(|part| part.get(i)).collect();
            Input::stack(&column, samples)
        })
        .collect();
    (inputs, replies)
}

/// Each request's rows of every output.
fn split(outputs: Vec<Tensor>, replies: &[Reply], samples: usize) -> Result<Vec<Vec<Tensor>>> {
    if replies.len() == 1 {
        return Ok(vec![outputs]);
    }
    let mut answers: Vec<Vec<Tensor>> = replies.iter().map(|_| Vec::new()).collect();
    for output in outputs {
        if output.shape.first() != Some(&samples) {
            return Err(Error::internal(format!(
                "the model gave an output shaped {:?} for a batch of {samples}: its outputs do not \
                 follow the batch, so its requests cannot be batched (set dynamic = false in \
                 model.toml [batching])",
                output.shape
            )));
        }
        let mut start = 0;
        for (answer, reply) in answers.iter_mut().zip(replies) {
            let end = start + reply.samples;
            answer.push(output.rows(start, end));
            start = end;
        }
    }
    Ok(answers)
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{Receiver as Gate, Sender as Opener, channel};

    use super::*;

    /// An engine that doubles its float32 input (and gives any other back as it came), records the batch size of every run, and, when
    /// gated, says it started and waits for the test to open the gate before each run.
    struct Doubler {
        runs: Arc<Mutex<Vec<usize>>>,
        gate: Option<Turnstile>,
    }

    /// Says when a run starts, then lets it go on one message.
    struct Turnstile {
        started: Mutex<Opener<()>>,
        gate: Mutex<Gate<()>>,
    }

    impl Runnable for Doubler {
        fn run(&mut self, inputs: Vec<Input>) -> Result<Vec<Tensor>> {
            if let Some(turnstile) = &self.gate {
                turnstile.started.lock().unwrap().send(()).ok();
                turnstile.gate.lock().unwrap().recv().ok();
            }
            let input = &inputs.into_iter().next().unwrap().into_tensor();
            let Some(values) = input.as_f32() else {
                // Any other type comes back as it came.
                self.runs.lock().unwrap().push(input.shape[0]);
                return Ok(vec![input.clone()]);
            };
            if values.first() == Some(&-1.0) {
                panic!("asked to fail");
            }
            self.runs.lock().unwrap().push(input.shape[0]);
            let doubled: Vec<f32> = values.iter().map(|v| v * 2.0).collect();
            Ok(vec![Tensor::new(input.shape.clone(), doubled)?])
        }
    }

    fn policy(dynamic: bool, max_queue_size: usize) -> Policy {
        Policy {
            max_batch_size: 8,
            dynamic,
            max_queue_delay: Duration::ZERO,
            preferred_batch_sizes: Vec::new(),
            idle_poll: Duration::from_micros(100),
            instances: 1,
            max_queue_size,
        }
    }

    struct Gated {
        scheduler: Arc<Scheduler>,
        /// One message lets one run go.
        open: Opener<()>,
        /// One message per run that started.
        started: Gate<()>,
        runs: Arc<Mutex<Vec<usize>>>,
        stats: Arc<Stats>,
    }

    /// One gated instance, so requests pile up behind its first run.
    fn gated(policy: Policy) -> Gated {
        let runs = Arc::new(Mutex::new(Vec::new()));
        let (open, gate) = channel();
        let (starts, started) = channel();
        let engine = Doubler {
            runs: runs.clone(),
            gate: Some(Turnstile {
                started: Mutex::new(starts),
                gate: Mutex::new(gate),
            }),
        };
        let stats = Arc::new(Stats::default());
        let scheduler =
            Scheduler::start("test", policy, vec![Box::new(engine)], stats.clone()).unwrap();
        Gated {
            scheduler: Arc::new(scheduler),
            open,
            started,
            runs,
            stats,
        }
    }

    impl Gated {
        /// Waits (bounded) until the instance has started a run.
        fn wait_for_a_run(&self) {
            self.started
                .recv_timeout(Duration::from_secs(10))
                .expect("the instance never started a run");
        }
    }

    fn sample(value: f32, samples: usize) -> Vec<Input> {
        vec![Input::from(
            Tensor::new(vec![samples, 2], vec![value; samples * 2]).unwrap(),
        )]
    }

    /// `samples` samples of two pixels each, all `pixel`, mapped onto [0, 255 * 0.5].
    fn pixels(pixel: u8, samples: usize) -> Vec<Input> {
        vec![Input::Pixels(aicp_core::Pixels {
            shape: vec![samples, 2],
            data: vec![pixel; samples * 2],
            scale: aicp_core::PixelScale {
                offset: 0.0,
                step: 0.5,
            },
        })]
    }

    /// Submits `inputs` to `scheduler` and returns once the request is in the queue, so that
    /// requests submitted one after another wait in that order (spawned at once, they would
    /// race to the queue).
    async fn queued(
        scheduler: Arc<Scheduler>,
        inputs: Vec<Input>,
        samples: usize,
    ) -> tokio::task::JoinHandle<Result<Completed>> {
        let mut request = Box::pin(async move { scheduler.submit(inputs, samples, None).await });
        // The first poll runs `submit` until it waits for its answer: the request is queued.
        let first_poll = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(request.as_mut().poll(cx).is_pending())
        });
        assert!(first_poll.await, "the request finished before it was run");
        tokio::spawn(request)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pixels_batch_with_pixels_and_floats_with_floats() {
        let test = gated(policy(true, 64));
        let submit =
            |inputs: Vec<Input>, samples: usize| queued(test.scheduler.clone(), inputs, samples);
        let first = submit(sample(0.0, 1), 1).await;
        test.wait_for_a_run();
        // Waiting, in this order: pixels, pixels, floats, pixels. The three pixel requests
        // make one run, passing over the floats, which cannot join them and run next.
        let waiting = vec![
            (submit(pixels(2, 1), 1).await, 1.0 * 2.0),
            (submit(pixels(4, 2), 2).await, 2.0 * 2.0),
            (submit(sample(7.0, 1), 1).await, 7.0 * 2.0),
            (submit(pixels(6, 1), 1).await, 3.0 * 2.0),
        ];
        tokio::time::sleep(Duration::from_millis(50)).await;
        for _ in 0..3 {
            test.open.send(()).unwrap();
        }
        first.await.unwrap().unwrap();
        for (request, doubled) in waiting {
            let done = request.await.unwrap().unwrap();
            assert!(
                done.outputs[0]
                    .as_f32()
                    .unwrap()
                    .iter()
                    .all(|&v| v == doubled),
                "{done:?}"
            );
        }
        assert_eq!(test.runs.lock().unwrap().clone(), vec![1, 4, 1]);
    }

    /// A batch takes the requests of its shape from behind requests of other shapes, passing
    /// over at most MAX_PASSED_OVER of them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_passes_over_other_shapes_to_take_its_own_but_only_so_far() {
        let test = gated(policy(true, 256));
        let row = |width: usize| {
            vec![Input::from(
                Tensor::new(vec![1, width], vec![1.0; width]).unwrap(),
            )]
        };
        for others in [10, MAX_PASSED_OVER] {
            let first = queued(test.scheduler.clone(), sample(0.0, 1), 1).await;
            test.wait_for_a_run();
            test.runs.lock().unwrap().clear();
            // Waiting: a row two wide, `others` rows of other widths, a row two wide.
            let mut waiting = vec![queued(test.scheduler.clone(), row(2), 1).await];
            for width in 0..others {
                waiting.push(queued(test.scheduler.clone(), row(3 + width), 1).await);
            }
            waiting.push(queued(test.scheduler.clone(), row(2), 1).await);
            let runs = if others < MAX_PASSED_OVER {
                others + 1
            } else {
                others + 2
            };
            for _ in 0..=runs {
                test.open.send(()).unwrap();
            }
            first.await.unwrap().unwrap();
            for request in waiting {
                request.await.unwrap().unwrap();
            }
            let sizes = test.runs.lock().unwrap().clone();
            let joined = if others < MAX_PASSED_OVER { 2 } else { 1 };
            assert_eq!(
                (sizes.len(), sizes[1]),
                (runs + 1, joined),
                "{others}: {sizes:?}"
            );
        }
    }

    /// `rows` samples of three values of `datatype`, each `value` (as that type understands it).
    fn typed(datatype: aicp_core::DataType, value: u8, rows: usize) -> Tensor {
        let element = match datatype {
            aicp_core::DataType::Bool => (value % 2 == 1).to_string(),
            aicp_core::DataType::Bytes => format!("\"word {value}\""),
            _ => value.to_string(),
        };
        let row = format!("[{element}, {element}, {element}]");
        let json = format!("[{}]", vec![row; rows].join(", "));
        let (data, shape) = aicp_core::TensorData::from_json(datatype, &json).unwrap();
        Tensor::new(shape, data).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_of_every_datatype_stack_with_their_own_type_and_shape_only() {
        use aicp_core::DataType;
        let types = [
            DataType::Bool,
            DataType::U8,
            DataType::U16,
            DataType::U32,
            DataType::U64,
            DataType::I8,
            DataType::I16,
            DataType::I32,
            DataType::I64,
            DataType::F16,
            DataType::BF16,
            DataType::F64,
            DataType::Bytes,
        ];
        let test = gated(policy(true, 64));
        let first = queued(test.scheduler.clone(), sample(0.0, 1), 1).await;
        test.wait_for_a_run();
        // Waiting, in this order, for each type: one row of 1s, two rows of 2s; then a row of
        // float32 three wide, one four wide (the same type, another shape), and two three
        // wide. Each type's two requests make one run; the float32 rows three wide make one,
        // passing over the row four wide, which runs last: shapes never share a run.
        let mut waiting = Vec::new();
        for datatype in types {
            for (value, rows) in [(1, 1), (2, 2)] {
                let tensor = typed(datatype, value, rows);
                let request = queued(test.scheduler.clone(), vec![tensor.clone().into()], rows);
                waiting.push((request.await, tensor));
            }
        }
        for (shape, value) in [([1, 3], 1.0f32), ([1, 4], 2.0), ([2, 3], 3.0)] {
            let count = shape[0] * shape[1];
            let tensor = Tensor::new(shape.to_vec(), vec![value; count]).unwrap();
            let doubled = Tensor::new(shape.to_vec(), vec![value * 2.0; count]).unwrap();
            let request = queued(test.scheduler.clone(), vec![tensor.into()], shape[0]);
            waiting.push((request.await, doubled));
        }
        for _ in 0..types.len() + 3 {
            test.open.send(()).unwrap();
        }
        first.await.unwrap().unwrap();
        for (request, expected) in waiting {
            let done = request.await.unwrap().unwrap();
            assert_eq!(
                done.outputs,
                vec![expected.clone()],
                "{}",
                expected.datatype()
            );
        }
        let mut expected_runs = vec![1];
        expected_runs.extend([3; 13]);
        expected_runs.extend([3, 1]);
        assert_eq!(test.runs.lock().unwrap().clone(), expected_runs);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_waiting_requests_and_gives_each_its_own_rows() {
        let test = gated(policy(true, 64));
        let submit = |value: f32, samples: usize| {
            let scheduler = test.scheduler.clone();
            tokio::spawn(async move {
                scheduler
                    .submit(sample(value, samples), samples, None)
                    .await
            })
        };
        // The first request takes the instance; the next ones wait and are batched, 8 at most.
        let first = submit(0.0, 1);
        test.wait_for_a_run();
        let waiting: Vec<_> = (1..=10).map(|i| submit(i as f32, 1 + i % 2)).collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        for _ in 0..12 {
            test.open.send(()).unwrap();
        }
        assert_eq!(
            first.await.unwrap().unwrap().outputs[0].as_f32().unwrap(),
            vec![0.0; 2]
        );
        for (i, request) in waiting.into_iter().enumerate() {
            let value = (i + 1) as f32;
            let samples = 1 + (i + 1) % 2;
            let done = request.await.unwrap().unwrap();
            assert_eq!(done.outputs[0].shape, vec![samples, 2]);
            assert_eq!(
                done.outputs[0].as_f32().unwrap(),
                vec![value * 2.0; samples * 2]
            );
        }
        let runs = test.runs.lock().unwrap().clone();
        // 15 samples waited: at most 8 per run, so two runs after the first.
        assert_eq!(runs.iter().sum::<usize>(), 1 + 15, "{runs:?}");
        assert!(runs.iter().all(|&size| size <= 8), "{runs:?}");
        assert_eq!(runs.len(), 3, "{runs:?}");
        assert_eq!(test.stats.snapshot().execution_count, 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_dynamic_batching_each_request_runs_alone() {
        let test = gated(policy(false, 64));
        let requests: Vec<_> = (0..5)
            .map(|i| {
                let scheduler = test.scheduler.clone();
                tokio::spawn(async move { scheduler.submit(sample(i as f32, 1), 1, None).await })
            })
            .collect();
        for _ in 0..5 {
            test.open.send(()).unwrap();
        }
        for request in requests {
            request.await.unwrap().unwrap();
        }
        assert_eq!(test.runs.lock().unwrap().clone(), vec![1; 5]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_is_overloaded_and_expired_or_abandoned_requests_never_run() {
        let test = gated(policy(true, 2));
        let scheduler = &test.scheduler;
        let busy = {
            let scheduler = scheduler.clone();
            tokio::spawn(async move { scheduler.submit(sample(1.0, 1), 1, None).await })
        };
        // The instance holds the first request; the queue is empty.
        test.wait_for_a_run();
        // Two places in the queue: one request with a deadline, one whose caller gives up.
        let expiring = scheduler.submit(
            sample(2.0, 1),
            1,
            Some(Instant::now() + Duration::from_millis(30)),
        );
        let abandoned = tokio::time::timeout(
            Duration::from_millis(30),
            scheduler.submit(sample(3.0, 1), 1, None),
        );
        let keeper = {
            let scheduler = scheduler.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                // The queue is full now.
                scheduler.submit(sample(4.0, 1), 1, None).await
            })
        };
        let (expired, gave_up) = tokio::join!(expiring, abandoned);
        let err = expired.unwrap_err();
        assert_eq!(err.kind, ErrorKind::DeadlineExceeded, "{err}");
        assert!(
            gave_up.is_err(),
            "the abandoned request should still be waiting"
        );
        let err = keeper.await.unwrap().unwrap_err();
        assert_eq!(err.kind, ErrorKind::Overloaded, "{err}");
        assert!(err.message.contains("max_queue_size"), "{err}");
        // Release the instance: the two waiting requests are skipped, never run.
        test.open.send(()).unwrap();
        busy.await.unwrap().unwrap();
        // The instance skips the two dead requests after answering the first: wait (bounded)
        // until it has, or the queue may still be full when the next request comes.
        for _ in 0..1000 {
            if scheduler.state().waiting == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let fresh = {
            let scheduler = scheduler.clone();
            tokio::spawn(async move { scheduler.submit(sample(5.0, 1), 1, None).await })
        };
        test.open.send(()).unwrap();
        assert_eq!(
            fresh.await.unwrap().unwrap().outputs[0].as_f32().unwrap(),
            vec![10.0; 2]
        );
        assert_eq!(test.runs.lock().unwrap().clone(), vec![1, 1]);
        assert_eq!(test.stats.snapshot().execution_count, 2);
    }

    /// An engine whose instances cannot prepare their thread: by an error, or by a panic.
    struct Unprepared {
        panics: bool,
    }

    impl Runnable for Unprepared {
        fn run(&mut self, inputs: Vec<Input>) -> Result<Vec<Tensor>> {
            Ok(inputs.into_iter().map(Input::into_tensor).collect())
        }

        fn prepare_thread(&mut self) -> Result<()> {
            if self.panics {
                panic!("no device");
            }
            Err(Error::internal("no stream"))
        }
    }

    #[test]
    fn a_scheduler_whose_instances_cannot_prepare_does_not_start() {
        for panics in [false, true] {
            let runnables: Vec<Box<dyn Runnable>> = vec![
                Box::new(Doubler {
                    runs: Arc::default(),
                    gate: None,
                }),
                Box::new(Unprepared { panics }),
            ];
            let policy = Policy {
                instances: 2,
                ..policy(true, 8)
            };
            let started = Scheduler::start("test", policy, runnables, Arc::new(Stats::default()));
            let err = started
                .err()
                .expect("a scheduler missing an instance must not start");
            let expected = if panics { "stopped" } else { "no stream" };
            assert!(err.contains(expected), "{err}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_engine_panic_fails_its_batch_only() {
        let runs = Arc::new(Mutex::new(Vec::new()));
        let engine = Doubler {
            runs: runs.clone(),
            gate: None,
        };
        let scheduler = Scheduler::start(
            "test",
            policy(true, 8),
            vec![Box::new(engine)],
            Arc::new(Stats::default()),
        )
        .unwrap();
        let err = scheduler
            .submit(sample(-1.0, 1), 1, None)
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Internal);
        assert!(err.message.contains("asked to fail"), "{err}");
        let done = scheduler.submit(sample(1.0, 1), 1, None).await.unwrap();
        assert_eq!(done.outputs[0].as_f32().unwrap(), vec![2.0; 2]);
    }
}
