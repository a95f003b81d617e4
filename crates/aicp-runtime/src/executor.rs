//! Runs inference on dedicated OS threads, never on the async runtime's threads, behind a
//! bounded queue: when it is full a request fails fast as overloaded instead of waiting without
//! bound. A panic inside a job becomes an internal error for that request only.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use aicp_core::{Error, ErrorKind, Result};
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// A fixed pool of worker threads fed by one bounded queue.
pub struct Executor {
    queue: SyncSender<Job>,
    capacity: usize,
}

impl Executor {
    /// Starts `threads` workers behind a queue of `capacity` waiting jobs.
    pub fn new(threads: usize, capacity: usize) -> Self {
        let (queue, jobs) = sync_channel::<Job>(capacity);
        let jobs = Arc::new(Mutex::new(jobs));
        for i in 0..threads.max(1) {
            let jobs = jobs.clone();
            std::thread::Builder::new()
                .name(format!("aicp-infer-{i}"))
                .spawn(move || worker(&jobs))
                .unwrap_or_else(|e| panic!("cannot start inference thread: {e}"));
        }
        Self { queue, capacity }
    }

    /// Runs `job` on a worker and waits for its result without blocking the caller's thread.
    pub async fn run<T, F>(&self, job: F) -> Result<T>
    where
        F: FnOnce() -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, result) = oneshot::channel();
        let wrapped: Job = Box::new(move || {
            let outcome = catch_unwind(AssertUnwindSafe(job)).unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                Err(Error::internal(format!("the engine panicked: {what}")))
            });
            // The caller may have gone; then nobody needs the result.
            let _ = reply.send(outcome);
        });
        self.queue.try_send(wrapped).map_err(|e| match e {
            TrySendError::Full(_) => Error::new(
                ErrorKind::Overloaded,
                format!(
                    "the server is overloaded: the inference queue is full ({} waiting); retry later",
                    self.capacity
                ),
            ),
            TrySendError::Disconnected(_) => {
                Error::new(ErrorKind::Unavailable, "the server is shutting down")
            }
        })?;
        result
            .await
            .unwrap_or_else(|_| Err(Error::internal("the inference worker stopped")))
    }
}

fn worker(jobs: &Mutex<Receiver<Job>>) {
    loop {
        // Holding the lock only while taking a job lets the other workers take the next ones.
        let job = match jobs.lock() {
            Ok(receiver) => receiver.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_and_turns_panics_into_internal_errors() {
        let executor = Executor::new(2, 8);
        assert_eq!(executor.run(|| Ok(21 * 2)).await.unwrap(), 42);
        let err = executor.run::<(), _>(|| panic!("boom")).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Internal);
        assert!(err.message.contains("boom"), "{err}");
        // The worker that panicked is still serving.
        for _ in 0..4 {
            assert_eq!(executor.run(|| Ok(1)).await.unwrap(), 1);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_is_overloaded() {
        let executor = Arc::new(Executor::new(1, 1));
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (started, has_started) = std::sync::mpsc::channel::<()>();
        let blocking = executor.clone();
        let blocker = tokio::spawn(async move {
            blocking
                .run(move || {
                    started.send(()).ok();
                    wait.recv().ok();
                    Ok(())
                })
                .await
        });
        has_started
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the blocking job never started");
        // The only worker is busy: the first job takes the one queue slot, the second is refused.
        let mut outcomes = Vec::new();
        for _ in 0..2 {
            let attempt = tokio::time::timeout(
                std::time::Duration::from_millis(20),
                executor.run(|| Ok(())),
            )
            .await;
            outcomes.push(attempt);
        }
        assert!(
            outcomes[0].is_err(),
            "the first job should wait in the queue"
        );
        let err = match &outcomes[1] {
            Ok(Err(e)) => e.clone(),
            other => panic!("expected overloaded, got {other:?}"),
        };
        assert_eq!(err.kind, ErrorKind::Overloaded);
        assert!(err.message.contains("queue is full (1 waiting)"), "{err}");
        release.send(()).unwrap();
        blocker.await.unwrap().unwrap();
    }
}
