//! Per model version counters: requests that succeeded and failed with their total durations,
//! time waiting for and spent in the engine, samples inferred and engine runs (their ratio is the
//! average batch size), and engine time per batch size. Counters are atomics and the per batch
//! size table takes one short uncontended lock, so recording costs a request next to nothing;
//! the protocols' statistics routes and the metrics read a [`StatsSnapshot`].

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

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
    /// A request that succeeded: `samples` samples, its total time and its share of queue
    /// and engine time. Its engine run is counted by [`Stats::record_execution`].
    pub fn record_success(&self, samples: usize, total: Duration, timings: Timings) {
        self.success.add(1, total);
        self.queue.add(1, timings.queue);
        self.compute.add(1, timings.compute);
        self.inference_count.fetch_add(samples as u64, Relaxed);
        self.last_inference_ms.store(now_ms(), Relaxed);
    }

    /// One engine run over a batch of `batch` samples, whatever number of requests it served.
    pub fn record_execution(&self, batch: usize, compute: Duration) {
        self.execution_count.fetch_add(1, Relaxed);
        let mut batches = self.batches.lock().unwrap_or_else(|p| p.into_inner());
        let entry = batches.entry(batch).or_default();
        entry.count += 1;
        entry.ns = entry.ns.saturating_add(nanos(compute));
    }

    /// A request for this model that failed, whatever the reason.
    pub fn record_failure(&self, total: Duration) {
        self.fail.add(1, total);
        self.last_inference_ms.store(now_ms(), Relaxed);
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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CountAndDuration {
    pub count: u64,
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
        stats.record_failure(Duration::from_nanos(5));
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
