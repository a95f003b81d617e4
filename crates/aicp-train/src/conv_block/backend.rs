//! The fused block as a burn operation: a backend extension trait, its Flex implementation
//! (the kernel), and its autodiff implementation, whose backward is the kernel's own rather
//! than burn's generic convolution gradients.

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, TensorMetadata, backend_extension};
use burn::tensor::TensorData;

use super::kernel::{self, Block, Saved};

/// Convolution (valid, stride 1) with bias, ReLU and 2x2 max pooling as one operation.
#[backend_extension(Flex, Autodiff)]
pub trait ConvBlockBackend: Backend {
    /// `x` `[batch, inputs, rows, cols]`, `weight` `[outputs, inputs, kernel rows, kernel
    /// cols]`, `bias` `[outputs]`: the pooled `[batch, outputs, rows', cols']`.
    fn conv_relu_pool(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

impl ConvBlockBackend for Flex {
    fn conv_relu_pool(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> FlexTensor {
        let block = block_of(&x, &weight);
        let (output, _) =
            kernel::forward(block, &values(&x), &values(&weight), &values(&bias), false);
        tensor(output, block.output_shape())
    }
}

/// The block's shape from its input's and weight's.
fn block_of(x: &FlexTensor, weight: &FlexTensor) -> Block {
    let [batch, inputs, rows, cols] = dims(x);
    let [outputs, weight_inputs, kernel_rows, kernel_cols] = dims(weight);
    assert_eq!(inputs, weight_inputs, "the weight's input channels");
    Block {
        batch,
        inputs,
        rows,
        cols,
        outputs,
        kernel: [kernel_rows, kernel_cols],
    }
}

fn dims(tensor: &FlexTensor) -> [usize; 4] {
    let shape = tensor.shape();
    assert_eq!(shape.num_dims(), 4, "a fused block takes 4-d tensors");
    [shape[0], shape[1], shape[2], shape[3]]
}

/// The tensor's values in row-major order, borrowed when its layout already is that.
fn values(tensor: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match tensor.as_slice::<f32>() {
        Some(values) => values.into(),
        None => tensor.to_contiguous().storage::<f32>().to_vec().into(),
    }
}

fn tensor(values: Vec<f32>, shape: impl Into<burn::tensor::Shape>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape.into()))
}

/// The backward step of [`ConvBlockBackend::conv_relu_pool`] on autodiff over Flex.
#[derive(Debug)]
struct ConvBlockBackward;

/// What the backward step keeps from forward: the columns and winners, and the weights.
#[derive(Debug, Clone)]
struct State {
    block: Block,
    saved: Arc<Saved>,
    weight: FlexTensor,
}

impl Backward<Flex, 3> for ConvBlockBackward {
    type State = State;

    fn backward(self, ops: Ops<State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_node, weight_node, bias_node] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let State {
            block,
            saved,
            weight,
        } = ops.state;
        let computed = kernel::backward(
            block,
            &saved,
            &values(&grad),
            &values(&weight),
            x_node.is_some(),
        );
        if let (Some(node), Some(input)) = (x_node, computed.input) {
            grads.register::<Flex>(
                node.id,
                tensor(input, [block.batch, block.inputs, block.rows, block.cols]),
            );
        }
        if let Some(node) = weight_node {
            grads.register::<Flex>(node.id, tensor(computed.weight, weight.shape()));
        }
        if let Some(node) = bias_node {
            grads.register::<Flex>(node.id, tensor(computed.bias, [block.outputs]));
        }
    }
}

impl<C: CheckpointStrategy> ConvBlockBackend for Autodiff<Flex, C> {
    fn conv_relu_pool(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let prepared = ConvBlockBackward
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful();
        let (x, weight, bias) = (
            x.into_primitive(),
            weight.into_primitive(),
            bias.into_primitive(),
        );
        match prepared {
            OpsKind::Tracked(prep) => {
                let block = block_of(&x, &weight);
                let (output, saved) =
                    kernel::forward(block, &values(&x), &values(&weight), &values(&bias), true);
                let state = State {
                    block,
                    // `forward` keeps what backward needs when asked to.
                    saved: Arc::new(saved.expect("forward keeps its columns when asked")),
                    weight,
                };
                prep.finish(state, tensor(output, block.output_shape()))
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::conv_relu_pool(x, weight, bias)),
        }
    }
}
