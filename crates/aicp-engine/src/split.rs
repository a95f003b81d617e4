//! Small batches on one engine, large ones on another: what a GPU engine does with the batches
//! its transfers and kernel launches make slower than the CPU.
//!
//! A GPU spends tens of microseconds on a batch however small it is, while a small model on
//! the CPU answers one sample in a few. Below some batch size the CPU wins; above it the GPU
//! does, by far. [`SplitByBatch`] runs each batch where it is fastest, and [`measure_min_batch`]
//! finds that size on this machine, for this model, when the model loads.

use std::time::{Duration, Instant};

use aicp_core::{Input, Result, Tensor};

use crate::Runnable;

/// The largest batch [`measure_min_batch`] tries: past it, a batch goes to the large engine
/// whatever was measured.
pub const LARGEST_MEASURED_BATCH: usize = 1024;

/// Runs on `small` the batches of fewer than `min_batch` samples, and every other on `large`.
pub struct SplitByBatch {
    pub small: Box<dyn Runnable>,
    pub large: Box<dyn Runnable>,
    pub min_batch: usize,
}

impl SplitByBatch {
    fn pick(&mut self, batch: usize) -> &mut dyn Runnable {
        if batch < self.min_batch {
            self.small.as_mut()
        } else {
            self.large.as_mut()
        }
    }
}

/// A batch's size: its first input's first dimension.
fn batch_of(inputs: &[Input]) -> usize {
    inputs
        .first()
        .and_then(|input| input.shape().first())
        .copied()
        .unwrap_or(1)
}

impl Runnable for SplitByBatch {
    fn run(&mut self, inputs: Vec<Input>) -> Result<Vec<Tensor>> {
        self.pick(batch_of(&inputs)).run(inputs)
    }

    fn prepare_thread(&mut self) -> Result<()> {
        self.small.prepare_thread()?;
        self.large.prepare_thread()
    }
}

/// The smallest batch, of 1, 2, 4 ... [`LARGEST_MEASURED_BATCH`], that `large` runs at least as
/// fast as `small` (each timed on the batch `inputs` makes), and the times at the batch before
/// it, where `small` still won. Batches from that size on are then run on `large`.
pub fn measure_min_batch(
    small: &mut dyn Runnable,
    large: &mut dyn Runnable,
    inputs: impl Fn(usize) -> Vec<Input>,
) -> Result<Crossover> {
    first_batch_where_large_wins(|batch| {
        let inputs = inputs(batch);
        let copy = || inputs.clone();
        Ok(Timings {
            small: median_time(copy, |inputs| small.run(inputs))?,
            large: median_time(copy, |inputs| large.run(inputs))?,
        })
    })
}

/// How long each engine took on one batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timings {
    pub small: Duration,
    pub large: Duration,
}

/// What [`measure_min_batch`] found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Crossover {
    /// The smallest batch to run on the large engine.
    pub min_batch: usize,
    /// The times at batch 1, where the two differ the most.
    pub at_one: Timings,
}

/// Past this, a batch is slow enough on the small engine that the large one is taken without
/// measuring further: it bounds the time a load spends measuring.
const SLOW_ENOUGH: Duration = Duration::from_millis(20);

/// The decision of [`measure_min_batch`], apart from the clock: `time(batch)` times both.
fn first_batch_where_large_wins(
    mut time: impl FnMut(usize) -> Result<Timings>,
) -> Result<Crossover> {
    let at_one = time(1)?;
    let mut batch = 1;
    let mut timings = at_one;
    while timings.small < timings.large && timings.small < SLOW_ENOUGH {
        if batch >= LARGEST_MEASURED_BATCH {
            return Ok(Crossover {
                min_batch: batch * 2,
                at_one,
            });
        }
        batch *= 2;
        timings = time(batch)?;
    }
    Ok(Crossover {
        min_batch: batch,
        at_one,
    })
}

/// The median of five timed runs of `run`, after one untimed; `inputs` makes each run's
/// inputs (the engines take them by value), outside the time.
fn median_time(
    inputs: impl Fn() -> Vec<Input>,
    mut run: impl FnMut(Vec<Input>) -> Result<Vec<Tensor>>,
) -> Result<Duration> {
    run(inputs())?;
    let mut times = (0..5)
        .map(|_| {
            let inputs = inputs();
            let started = Instant::now();
            run(inputs).map(|_| started.elapsed())
        })
        .collect::<Result<Vec<_>>>()?;
    times.sort();
    Ok(times[times.len() / 2])
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::tract::TractEngine;
    use crate::{Engine, LoadOptions};

    fn us(micros: u64) -> Duration {
        Duration::from_micros(micros)
    }

    /// Times like a small model's: the CPU grows with the batch, the GPU barely does.
    fn cpu_and_gpu(per_sample_us: u64, gpu_us: u64) -> impl FnMut(usize) -> Result<Timings> {
        move |batch| {
            Ok(Timings {
                small: us(per_sample_us * batch as u64),
                large: us(gpu_us + batch as u64 / 100),
            })
        }
    }

    #[test]
    fn the_crossover_is_the_first_batch_the_large_engine_wins() {
        let found = first_batch_where_large_wins(cpu_and_gpu(3, 100)).unwrap();
        // 3 us per sample: 96 us at 32, 192 us at 64 against the GPU's 100.
        assert_eq!(found.min_batch, 64);
        assert_eq!(
            found.at_one,
            Timings {
                small: us(3),
                large: us(100)
            }
        );
        // A large model: the GPU wins at once.
        assert_eq!(
            first_batch_where_large_wins(cpu_and_gpu(500, 100))
                .unwrap()
                .min_batch,
            1
        );
    }

    #[test]
    fn measuring_stops_at_the_largest_batch_or_a_slow_one() {
        let mut tried = Vec::new();
        let found = first_batch_where_large_wins(|batch| {
            tried.push(batch);
            Ok(Timings {
                small: us(1),
                large: us(2),
            })
        })
        .unwrap();
        assert_eq!(found.min_batch, 2 * LARGEST_MEASURED_BATCH);
        assert_eq!(tried.last(), Some(&LARGEST_MEASURED_BATCH));
        // The small engine is faster but already slow: no larger batch is tried.
        let mut tried = 0;
        let found = first_batch_where_large_wins(|_| {
            tried += 1;
            Ok(Timings {
                small: SLOW_ENOUGH,
                large: SLOW_ENOUGH * 2,
            })
        })
        .unwrap();
        assert_eq!((found.min_batch, tried), (1, 1));
    }

    /// A real model that counts the samples it ran, to see where each batch went.
    struct Counted {
        model: Box<dyn Runnable>,
        batches: Arc<Mutex<Vec<usize>>>,
        threads_prepared: Arc<AtomicUsize>,
    }

    impl Runnable for Counted {
        fn run(&mut self, inputs: Vec<Input>) -> Result<Vec<Tensor>> {
            self.batches.lock().unwrap().push(batch_of(&inputs));
            self.model.run(inputs)
        }

        fn prepare_thread(&mut self) -> Result<()> {
            self.threads_prepared.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }

    #[test]
    fn each_batch_runs_on_the_engine_its_size_picks() {
        let path = crate::bundled_model();
        let info = crate::onnx::inspect(&path).unwrap();
        let counted = || {
            let batches = Arc::new(Mutex::new(Vec::new()));
            let prepared = Arc::new(AtomicUsize::new(0));
            let model = TractEngine
                .load(&path, &info.signature, &LoadOptions::default())
                .unwrap();
            let counted = Counted {
                model,
                batches: batches.clone(),
                threads_prepared: prepared.clone(),
            };
            (Box::new(counted) as Box<dyn Runnable>, batches, prepared)
        };
        let (small, small_batches, small_prepared) = counted();
        let (large, large_batches, large_prepared) = counted();
        let mut split = SplitByBatch {
            small,
            large,
            min_batch: 8,
        };
        let digits = |batch: usize| aicp_core::Pixels {
            data: vec![128; batch * 784],
            shape: vec![batch, 1, 28, 28],
            scale: aicp_core::PixelScale::for_range([0.0, 1.0]),
        };
        for batch in [1, 7, 8, 64] {
            let outputs = split.run(vec![digits(batch).to_tensor().into()]).unwrap();
            assert_eq!(outputs[0].shape, [batch, 10]);
        }
        split.run(vec![digits(3).into()]).unwrap();
        split.run(vec![digits(9).into()]).unwrap();
        assert_eq!(*small_batches.lock().unwrap(), [1, 7, 3]);
        assert_eq!(*large_batches.lock().unwrap(), [8, 64, 9]);
        split.prepare_thread().unwrap();
        assert_eq!(small_prepared.load(Ordering::Relaxed), 1);
        assert_eq!(large_prepared.load(Ordering::Relaxed), 1);

        // Measured between two real engines, the answer is a batch size it tried.
        let found = measure_min_batch(split.small.as_mut(), split.large.as_mut(), |batch| {
            vec![digits(batch).to_tensor().into()]
        })
        .unwrap();
        assert!(found.min_batch.is_power_of_two(), "{found:?}");
        assert!(found.min_batch <= 2 * LARGEST_MEASURED_BATCH, "{found:?}");
    }
}
