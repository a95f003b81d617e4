//! The fused convolution block (`aicp_train::conv_block`) against burn's own operations doing
//! the same work (convolution, ReLU, max pooling and their generic backward), for the bundled
//! CNN's two blocks at its batch of 64: forward alone, and forward with every gradient.
//!
//!   cargo bench --workspace --bench conv_block

use aicp_train::conv_block;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::prelude::*;
use burn::tensor::Distribution;
use criterion::{Criterion, criterion_group, criterion_main};

// The allocator of the aicp binary, which trains with these blocks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Path = fn(&Conv2d, Tensor<4>) -> Tensor<4>;

fn blocks(c: &mut Criterion) {
    // One thread, as `aicp train` runs by default.
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global()
        .unwrap();
    {
        for (name, inputs, side, outputs) in [("conv1", 1, 28, 16), ("conv2", 16, 12, 32)] {
            let device = Device::flex().autodiff();
            device.seed(1);
            let conv = Conv2dConfig::new([inputs, outputs], [5, 5]).init(&device);
            let x = Tensor::<4>::random([64, inputs, side, side], Distribution::Default, &device);
            let paths: [(&str, Path); 2] = [
                ("fused", conv_block::forward),
                ("burn", conv_block::reference),
            ];
            let plain = conv.valid();
            let mut group = c.benchmark_group(format!("{name} batch 64"));
            for (path_name, path) in paths {
                group.bench_function(format!("{path_name} forward"), |b| {
                    b.iter(|| path(&plain, x.clone().inner()).into_data())
                });
                group.bench_function(format!("{path_name} forward and backward"), |b| {
                    b.iter(|| {
                        // The second block's input needs its gradient; the first's does not.
                        let x = if inputs > 1 {
                            x.clone().require_grad()
                        } else {
                            x.clone()
                        };
                        let grads = path(&conv, x).sum().backward();
                        conv.weight.val().grad(&grads)
                    })
                });
            }
            group.finish();
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = blocks
}
criterion_main!(benches);
