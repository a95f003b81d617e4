//! The training loop: seeded shuffling, mini-batch Adam on cross-entropy, per-epoch validation
//! that keeps the best model so far, optional early stopping, and a clean stop on request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::Serialize;

use crate::augment::Augmentation;
use crate::dataset::Samples;
use crate::model::{Arch, ImageShape, Network, Shape};

/// The hyperparameters of one training run.
#[derive(Debug, Clone, Serialize)]
pub struct TrainOptions {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    #[serde(flatten)]
    pub shape: Shape,
    /// Redraw each training image through a random transform each time it is used.
    pub augment: Option<Augmentation>,
    /// The fraction of the training data held out to choose the best epoch.
    pub validation_split: f64,
    /// Stop when validation accuracy has not improved for this many epochs.
    pub patience: Option<usize>,
    pub threads: usize,
    pub seed: u64,
}

impl Default for TrainOptions {
    /// The seed project's recipe: 784-128-64-10, Adam 1e-3, batch 64, 5 epochs.
    fn default() -> Self {
        Self {
            epochs: 5,
            batch_size: 64,
            learning_rate: 1e-3,
            shape: Shape::default_for(Arch::Mlp),
            augment: None,
            validation_split: 0.1,
            patience: None,
            threads: 1,
            seed: 42,
        }
    }
}

/// What one epoch achieved.
#[derive(Debug, Clone, Serialize)]
pub struct EpochStats {
    pub epoch: usize,
    pub train_loss: f64,
    pub validation_accuracy: f64,
    pub seconds: f64,
    pub samples_per_second: f64,
}

/// The outcome of [`train`].
#[derive(Debug)]
pub struct Trained {
    /// The model of the best epoch on the validation split (without autodiff).
    pub model: Network,
    pub best_epoch: usize,
    pub best_validation_accuracy: f64,
    pub history: Vec<EpochStats>,
    pub train_samples: usize,
    pub validation_samples: usize,
    /// Wall time of the training loop, validation included.
    pub train_seconds: f64,
    pub stopped_early: bool,
    /// Set when the stop flag ended training before its last epoch.
    pub interrupted: bool,
}

/// A dataset's samples normalised for the network: pixels scaled to [0, 1].
pub struct Inputs<'a> {
    pub samples: &'a Samples,
    pub image: ImageShape,
}

impl Inputs<'_> {
    pub fn features(&self) -> usize {
        self.image.iter().product()
    }

    /// The samples at `indices` as flat rows and their labels; each image redrawn through
    /// `augment` when given.
    fn batch(
        &self,
        indices: &[usize],
        mut augment: Option<(&Augmentation, &mut StdRng)>,
        device: &Device,
    ) -> (Tensor<2>, Tensor<1, Int>) {
        let features = self.features();
        let [_, rows, cols] = self.image;
        let mut x = Vec::with_capacity(indices.len() * features);
        let mut y = Vec::with_capacity(indices.len());
        for &i in indices {
            let pixels = &self.samples.pixels[i * features..][..features];
            match augment.as_mut() {
                // Each channel plane gets its own draw; MNIST-style images have one.
                Some((how, rng)) => pixels
                    .chunks(rows * cols)
                    .for_each(|plane| how.distort(plane, rows, cols, rng, &mut x)),
                None => x.extend(pixels.iter().map(|&p| f32::from(p) / 255.0)),
            }
            y.push(i64::from(self.samples.labels[i]));
        }
        (
            Tensor::from_data(TensorData::new(x, [indices.len(), features]), device),
            Tensor::from_data(TensorData::new(y, [indices.len()]), device),
        )
    }
}

/// Rows of logits for every sample, in order, computed in batches on `device`.
pub fn logits(model: &Network, inputs: &Inputs, device: &Device) -> Vec<f32> {
    const BATCH: usize = 1024;
    let all: Vec<usize> = (0..inputs.samples.len()).collect();
    let mut out = Vec::new();
    for chunk in all.chunks(BATCH) {
        let (x, _) = inputs.batch(chunk, None, device);
        let data = model.forward(x).into_data().convert::<f32>();
        out.extend_from_slice(data.as_slice::<f32>().unwrap_or_default());
    }
    out
}

/// The index of the largest value in each row of `classes` values.
pub fn argmax_rows(logits: &[f32], classes: usize) -> Vec<usize> {
    logits
        .chunks(classes)
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                    if v > best.1 { (i, v) } else { best }
                })
                .0
        })
        .collect()
}

/// The fraction of samples whose largest logit is their label.
pub fn accuracy(model: &Network, inputs: &Inputs, classes: usize, device: &Device) -> f64 {
    if inputs.samples.is_empty() {
        return 0.0;
    }
    let predicted = argmax_rows(&logits(model, inputs, device), classes);
    let correct = predicted
        .iter()
        .zip(&inputs.samples.labels)
        .filter(|(p, l)| **p == usize::from(**l))
        .count();
    correct as f64 / inputs.samples.len() as f64
}

/// Mixed into the seed of the validation split.
const VALIDATION_SALT: u64 = 0x9e37_79b9_7f4a_7c15;

/// Splits `samples` into training and validation parts with a seeded shuffle.
pub fn split_validation(
    samples: &Samples,
    fraction: f64,
    seed: u64,
    features: usize,
) -> (Samples, Samples) {
    let mut order: Vec<usize> = (0..samples.len()).collect();
    // A different stream from the epoch shuffles, which start from `seed` itself.
    order.shuffle(&mut StdRng::seed_from_u64(seed ^ VALIDATION_SALT));
    let validation = ((samples.len() as f64) * fraction).round() as usize;
    let (val, train) = order.split_at(validation.min(samples.len()));
    (
        samples.select(train, features),
        samples.select(val, features),
    )
}

/// Trains a network on `train`, choosing the best epoch on `validation`. Training stops early,
/// keeping the best model so far, as soon as `stop` is set.
pub fn train(
    train: &Inputs,
    validation: &Inputs,
    classes: usize,
    options: &TrainOptions,
    stop: &AtomicBool,
    show_progress: bool,
) -> anyhow::Result<Trained> {
    anyhow::ensure!(!train.samples.is_empty(), "no training samples");
    anyhow::ensure!(options.batch_size > 0, "batch size must be at least 1");
    anyhow::ensure!(
        train.image == validation.image,
        "training and validation images differ in shape"
    );
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(options.threads.max(1))
        .start_handler(|_| crate::denormals::flush_to_zero())
        .build()?;
    // Flex runs its kernels on the current rayon pool, so this bounds every thread it uses.
    pool.install(|| train_in_pool(train, validation, classes, options, stop, show_progress))
}

fn train_in_pool(
    train: &Inputs,
    validation: &Inputs,
    classes: usize,
    options: &TrainOptions,
    stop: &AtomicBool,
    show_progress: bool,
) -> anyhow::Result<Trained> {
    let device = Device::flex();
    device.seed(options.seed);
    let autodiff = device.clone().autodiff();
    let mut model = Network::new(&options.shape, train.image, classes, &autodiff)?;
    // PyTorch's epsilon (burn's default is 1e-5): the seed recipe is PyTorch's Adam.
    let mut optimizer = AdamConfig::new().with_epsilon(1e-8).init();
    let loss_fn = CrossEntropyLossConfig::new().init(&autodiff);
    let mut rng = StdRng::seed_from_u64(options.seed);
    let mut order: Vec<usize> = (0..train.samples.len()).collect();
    let batches = order.len().div_ceil(options.batch_size);

    let started = Instant::now();
    let mut best = (model.valid(), 0usize, f64::NEG_INFINITY);
    let mut history = Vec::new();
    let (mut stopped_early, mut interrupted) = (false, false);
    for epoch in 1..=options.epochs {
        let epoch_started = Instant::now();
        let bar = epoch_bar(epoch, options.epochs, batches, show_progress);
        order.shuffle(&mut rng);
        let (mut loss_sum, mut seen) = (0.0f64, 0usize);
        for (step, chunk) in order.chunks(options.batch_size).enumerate() {
            if stop.load(Ordering::Relaxed) {
                interrupted = true;
                break;
            }
            let augment = options.augment.as_ref().map(|how| (how, &mut rng));
            let (x, y) = train.batch(chunk, augment, &autodiff);
            let loss = loss_fn.forward(model.forward(x), y);
            loss_sum += f64::from(loss.clone().into_scalar::<f32>()) * chunk.len() as f64;
            seen += chunk.len();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optimizer.step(options.learning_rate, model, grads);
            if step % 16 == 0 {
                let rate = seen as f64 / epoch_started.elapsed().as_secs_f64();
                bar.set_message(format!(
                    "loss {:.4}  {:.0} samples/s",
                    loss_sum / seen as f64,
                    rate
                ));
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        if seen == 0 {
            break;
        }
        let current = model.valid();
        let validation_accuracy = accuracy(&current, validation, classes, &device);
        let seconds = epoch_started.elapsed().as_secs_f64();
        let stats = EpochStats {
            epoch,
            train_loss: loss_sum / seen as f64,
            validation_accuracy,
            seconds,
            samples_per_second: seen as f64 / seconds,
        };
        if show_progress {
            eprintln!(
                "epoch {epoch}/{}: train loss {:.4}, validation accuracy {:.4}, {:.2} s ({:.0} samples/s){}",
                options.epochs,
                stats.train_loss,
                stats.validation_accuracy,
                stats.seconds,
                stats.samples_per_second,
                if interrupted { " (interrupted)" } else { "" }
            );
        }
        history.push(stats);
        // An empty validation split cannot choose: the latest epoch is the best one.
        if validation_accuracy > best.2 || validation.samples.is_empty() {
            best = (current, epoch, validation_accuracy);
        } else if options.patience.is_some_and(|p| epoch - best.1 >= p) {
            stopped_early = true;
        }
        if interrupted || stopped_early {
            break;
        }
    }
    let (model, best_epoch, best_validation_accuracy) = best;
    Ok(Trained {
        model,
        best_epoch,
        best_validation_accuracy,
        history,
        train_samples: train.samples.len(),
        validation_samples: validation.samples.len(),
        train_seconds: started.elapsed().as_secs_f64(),
        stopped_early,
        interrupted,
    })
}

fn epoch_bar(epoch: usize, epochs: usize, batches: usize, visible: bool) -> ProgressBar {
    let target = if visible {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let style =
        ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} batches  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    ProgressBar::with_draw_target(Some(batches as u64), target)
        .with_style(style)
        .with_prefix(format!("{epoch}/{epochs}"))
}
