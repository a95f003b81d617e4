//! Per model version counters: requests that succeeded and failed with their total durations,
//! time waiting for and spent in the engine, samples inferred and engine runs (their ratio is the
//! average batch size), and engine time per batch size. Counters are atomics and the per batch
//! size table takes one short uncontended lock, so recording costs a request next to nothing;
//! the protocols' statistics routes read a [`StatsSnapshot`].
//!
//! The same events also go to the `metrics` facade (the server exports them to Prometheus at
//! `/metrics`), labelled with the model and version, as the names in [`names`]: request
//! outcomes (failures by reason), samples and engine runs, and request, queue and engine
//! durations and batch sizes as histograms. Handles are registered once per model version, so
//! recording does not look labels up.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aicp_core::ErrorKind;
use metrics::{Counter, Histogram, Label};
use serde::Serialize;

/// The exported metrics' names.
pub mod names {
    /// Requests that succeeded.
    pub const REQUEST_SUCCESS: &str = "aicp_request_success_total";
    /// Requests that failed, labelled with a `reason`: see [`super::failure_reason`].
    pub const REQUEST_FAILURE: &str = "aicp_request_failure_total";
    /// Samples inferred (a request of a batch of 8 counts 8).
    pub const INFERENCE_COUNT: &str = "aicp_inference_count_total";
    /// Engine runs; inferences per execution is the average batch size.
    pub const EXECUTION_COUNT: &str = "aicp_execution_count_total";
    /// A request's time in the server's runtime, from validation to its answer.
    pub const REQUEST_DURATION: &str = "aicp_request_duration_seconds";
    /// A request's wait for an engine instance.
    pub const QUEUE_DURATION: &str = "aicp_queue_duration_seconds";
    /// One engine run.
    pub const COMPUTE_DURATION: &str = "aicp_compute_duration_seconds";
    /// Samples per engine run.
    pub const BATCH_SIZE: &str = "aicp_batch_size";
}

/// The `reason` label of a failed request.
pub fn failure_reason(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::MalformedBody
        | ErrorKind::InvalidArgument
        | ErrorKind::BodyTooLarge
        | ErrorKind::UnsupportedMediaType => "invalid",
        ErrorKind::NotFound => "not_found",
        ErrorKind::Overloaded => "overloaded",
        ErrorKind::DeadlineExceeded | ErrorKind::RequestTimeout => "timeout",
        ErrorKind::Unavailable => "unavailable",
        ErrorKind::Unauthorized | ErrorKind::Forbidden => "unauthorized",
        ErrorKind::Internal => "internal",
    }
}

/// Counts a failed request against the metrics of `model` and `version` (empty when the request
/// named no model that exists: labels never take a client's arbitrary text).
pub fn record_failure_metric(model: &str, version: &str, kind: ErrorKind) {
    metrics::counter!(
        names::REQUEST_FAILURE,
        "model" => model.to_string(),
        "version" => version.to_string(),
        "reason" => failure_reason(kind),
    )
    .increment(1);
}

/// One model version's handles in the metrics recorder.
#[derive(Debug)]
struct Exported {
    model: String,
    version: String,
    success: Counter,
    inferences: Counter,
    executions: Counter,
    request: Histogram,
    queue: Histogram,
    compute: Histogram,
    batch_size: Histogram,
}

impl Exported {
    fn new(model: &str, version: u64) -> Self {
        let labels = vec![
            Label::new("model", model.to_string()),
            Label::new("version", version.to_string()),
        ];
        Self {
            model: model.to_string(),
            version: version.to_string(),
            success: metrics::counter!(names::REQUEST_SUCCESS, labels.clone()),
            inferences: metrics::counter!(names::INFERENCE_COUNT, labels.clone()),
            executions: metrics::counter!(names::EXECUTION_COUNT, labels.clone()),
            request: metrics::histogram!(names::REQUEST_DURATION, labels.clone()),
            queue: metrics::histogram!(names::QUEUE_DURATION, labels.clone()),
            compute: metrics::histogram!(names::COMPUTE_DURATION, labels.clone()),
            batch_size: metrics::histogram!(names::BATCH_SIZE, labels),
        }
    }
}

impl Default for Exported {
    /// Handles that record nothing, for statistics not tied to a served model.
    fn default() -> Self {
        Self {
            model: String::new(),
            version: String::new(),
            success: Counter::noop(),
            inferences: Counter::noop(),
            executions: Counter::noop(),
            request: Histogram::noop(),
            queue: Histogram::noop(),
            compute: Histogram::noop(),
            batch_size: Histogram::noop(),
        }
    }
}

/// A count of events and their total duration.
#[derive(Debug, Default)]
struct DurationCounter {
    count: AtomicU64,
    ns: AtomicU64,
}

impl DurationCounter {
    fn add(&self, count: u64, elapsed: Duration) {
        self.count.fetch_add(count, Relaxed);
        self.ns.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Relaxed,
        );
    }

    fn read(&self) -> CountAndDuration {
        CountAndDuration {
            count: self.count.load(Relaxed),
            ns: self.ns.load(Relaxed),
        }
    }
}

/// The counters of one model version.
#[derive(Debug, Default)]
pub struct Stats {
    success: DurationCounter,
    fail: DurationCounter,
    queue: DurationCounter,
    compute: DurationCounter,
    inference_count: AtomicU64,
    execution_count: AtomicU64,
    last_inference_ms: AtomicU64,
    /// Engine runs and time by batch size.
    batches: Mutex<BTreeMap<usize, CountAndDuration>>,
    exported: Exported,
}

/// Timings of one request that reached the engine.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// From the request reaching the scheduler to its engine run starting.
    pub queue: Duration,
    /// In the engine.
    pub compute: Duration,
}

impl Stats {
    /// The counters of model `model` version `version`, exported to the metrics recorder.
    pub fn new(model: &str, version: u64) -> Self {
        Self {
            exported: Exported::new(model, version),
            ..Self::default()
        }
    }

    /// A request that succeeded: `samples` samples, its total time and its share of queue
    /// and engine time. Its engine run is counted by [`Stats::record_execution`].
    pub fn record_success(&self, samples: usize, total: Duration, timings: Timings) {
        self.success.add(1, total);
        self.queue.add(1, timings.queue);
        self.compute.add(1, timings.compute);
        self.inference_count.fetch_add(samples as u64, Relaxed);
        self.last_inference_ms.store(now_ms(), Relaxed);
        let exported = &self.exported;
        exported.success.increment(1);
        exported.inferences.increment(samples as u64);
        exported.request.record(total.as_secs_f64());
        exported.queue.record(timings.queue.as_secs_f64());
    }

    /// One engine run over a batch of `batch` samples, whatever number of requests it served.
    pub fn record_execution(&self, batch: usize, compute: Duration) {
        self.execution_count.fetch_add(1, Relaxed);
        self.exported.executions.increment(1);
        self.exported.compute.record(compute.as_secs_f64());
        self.exported.batch_size.record(batch as f64);
        let mut batches = self.batches.lock().unwrap_or_else(|p| p.into_inner());
        let entry = batches.entry(batch).or_default();
        entry.count += 1;
        entry.ns = entry.ns.saturating_add(nanos(compute));
    }

    /// A request for this model that failed, for a reason of `kind`.
    pub fn record_failure(&self, total: Duration, kind: ErrorKind) {
        self.fail.add(1, total);
        self.last_inference_ms.store(now_ms(), Relaxed);
        self.exported.request.record(total.as_secs_f64());
        record_failure_metric(&self.exported.model, &self.exported.version, kind);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            success: self.success.read(),
            fail: self.fail.read(),
            queue: self.queue.read(),
            compute: self.compute.read(),
            inference_count: self.inference_count.load(Relaxed),
            execution_count: self.execution_count.load(Relaxed),
            last_inference_ms: self.last_inference_ms.load(Relaxed),
            batches: self
                .batches
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(size, d)| (*size, *d))
                .collect(),
        }
    }
}

fn nanos(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How many times something happened, and how long it took in all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CountAndDuration {
    /// How many times.
    pub count: u64,
    /// Total nanoseconds.
    pub ns: u64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    pub success: CountAndDuration,
    pub fail: CountAndDuration,
    pub queue: CountAndDuration,
    pub compute: CountAndDuration,
    /// Samples inferred.
    pub inference_count: u64,
    /// Engine runs.
    pub execution_count: u64,
    /// Milliseconds since the Unix epoch of the last request; 0 before the first.
    pub last_inference_ms: u64,
    /// (batch size, engine runs and time), by batch size.
    pub batches: Vec<(usize, CountAndDuration)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_samples_runs_and_durations() {
        let stats = Stats::default();
        let timings = Timings {
            queue: Duration::from_nanos(10),
            compute: Duration::from_nanos(100),
        };
        stats.record_success(8, Duration::from_nanos(150), timings);
        stats.record_execution(8, timings.compute);
        // Two requests of one sample each, batched into one run.
        stats.record_success(1, Duration::from_nanos(75), timings);
        stats.record_success(1, Duration::from_nanos(75), timings);
        stats.record_execution(2, timings.compute);
        stats.record_failure(Duration::from_nanos(5), ErrorKind::Internal);
        let s = stats.snapshot();
        assert_eq!(s.success, CountAndDuration { count: 3, ns: 300 });
        assert_eq!(s.fail, CountAndDuration { count: 1, ns: 5 });
        assert_eq!(s.compute, CountAndDuration { count: 3, ns: 300 });
        assert_eq!((s.inference_count, s.execution_count), (10, 2));
        assert!(s.last_inference_ms > 0);
        let run = CountAndDuration { count: 1, ns: 100 };
        assert_eq!(s.batches, vec![(2, run), (8, run)]);
    }
}
