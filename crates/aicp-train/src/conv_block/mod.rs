//! The CNN's convolution blocks (convolution, bias, ReLU, 2x2 max pooling) as one fused
//! operation with a backward written for it.
//!
//! burn's CPU backend has no convolution backward of its own: its generic one runs the weight
//! gradient as another convolution and the input gradient as a transposed one, each laying the
//! data out again per call. The fused block lays the batch out once, keeps it for backward, and
//! turns forward and each gradient into one matrix product (see [`kernel`]).
//!
//! [`forward`] takes the fused path for what it covers (a valid, stride-1, ungrouped,
//! undilated convolution with a bias, on f32) and burn's own operations for anything else. The
//! parameters stay in burn's [`Conv2d`], so export and optimisers see no difference.

mod backend;
pub mod kernel;

use burn::backend::{DType, Dispatch};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2dConfig;
use burn::prelude::*;
use burn::tensor::activation::relu;

use backend::ConvBlockBackend;

/// `relu(conv(x))` pooled 2x2, fused when the convolution allows it.
pub fn forward(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    match conv.bias.as_ref() {
        Some(bias) if fuses(conv, &x) => fused(x, conv.weight.val(), bias.val()),
        _ => reference(conv, x),
    }
}

/// The same block through burn's own operations, one by one.
pub fn reference(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    MaxPool2dConfig::new([2, 2])
        .init()
        .forward(relu(conv.forward(x)))
}

/// The fused operation on f32 tensors: `x` `[batch, inputs, rows, cols]`, `weight` `[outputs,
/// inputs, kernel rows, kernel cols]`, `bias` `[outputs]`. Other shapes or types panic:
/// [`forward`] checks before it calls this.
pub fn fused(x: Tensor<4>, weight: Tensor<4>, bias: Tensor<1>) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as ConvBlockBackend>::conv_relu_pool(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
    ))
}

/// Whether the fused operation computes what `conv` does on `x`.
fn fuses(conv: &Conv2d, x: &Tensor<4>) -> bool {
    let [_, _, rows, cols] = x.dims();
    let [kernel_rows, kernel_cols] = conv.kernel_size;
    conv.stride == [1, 1]
        && conv.dilation == [1, 1]
        && conv.groups == 1
        && matches!(conv.padding, PaddingConfig2d::Valid)
        && x.dtype() == DType::F32
        && conv.weight.val().dtype() == DType::F32
        // Pooling leaves at least one value.
        && rows > kernel_rows
        && cols > kernel_cols
}

#[cfg(test)]
mod tests {
    use burn::module::Param;
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::Distribution;

    use super::*;

    /// Norm-relative agreement: the largest difference is at most `1e-4` of the largest value.
    fn assert_close<const D: usize>(what: &str, fused: Tensor<D>, reference: Tensor<D>) {
        assert_eq!(fused.dims(), reference.dims(), "{what}: shape");
        let fused = fused.into_data().try_to_vec::<f32>().unwrap();
        let reference = reference.into_data().try_to_vec::<f32>().unwrap();
        let scale = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = aicp_core::max_difference(&fused, &reference);
        assert!(scale > 0.0, "{what}: all zero");
        assert!(
            worst <= 1e-4 * scale,
            "{what}: off by {worst} at scale {scale}"
        );
    }

    /// The output and every gradient of the fused block against burn's own operations, for a
    /// loss that weighs each output differently.
    fn check(batch: usize, inputs: usize, side: [usize; 2], outputs: usize, kernel: usize) {
        let device = Device::flex().autodiff();
        device.seed((batch * 1000 + inputs * 100 + outputs) as u64);
        let mut conv = Conv2dConfig::new([inputs, outputs], [kernel, kernel]).init(&device);
        // A bias smaller than most outputs, so that ReLU leaves some of every case standing.
        conv.bias = Some(Param::from_tensor(Tensor::random(
            [outputs],
            Distribution::Uniform(-0.1, 0.1),
            &device,
        )));
        let x = Tensor::<4>::random(
            [batch, inputs, side[0], side[1]],
            Distribution::Uniform(-1.0, 1.0),
            &device,
        );
        let [_, _, rows, cols] = reference(&conv, x.clone()).dims();
        let probe = Tensor::<4>::random(
            [batch, outputs, rows, cols],
            Distribution::Uniform(-1.0, 1.0),
            &device,
        );
        let what = format!("batch {batch}, {inputs}->{outputs}, {side:?}, kernel {kernel}");
        let mut results = Vec::new();
        for path in [forward, reference] {
            let x = x.clone().detach().require_grad();
            let output = path(&conv, x.clone());
            let grads = (output.clone() * probe.clone()).sum().backward();
            let weight = conv.weight.val().grad(&grads).unwrap();
            let bias = conv.bias.as_ref().unwrap().val().grad(&grads).unwrap();
            results.push((output.inner(), x.grad(&grads).unwrap(), weight, bias));
        }
        let (reference, fused) = (results.pop().unwrap(), results.pop().unwrap());
        assert_close(&format!("{what}: output"), fused.0, reference.0);
        assert_close(&format!("{what}: input gradient"), fused.1, reference.1);
        assert_close(&format!("{what}: weight gradient"), fused.2, reference.2);
        assert_close(&format!("{what}: bias gradient"), fused.3, reference.3);
    }

    #[test]
    fn both_bundled_blocks_match_burn_in_output_and_gradients() {
        check(64, 1, [28, 28], 16, 5);
        check(64, 16, [12, 12], 32, 5);
    }

    #[test]
    fn odd_shapes_and_batches_match_burn_in_output_and_gradients() {
        check(1, 1, [28, 28], 16, 5);
        check(1, 3, [7, 9], 2, 3);
        check(3, 2, [11, 10], 5, 4);
        check(5, 4, [6, 6], 3, 1);
        check(7, 1, [5, 5], 1, 2);
    }

    #[test]
    fn random_shapes_match_burn_in_output_and_gradients() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(36);
        for _ in 0..12 {
            let kernel = rng.random_range(1..=5);
            let side = [(); 2].map(|_| kernel + rng.random_range(1..=12));
            check(
                rng.random_range(1..=9),
                rng.random_range(1..=4),
                side,
                rng.random_range(1..=6),
                kernel,
            );
        }
    }

    #[test]
    fn an_input_without_gradient_still_gives_the_weights_theirs() {
        let device = Device::flex().autodiff();
        device.seed(5);
        let conv = Conv2dConfig::new([1, 4], [3, 3]).init(&device);
        let x = Tensor::<4>::random([3, 1, 10, 10], Distribution::Default, &device);
        let mut weights = Vec::new();
        for path in [forward, reference] {
            let grads = path(&conv, x.clone()).sum().backward();
            assert!(x.grad(&grads).is_none());
            weights.push(conv.weight.val().grad(&grads).unwrap());
        }
        let reference = weights.pop().unwrap();
        assert_close("weight gradient", weights.pop().unwrap(), reference);
    }

    #[test]
    fn without_autodiff_the_block_matches_burn() {
        let device = Device::flex();
        device.seed(9);
        let conv = Conv2dConfig::new([2, 3], [3, 3]).init(&device);
        let x = Tensor::<4>::random([130, 2, 9, 9], Distribution::Default, &device);
        assert_close("output", forward(&conv, x.clone()), reference(&conv, x));
    }

    #[test]
    fn what_the_kernel_does_not_cover_goes_through_burn() {
        let device = Device::flex();
        let x = Tensor::<4>::zeros([1, 1, 8, 8], &device);
        let plain = Conv2dConfig::new([1, 2], [3, 3]);
        assert!(fuses(&plain.init(&device), &x));
        for conv in [
            plain.clone().with_stride([2, 2]),
            plain.clone().with_dilation([2, 2]),
            plain
                .clone()
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)),
            Conv2dConfig::new([1, 2], [9, 9]),
            Conv2dConfig::new([1, 2], [8, 8]),
        ] {
            assert!(!fuses(&conv.init(&device), &x), "{conv:?}");
        }
        device.seed(3);
        let strided = plain.with_stride([2, 2]).init(&device);
        let x = Tensor::<4>::random([4, 1, 16, 16], Distribution::Default, &device);
        assert_close(
            "strided",
            forward(&strided, x.clone()),
            reference(&strided, x),
        );
    }
}
