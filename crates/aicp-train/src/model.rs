//! The multilayer perceptron we train: dense layers with ReLU between them, ending in logits.

use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;

/// Dense layers `inputs -> hidden... -> classes`, ReLU after every layer but the last.
#[derive(Module, Debug)]
pub struct Mlp {
    layers: Vec<Linear>,
}

/// One dense layer's parameters, detached from burn: `weight` is `[inputs, outputs]` row-major
/// (burn's layout, and ONNX Gemm's B with `transB = 0`).
#[derive(Debug, Clone, PartialEq)]
pub struct DenseLayer {
    pub inputs: usize,
    pub outputs: usize,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl Mlp {
    /// A freshly initialised network (PyTorch's default initialisation: U(-1/sqrt(fan_in),
    /// 1/sqrt(fan_in)) for the weights).
    pub fn new(inputs: usize, hidden: &[usize], classes: usize, device: &Device) -> Self {
        let widths: Vec<usize> = std::iter::once(inputs)
            .chain(hidden.iter().copied())
            .chain(std::iter::once(classes))
            .collect();
        let layers = widths
            .windows(2)
            .map(|w| LinearConfig::new(w[0], w[1]).init(device))
            .collect();
        Self { layers }
    }

    /// Logits `[batch, classes]` for inputs `[batch, inputs]`.
    pub fn forward(&self, mut x: Tensor<2>) -> Tensor<2> {
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x);
            if i < last {
                x = relu(x);
            }
        }
        x
    }

    /// The parameters of every layer, copied to host memory.
    pub fn dense_layers(&self) -> Vec<DenseLayer> {
        self.layers
            .iter()
            .map(|layer| {
                let [inputs, outputs] = layer.weight.val().dims();
                let bias = match &layer.bias {
                    Some(bias) => to_f32(bias.val().into_data()),
                    None => vec![0.0; outputs],
                };
                DenseLayer {
                    inputs,
                    outputs,
                    weight: to_f32(layer.weight.val().into_data()),
                    bias,
                }
            })
            .collect()
    }
}

fn to_f32(data: TensorData) -> Vec<f32> {
    // After `convert::<f32>` the data is f32, so the typed read cannot fail.
    data.convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap_or_default()
}
