//! The fused block's arithmetic on plain slices, free of burn: a valid, stride-1 convolution
//! with bias, ReLU and 2x2 max pooling forward, and every gradient backward.
//!
//! Forward lays the batch out once as columns (im2col, `[patch, positions]`), runs one matrix
//! product for the whole batch, and pools straight from the product while adding the bias and
//! applying ReLU. It remembers which of the four pixels won each window in one byte, and keeps
//! the columns for backward, which then needs:
//! - the bias gradient: the pooled gradient's sums per channel;
//! - the weight gradient: the pooled gradient scattered to the winning pixels, then one product
//!   with the kept columns;
//! - the input gradient, only when asked: one product with the weights, then col2im.
//!
//! Layouts and loops are chosen by measurement (`cargo bench --workspace --bench conv_block`):
//! the scattered gradient is position-major so that the weight gradient's product reads every
//! operand column-major, pooling and scattering use selects rather than branches on which
//! pixel won, and the megabyte buffers are reused between steps rather than allocated (and
//! zeroed by the system) each time.
//!
//! The batch is split into one group of samples per thread, each group with its own columns and
//! products: on two threads this trains the bundled CNN 1.23x faster than one product split by
//! gemm. With one thread there is one group, and the result depends only on the inputs.

use std::ops::Range;

use rayon::prelude::*;

/// The shape of one fused block: `inputs` channels of `rows x cols` images to `outputs`
/// channels through a `kernel` window, then 2x2 pooling that drops odd remainders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub batch: usize,
    pub inputs: usize,
    pub rows: usize,
    pub cols: usize,
    pub outputs: usize,
    pub kernel: [usize; 2],
}

/// Marks a window whose maximum did not survive ReLU: no gradient flows through it.
const CLIPPED: u8 = 4;

/// Most samples one group lays out as columns when nothing is kept for backward, to bound the
/// memory of evaluating large batches.
const INFERENCE_GROUP: usize = 64;

impl Block {
    /// Rows and columns of the pooled output.
    pub fn pooled(&self) -> [usize; 2] {
        [
            (self.rows + 1).saturating_sub(self.kernel[0]) / 2,
            (self.cols + 1).saturating_sub(self.kernel[1]) / 2,
        ]
    }

    /// The pooled output's shape, `[batch, outputs, rows, cols]`.
    pub fn output_shape(&self) -> [usize; 4] {
        let [rows, cols] = self.pooled();
        [self.batch, self.outputs, rows, cols]
    }

    /// Values in one input image, all channels.
    fn image_len(&self) -> usize {
        self.inputs * self.rows * self.cols
    }

    /// Values of one input patch: a row of the weight matrix.
    fn patch(&self) -> usize {
        self.inputs * self.kernel[0] * self.kernel[1]
    }

    /// The convolution outputs pooling reads, per sample: the even part of the output.
    fn used(&self) -> [usize; 2] {
        self.pooled().map(|side| side * 2)
    }

    /// Convolution outputs pooling reads, per sample.
    fn positions(&self) -> usize {
        let [rows, cols] = self.used();
        rows * cols
    }

    /// Values of the column matrix of `samples` samples.
    fn columns_len(&self, samples: usize) -> usize {
        self.patch() * samples * self.positions()
    }

    fn pooled_len(&self) -> usize {
        let [rows, cols] = self.pooled();
        self.outputs * rows * cols
    }

    /// Splits the batch into the groups of samples that run as one product each.
    fn groups(&self, threads: usize, keep: bool) -> Vec<Range<usize>> {
        let count = if keep {
            threads
        } else {
            self.batch.div_ceil(INFERENCE_GROUP).max(threads)
        }
        .clamp(1, self.batch.max(1));
        (0..count)
            .map(|g| self.batch * g / count..self.batch * (g + 1) / count)
            .collect()
    }
}

/// What backward needs from forward.
pub struct Saved {
    /// Each group's columns, `[patch, group samples * positions]`, at the start of a buffer
    /// that may be longer.
    columns: Vec<Vec<f32>>,
    /// Per pooled output, which pixel of its window won (0..4), or [`CLIPPED`].
    winners: Vec<u8>,
    groups: Vec<Range<usize>>,
}

impl Drop for Saved {
    fn drop(&mut self) {
        self.columns.drain(..).for_each(give_back);
    }
}

impl std::fmt::Debug for Saved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Saved")
            .field("winners", &self.winners.len())
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

/// The gradients of one block's inputs.
pub struct Gradients {
    /// `[batch, inputs, rows, cols]`, when asked for.
    pub input: Option<Vec<f32>>,
    /// `[outputs, inputs, kernel rows, kernel cols]`.
    pub weight: Vec<f32>,
    /// `[outputs]`.
    pub bias: Vec<f32>,
}

/// The pooled output `[batch, outputs, pooled rows, pooled cols]` of `x` `[batch, inputs, rows,
/// cols]`, `weight` `[outputs, inputs, kernel rows, kernel cols]` and `bias` `[outputs]`, and
/// what backward needs when `keep` is set.
pub fn forward(
    block: Block,
    x: &[f32],
    weight: &[f32],
    bias: &[f32],
    keep: bool,
) -> (Vec<f32>, Option<Saved>) {
    assert_eq!(x.len(), block.batch * block.image_len(), "input size");
    assert_eq!(weight.len(), block.outputs * block.patch(), "weight size");
    assert_eq!(bias.len(), block.outputs, "bias size");
    let groups = block.groups(rayon::current_num_threads(), keep);
    let per_sample = block.pooled_len();
    let mut output = vec![0.0; block.batch * per_sample];
    let mut winners = vec![0u8; output.len()];
    let columns = groups
        .par_iter()
        .zip(split_by(&mut output, &groups, per_sample))
        .zip(split_by(&mut winners, &groups, per_sample))
        .map(|((samples, output), winners)| {
            let x = &x[samples.start * block.image_len()..samples.end * block.image_len()];
            let pooled = Pooled { output, winners };
            let len = block.columns_len(samples.len());
            if keep {
                let mut columns = take_buffer(len);
                let group = &mut columns[..len];
                forward_group(block, samples.len(), x, (weight, bias), group, pooled);
                columns
            } else {
                scratch(len, |columns| {
                    forward_group(block, samples.len(), x, (weight, bias), columns, pooled)
                });
                Vec::new()
            }
        })
        .collect();
    let saved = keep.then_some(Saved {
        columns,
        winners,
        groups,
    });
    (output, saved)
}

/// Where one group's pooled outputs and winners go.
struct Pooled<'a> {
    output: &'a mut [f32],
    winners: &'a mut [u8],
}

/// Forward for `samples` consecutive samples: their columns into `columns`, one product,
/// pooling.
fn forward_group(
    block: Block,
    samples: usize,
    x: &[f32],
    (weight, bias): (&[f32], &[f32]),
    columns: &mut [f32],
    pooled: Pooled,
) {
    let positions = samples * block.positions();
    im2col(block, samples, x, columns);
    // The convolution before bias: [outputs, positions].
    scratch(block.outputs * positions, |convolved| {
        matmul(
            Product {
                m: block.outputs,
                n: positions,
                k: block.patch(),
            },
            (convolved, positions, 1),
            (weight, block.patch(), 1),
            (columns, positions, 1),
        );
        pool(block, samples, convolved, bias, pooled);
    });
}

/// Lays `samples` images out as columns: row `(channel, ky, kx)` of `columns` holds, for every
/// sample and used output pixel, the input pixel that kernel tap reads. Every value of
/// `columns` is overwritten.
fn im2col(block: Block, samples: usize, x: &[f32], columns: &mut [f32]) {
    let [used_rows, used_cols] = block.used();
    let positions = samples * block.positions();
    for_each_tap(block, |row, channel, ky, kx| {
        let destination = &mut columns[row * positions..][..positions];
        for sample in 0..samples {
            let image = &x[sample * block.image_len() + channel * block.rows * block.cols..];
            let destination = &mut destination[sample * block.positions()..];
            for (y, to) in destination
                .chunks_exact_mut(used_cols)
                .take(used_rows)
                .enumerate()
            {
                to.copy_from_slice(&image[(y + ky) * block.cols + kx..][..used_cols]);
            }
        }
    });
}

/// Buffers of earlier calls, reused: the blocks run every training step with the same sizes,
/// and fresh megabytes each time cost as much as filling them (the system zeroes every new
/// page). At most [`KEPT_BUFFERS`] wait here.
static BUFFERS: std::sync::Mutex<Vec<Vec<f32>>> = std::sync::Mutex::new(Vec::new());
const KEPT_BUFFERS: usize = 16;

/// A buffer of at least `len` values from [`BUFFERS`], or a new one. It may hold a previous
/// call's values: the caller writes before it reads.
fn take_buffer(len: usize) -> Vec<f32> {
    let mut buffers = BUFFERS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // The largest, so that a buffer rarely has to grow.
    let largest = (0..buffers.len()).max_by_key(|&i| buffers[i].len());
    let mut buffer = largest.map(|i| buffers.swap_remove(i)).unwrap_or_default();
    drop(buffers);
    // Only ever grown, never shrunk: growing fills the new part.
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    buffer
}

fn give_back(buffer: Vec<f32>) {
    let mut buffers = BUFFERS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if buffers.len() < KEPT_BUFFERS {
        buffers.push(buffer);
    }
}

/// Runs `f` on `len` values of a buffer from [`take_buffer`], then gives it back.
fn scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buffer = take_buffer(len);
    let result = f(&mut buffer[..len]);
    give_back(buffer);
    result
}

/// Adds columns back onto images: the transpose of [`im2col`].
fn col2im(block: Block, samples: usize, columns: &[f32], x: &mut [f32]) {
    let [used_rows, used_cols] = block.used();
    let positions = samples * block.positions();
    for_each_tap(block, |row, channel, ky, kx| {
        let source = &columns[row * positions..][..positions];
        for sample in 0..samples {
            let image = &mut x[sample * block.image_len() + channel * block.rows * block.cols..];
            for y in 0..used_rows {
                let to = &mut image[(y + ky) * block.cols + kx..][..used_cols];
                let at = (sample * used_rows + y) * used_cols;
                for (to, from) in to.iter_mut().zip(&source[at..at + used_cols]) {
                    *to += from;
                }
            }
        }
    });
}

/// Calls `tap(row, channel, ky, kx)` for each row of the column matrix, in order.
fn for_each_tap(block: Block, mut tap: impl FnMut(usize, usize, usize, usize)) {
    let [kernel_rows, kernel_cols] = block.kernel;
    for channel in 0..block.inputs {
        for ky in 0..kernel_rows {
            for kx in 0..kernel_cols {
                tap(
                    (channel * kernel_rows + ky) * kernel_cols + kx,
                    channel,
                    ky,
                    kx,
                );
            }
        }
    }
}

/// Offsets of a window's four pixels in one used output plane `cols` wide.
fn window(cols: usize) -> [usize; 4] {
    [0, 1, cols, cols + 1]
}

/// Pools `convolved` `[outputs, samples * positions]` into `output` `[samples, outputs,
/// pooled]`: the largest of each window plus the bias, through ReLU, and which pixel won.
fn pool(block: Block, samples: usize, convolved: &[f32], bias: &[f32], pooled: Pooled) {
    let Pooled { output, winners } = pooled;
    let [pooled_rows, pooled_cols] = block.pooled();
    let used_cols = block.used()[1];
    let positions = samples * block.positions();
    let mut rows = output
        .chunks_exact_mut(pooled_cols)
        .zip(winners.chunks_exact_mut(pooled_cols));
    for sample in 0..samples {
        for (channel, &bias) in bias.iter().enumerate() {
            let plane =
                &convolved[channel * positions + sample * block.positions()..][..block.positions()];
            for (pair, (output, winners)) in plane
                .chunks_exact(2 * used_cols)
                .zip(rows.by_ref().take(pooled_rows))
            {
                let (top, bottom) = pair.split_at(used_cols);
                let windows = top.chunks_exact(2).zip(bottom.chunks_exact(2));
                for ((output, winner), (top, bottom)) in
                    output.iter_mut().zip(winners.iter_mut()).zip(windows)
                {
                    // Selects, not branches: which pixel wins is data, and unpredictable.
                    let (mut best, mut value) = (0, top[0]);
                    for (i, candidate) in [(1, top[1]), (2, bottom[0]), (3, bottom[1])] {
                        let larger = candidate > value;
                        best = if larger { i } else { best };
                        value = if larger { candidate } else { value };
                    }
                    // ReLU after the max is ReLU before it: both are monotone.
                    let value = value + bias;
                    let alive = value > 0.0;
                    *output = if alive { value } else { 0.0 };
                    *winner = if alive { best } else { CLIPPED };
                }
            }
        }
    }
}

/// The gradients of the block's inputs given `grad` `[batch, outputs, pooled rows, pooled
/// cols]`, the gradient of its output; the input's only when `input` is set.
pub fn backward(
    block: Block,
    saved: &Saved,
    grad: &[f32],
    weight: &[f32],
    input: bool,
) -> Gradients {
    let per_sample = block.pooled_len();
    assert_eq!(grad.len(), block.batch * per_sample, "gradient size");
    let mut input_grad = input.then(|| vec![0.0; block.batch * block.image_len()]);
    let input_parts = match input_grad.as_mut() {
        Some(input_grad) => split_by(input_grad, &saved.groups, block.image_len())
            .into_iter()
            .map(Some)
            .collect(),
        None => saved.groups.iter().map(|_| None).collect::<Vec<_>>(),
    };
    // Each group's weight and bias gradients, summed in group order below.
    let partial: Vec<(Vec<f32>, Vec<f32>)> = saved
        .groups
        .par_iter()
        .zip(&saved.columns)
        .zip(input_parts)
        .map(|((samples, columns), input_part)| {
            let pooled = samples.start * per_sample..samples.end * per_sample;
            backward_group(
                block,
                samples.len(),
                &grad[pooled.clone()],
                &saved.winners[pooled],
                &columns[..block.columns_len(samples.len())],
                weight,
                input_part,
            )
        })
        .collect();
    let mut parts = partial.into_iter();
    let (mut transposed, mut bias_grad) = parts.next().unwrap_or_default();
    for (w, b) in parts {
        add_into(&mut transposed, &w);
        add_into(&mut bias_grad, &b);
    }
    // [patch, outputs] to the weight's own [outputs, patch].
    let patch = block.patch();
    let weight_grad = (0..block.outputs * patch)
        .map(|i| transposed[(i % patch) * block.outputs + i / patch])
        .collect();
    Gradients {
        input: input_grad,
        weight: weight_grad,
        bias: bias_grad,
    }
}

/// Backward for one group of samples: its weight gradient transposed (`[patch, outputs]`) and
/// its bias gradient, and its input gradient into `input` when given.
fn backward_group(
    block: Block,
    samples: usize,
    grad: &[f32],
    winners: &[u8],
    columns: &[f32],
    weight: &[f32],
    input: Option<&mut [f32]>,
) -> (Vec<f32>, Vec<f32>) {
    let positions = samples * block.positions();
    let outputs = block.outputs;
    let patch = block.patch();
    scratch(positions * outputs, |scattered| {
        let bias_grad = scatter(block, samples, grad, winners, scattered);
        // The weight gradient [outputs, patch] = S [outputs, positions] x C^T [positions,
        // patch], S the scattered gradient and C the columns, written column-major ([patch,
        // outputs] in memory). With every operand column-major the product takes a fifth of
        // the time it takes with a row-major result (0.97 ms against 5.6 ms for the bundled
        // CNN's second block at batch 64).
        let mut weight_grad = vec![0.0; patch * outputs];
        matmul(
            Product {
                m: outputs,
                n: patch,
                k: positions,
            },
            (&mut weight_grad, 1, outputs),
            (scattered, 1, outputs),
            (columns, 1, positions),
        );
        if let Some(input) = input {
            // The columns' gradient [patch, positions] = W^T [patch, outputs] x S [outputs,
            // positions], then added back onto the images.
            scratch(patch * positions, |column_grad| {
                matmul(
                    Product {
                        m: patch,
                        n: positions,
                        k: outputs,
                    },
                    (column_grad, positions, 1),
                    (weight, 1, patch),
                    (scattered, 1, outputs),
                );
                col2im(block, samples, column_grad, input);
            });
        }
        (weight_grad, bias_grad)
    })
}

/// Spreads `grad`, the gradient of `samples` pooled outputs, back to the convolution's outputs
/// before pooling and ReLU, position-major (`[positions, outputs]`: the layout the products read
/// fastest), and returns the bias gradient. Every window is written whole, so `scattered` need
/// not be zeroed first.
fn scatter(
    block: Block,
    samples: usize,
    grad: &[f32],
    winners: &[u8],
    scattered: &mut [f32],
) -> Vec<f32> {
    let outputs = block.outputs;
    let [pooled_rows, pooled_cols] = block.pooled();
    let per_sample = block.pooled_len();
    let plane = pooled_rows * pooled_cols;
    let used_cols = block.used()[1];
    let offsets = window(used_cols);
    let mut bias_grad = vec![0.0; outputs];
    // One sample's gradient and winners position-major, [pooled, outputs], so that the loop
    // below runs along channels on both sides.
    let mut grad_by_position = vec![0.0; per_sample];
    let mut winners_by_position = vec![0u8; per_sample];
    for sample in 0..samples {
        let grad = &grad[sample * per_sample..][..per_sample];
        let winners = &winners[sample * per_sample..][..per_sample];
        for (channel, bias_grad) in bias_grad.iter_mut().enumerate() {
            let range = channel * plane..(channel + 1) * plane;
            for (pooled, (&grad, &winner)) in
                grad[range.clone()].iter().zip(&winners[range]).enumerate()
            {
                grad_by_position[pooled * outputs + channel] = grad;
                winners_by_position[pooled * outputs + channel] = winner;
                *bias_grad += if winner == CLIPPED { 0.0 } else { grad };
            }
        }
        let first = sample * block.positions();
        for py in 0..pooled_rows {
            for px in 0..pooled_cols {
                let corner = first + 2 * py * used_cols + 2 * px;
                let pooled = (py * pooled_cols + px) * outputs;
                let grad = &grad_by_position[pooled..][..outputs];
                let winners = &winners_by_position[pooled..][..outputs];
                for (i, offset) in (0u8..).zip(offsets) {
                    let pixel = &mut scattered[(corner + offset) * outputs..][..outputs];
                    for ((value, &grad), &winner) in pixel.iter_mut().zip(grad).zip(winners) {
                        // A select, not a branch: which pixel won is data, and unpredictable.
                        *value = if winner == i { grad } else { 0.0 };
                    }
                }
            }
        }
    }
    bias_grad
}

fn add_into(sum: &mut [f32], part: &[f32]) {
    for (s, p) in sum.iter_mut().zip(part) {
        *s += p;
    }
}

/// Splits `values` into one slice per group of samples, `per_sample` values each.
fn split_by<'a, T>(
    mut values: &'a mut [T],
    groups: &[Range<usize>],
    per_sample: usize,
) -> Vec<&'a mut [T]> {
    groups
        .iter()
        .map(|samples| {
            let (part, rest) = std::mem::take(&mut values).split_at_mut(samples.len() * per_sample);
            values = rest;
            part
        })
        .collect()
}

/// The sizes of `dst [m, n] = lhs [m, k] x rhs [k, n]`.
struct Product {
    m: usize,
    n: usize,
    k: usize,
}

/// One single-threaded matrix product. Each operand is given as (values, row stride, column
/// stride), so transposes cost nothing.
fn matmul(
    size: Product,
    (dst, dst_rs, dst_cs): (&mut [f32], usize, usize),
    (lhs, lhs_rs, lhs_cs): (&[f32], usize, usize),
    (rhs, rhs_rs, rhs_cs): (&[f32], usize, usize),
) {
    let Product { m, n, k } = size;
    if m == 0 || n == 0 {
        return;
    }
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| {
        (rows.max(1) - 1) * rs + (cols.max(1) - 1) * cs
    };
    // The bounds gemm relies on: every element it addresses lies inside its slice.
    assert!(
        last(m, n, dst_rs, 1) < dst.len(),
        "product destination size"
    );
    if k > 0 {
        assert!(last(m, k, lhs_rs, lhs_cs) < lhs.len(), "product left size");
        assert!(last(k, n, rhs_rs, rhs_cs) < rhs.len(), "product right size");
    }
    // SAFETY: the asserts above keep every address gemm computes from these sizes and strides
    // inside the three slices; `dst` is borrowed mutably, so nothing else aliases it.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs as isize,
            dst_rs as isize,
            // Overwrite: `dst` may hold a previous call's values.
            false,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A direct, obviously right convolution, ReLU and pooling.
    fn naive(block: Block, x: &[f32], weight: &[f32], bias: &[f32]) -> Vec<f32> {
        let [pooled_rows, pooled_cols] = block.pooled();
        let [kernel_rows, kernel_cols] = block.kernel;
        let conv = |n: usize, o: usize, y: usize, xx: usize| {
            let mut sum = bias[o];
            for c in 0..block.inputs {
                for ky in 0..kernel_rows {
                    for kx in 0..kernel_cols {
                        sum += weight
                            [((o * block.inputs + c) * kernel_rows + ky) * kernel_cols + kx]
                            * x[((n * block.inputs + c) * block.rows + y + ky) * block.cols
                                + xx
                                + kx];
                    }
                }
            }
            sum.max(0.0)
        };
        let mut out = Vec::new();
        for n in 0..block.batch {
            for o in 0..block.outputs {
                for py in 0..pooled_rows {
                    for px in 0..pooled_cols {
                        let mut best = f32::NEG_INFINITY;
                        for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                            best = best.max(conv(n, o, 2 * py + dy, 2 * px + dx));
                        }
                        out.push(best);
                    }
                }
            }
        }
        out
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        // A small linear congruential stream: deterministic, no dependency.
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    #[test]
    fn forward_matches_a_direct_convolution_on_odd_shapes() {
        for (batch, inputs, rows, cols, outputs, kernel) in [
            (1, 1, 28, 28, 16, [5, 5]),
            (3, 2, 9, 7, 3, [3, 2]),
            (5, 3, 6, 6, 4, [1, 1]),
            (2, 1, 5, 5, 1, [4, 4]),
        ] {
            let block = Block {
                batch,
                inputs,
                rows,
                cols,
                outputs,
                kernel,
            };
            let x = values(batch * block.image_len(), 1);
            let weight = values(outputs * block.patch(), 2);
            let bias = values(outputs, 3);
            let expected = naive(block, &x, &weight, &bias);
            for keep in [false, true] {
                let (output, saved) = forward(block, &x, &weight, &bias, keep);
                assert_eq!(saved.is_some(), keep);
                assert_eq!(output.len(), expected.len());
                let worst = aicp_core::max_difference(&output, &expected);
                assert!(worst < 1e-5, "{block:?}: {worst}");
            }
        }
    }

    #[test]
    fn a_batch_larger_than_a_group_runs_in_several_groups() {
        let block = Block {
            batch: INFERENCE_GROUP * 2 + 3,
            inputs: 1,
            rows: 6,
            cols: 6,
            outputs: 2,
            kernel: [3, 3],
        };
        assert_eq!(block.groups(1, false).len(), 3);
        assert_eq!(block.groups(1, true).len(), 1);
        assert_eq!(block.groups(2, true), vec![0..65, 65..131]);
        let x = values(block.batch * block.image_len(), 4);
        let weight = values(2 * block.patch(), 5);
        let bias = values(2, 6);
        let (output, _) = forward(block, &x, &weight, &bias, false);
        let worst = aicp_core::max_difference(&output, &naive(block, &x, &weight, &bias));
        assert!(worst < 1e-5, "{worst}");
    }

    #[test]
    fn a_window_that_relu_clips_passes_no_gradient() {
        let block = Block {
            batch: 1,
            inputs: 1,
            rows: 2,
            cols: 2,
            outputs: 1,
            kernel: [1, 1],
        };
        // Weight 1, bias -10: every window's maximum is negative after the bias.
        let (output, saved) = forward(block, &[1.0, 2.0, 3.0, 4.0], &[1.0], &[-10.0], true);
        assert_eq!(output, vec![0.0]);
        let grads = backward(block, &saved.unwrap(), &[1.0], &[1.0], true);
        assert_eq!(grads.bias, vec![0.0]);
        assert_eq!(grads.weight, vec![0.0]);
        assert_eq!(grads.input, Some(vec![0.0; 4]));
        // Bias 0: the largest pixel wins and takes the whole gradient.
        let (output, saved) = forward(block, &[1.0, 2.0, 4.0, 3.0], &[2.0], &[0.0], true);
        assert_eq!(output, vec![8.0]);
        let grads = backward(block, &saved.unwrap(), &[1.5], &[2.0], true);
        assert_eq!(grads.bias, vec![1.5]);
        assert_eq!(grads.weight, vec![1.5 * 4.0]);
        assert_eq!(grads.input, Some(vec![0.0, 0.0, 3.0, 0.0]));
    }
}
