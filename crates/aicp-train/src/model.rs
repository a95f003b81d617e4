//! The networks we train, and their parameters as plain layers for export.
//!
//! - [`Mlp`]: dense layers with ReLU between them, ending in logits (the seed's model).
//! - [`Cnn`]: blocks of a valid convolution, ReLU and 2x2 max pooling, then dense layers with
//!   ReLU and dropout between them, ending in logits (LeNet's shape).
//!
//! Both take flat images `[batch, rows * cols]`, so the training loop feeds them alike.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;
use serde::Serialize;

/// The kinds of network `aicp train --arch` builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Mlp,
    Cnn,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Self::Mlp => "mlp",
            Self::Cnn => "cnn",
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Arch {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "mlp" => Ok(Self::Mlp),
            "cnn" => Ok(Self::Cnn),
            other => Err(format!(
                "unknown architecture {other:?}: expected mlp or cnn"
            )),
        }
    }
}

/// The shape of a network: what `--arch`, `--hidden`, `--channels`, `--kernel` and `--dropout`
/// say.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Shape {
    pub arch: Arch,
    /// Dense hidden layer widths.
    pub hidden: Vec<usize>,
    /// Output channels of each convolution block (CNN only).
    pub channels: Vec<usize>,
    /// The side of every convolution's square kernel (CNN only).
    pub kernel: usize,
    /// The probability of dropping an activation before each dense layer (CNN only).
    pub dropout: f64,
}

impl Shape {
    /// The recipe `--arch` gives when no other flag changes it.
    pub fn default_for(arch: Arch) -> Self {
        match arch {
            // The seed project's MLP.
            Arch::Mlp => Self {
                arch,
                hidden: vec![128, 64],
                channels: vec![],
                kernel: 0,
                dropout: 0.0,
            },
            Arch::Cnn => Self {
                arch,
                hidden: vec![128],
                channels: vec![16, 32],
                kernel: 5,
                dropout: 0.25,
            },
        }
    }

    /// A short description, for example `MLP 784-128-64-10` or
    /// `CNN conv5x5 16-32 with 2x2 max pooling, dense 512-128-10`.
    pub fn describe(&self, image: ImageShape, classes: usize) -> String {
        let joined = |values: &[usize]| {
            values
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join("-")
        };
        let dense = joined(&layer_widths(
            self.dense_inputs(image).unwrap_or(0),
            &self.hidden,
            classes,
        ));
        match self.arch {
            Arch::Mlp => format!("MLP {dense}"),
            Arch::Cnn => format!(
                "CNN conv{k}x{k} {} with 2x2 max pooling, dense {dense}",
                joined(&self.channels),
                k = self.kernel
            ),
        }
    }

    /// How many values reach the first dense layer: the image's, or what the convolution
    /// blocks leave of it (`None` when they leave nothing).
    fn dense_inputs(&self, image: ImageShape) -> Option<usize> {
        match self.arch {
            Arch::Mlp => Some(image.iter().product()),
            Arch::Cnn => {
                let [rows, cols] = self.side_after_convolutions(image)?;
                Some(self.channels.last().copied().unwrap_or(image[0]) * rows * cols)
            }
        }
    }

    /// Rows and columns left after every convolution block (a valid convolution, then 2x2
    /// pooling), or `None` once nothing is left.
    fn side_after_convolutions(&self, [_, rows, cols]: ImageShape) -> Option<[usize; 2]> {
        let mut side = [rows, cols];
        for _ in &self.channels {
            side = side.map(|s| s.saturating_sub(self.kernel.saturating_sub(1)) / 2);
            if side.contains(&0) {
                return None;
            }
        }
        Some(side)
    }
}

/// The image a network reads: channels, rows, columns.
pub type ImageShape = [usize; 3];

/// A network of either kind.
// One network exists per training run (two with the best epoch's copy), so the size of the
// enum does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Network {
    Mlp(Mlp),
    Cnn(Cnn),
}

impl Network {
    /// A freshly initialised network for images of `image` shape and `classes` outputs, or why
    /// the shape does not fit the images.
    pub fn new(
        shape: &Shape,
        image: ImageShape,
        classes: usize,
        device: &Device,
    ) -> anyhow::Result<Self> {
        Ok(match shape.arch {
            Arch::Mlp => Self::Mlp(Mlp::new(
                shape.dense_inputs(image).unwrap_or(0),
                &shape.hidden,
                classes,
                device,
            )),
            Arch::Cnn => Self::Cnn(Cnn::new(shape, image, classes, device)?),
        })
    }

    /// Logits `[batch, classes]` for flat images `[batch, channels * rows * cols]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        match self {
            Self::Mlp(mlp) => mlp.forward(x),
            Self::Cnn(cnn) => cnn.forward(x),
        }
    }

    /// The network as a sequence of plain layers, parameters copied to host memory, from the
    /// image to the logits.
    pub fn layers(&self) -> Vec<Layer> {
        match self {
            Self::Mlp(mlp) => mlp.layers(),
            Self::Cnn(cnn) => cnn.layers(),
        }
    }
}

/// One step of a network, detached from burn, as the exporter writes it.
#[derive(Debug, Clone, PartialEq)]
pub enum Layer {
    /// Images `[batch, c, h, w]` to rows `[batch, c * h * w]`.
    Flatten,
    Conv(ConvLayer),
    Relu,
    /// Max over `size x size` windows with stride `size`, remainders dropped.
    MaxPool {
        size: usize,
    },
    Dense(DenseLayer),
}

/// One convolution's parameters: `weight` is `[outputs, inputs, kernel, kernel]` row-major
/// (burn's layout, and ONNX Conv's W), stride 1, no padding.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvLayer {
    pub inputs: usize,
    pub outputs: usize,
    pub kernel: usize,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// One dense layer's parameters: `weight` is `[inputs, outputs]` row-major (burn's layout, and
/// ONNX Gemm's B with `transB = 0`).
#[derive(Debug, Clone, PartialEq)]
pub struct DenseLayer {
    pub inputs: usize,
    pub outputs: usize,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// Dense layers `inputs -> hidden... -> classes`, ReLU after every layer but the last.
#[derive(Module, Debug)]
pub struct Mlp {
    layers: Vec<Linear>,
}

impl Mlp {
    /// A freshly initialised network (PyTorch's default initialisation: U(-1/sqrt(fan_in),
    /// 1/sqrt(fan_in)) for the weights).
    pub fn new(inputs: usize, hidden: &[usize], classes: usize, device: &Device) -> Self {
        Self {
            layers: dense_stack(inputs, hidden, classes, device),
        }
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

    fn layers(&self) -> Vec<Layer> {
        std::iter::once(Layer::Flatten)
            .chain(dense_layers(&self.layers))
            .collect()
    }
}

/// `(Conv kxk -> ReLU -> MaxPool 2)` per entry of `channels`, each block one fused operation
/// ([`crate::conv_block`]), then dense layers as in [`Mlp`] with dropout before each one.
#[derive(Module, Debug)]
pub struct Cnn {
    convs: Vec<Conv2d>,
    dense: Vec<Linear>,
    dropout: Dropout,
    channels: usize,
    rows: usize,
    cols: usize,
}

impl Cnn {
    pub fn new(
        shape: &Shape,
        [channels, rows, cols]: ImageShape,
        classes: usize,
        device: &Device,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !shape.channels.is_empty(),
            "a CNN needs at least one convolution: --channels is empty"
        );
        anyhow::ensure!(
            shape.kernel >= 1,
            "the convolution kernel must be at least 1, got {}",
            shape.kernel
        );
        anyhow::ensure!(
            (0.0..1.0).contains(&shape.dropout),
            "dropout must be in [0, 1), got {}",
            shape.dropout
        );
        anyhow::ensure!(
            shape.channels.iter().all(|&c| c > 0),
            "a convolution needs at least one channel, got --channels {:?}",
            shape.channels
        );
        let Some(flat) = shape.dense_inputs([channels, rows, cols]) else {
            anyhow::bail!(
                "{} convolution blocks with {k}x{k} kernels and 2x2 pooling leave nothing of a \
                 {rows}x{cols} image: use fewer --channels or a smaller --kernel",
                shape.channels.len(),
                k = shape.kernel
            );
        };
        let mut convs = Vec::new();
        let mut inputs = channels;
        for &outputs in &shape.channels {
            convs.push(Conv2dConfig::new([inputs, outputs], [shape.kernel; 2]).init(device));
            inputs = outputs;
        }
        Ok(Self {
            convs,
            dense: dense_stack(flat, &shape.hidden, classes, device),
            dropout: DropoutConfig::new(shape.dropout).init(),
            channels,
            rows,
            cols,
        })
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let [batch, _] = x.dims();
        let mut image = x.reshape([batch, self.channels, self.rows, self.cols]);
        for conv in &self.convs {
            image = crate::conv_block::forward(conv, image);
        }
        let mut x: Tensor<2> = image.flatten(1, 3);
        let last = self.dense.len() - 1;
        for (i, layer) in self.dense.iter().enumerate() {
            // Dropout is the identity outside training (burn skips it off autodiff devices).
            x = layer.forward(self.dropout.forward(x));
            if i < last {
                x = relu(x);
            }
        }
        x
    }

    fn layers(&self) -> Vec<Layer> {
        let mut layers = Vec::new();
        for conv in &self.convs {
            let [outputs, inputs, kernel, _] = conv.weight.val().dims();
            layers.push(Layer::Conv(ConvLayer {
                inputs,
                outputs,
                kernel,
                weight: to_f32(conv.weight.val().into_data()),
                bias: bias_values(conv.bias.as_ref(), outputs),
            }));
            layers.push(Layer::Relu);
            layers.push(Layer::MaxPool { size: 2 });
        }
        layers.push(Layer::Flatten);
        layers.extend(dense_layers(&self.dense));
        layers
    }
}

/// The widths of dense layers `inputs -> hidden... -> classes`.
fn layer_widths(inputs: usize, hidden: &[usize], classes: usize) -> Vec<usize> {
    std::iter::once(inputs)
        .chain(hidden.iter().copied())
        .chain(std::iter::once(classes))
        .collect()
}

fn dense_stack(inputs: usize, hidden: &[usize], classes: usize, device: &Device) -> Vec<Linear> {
    layer_widths(inputs, hidden, classes)
        .windows(2)
        .map(|w| LinearConfig::new(w[0], w[1]).init(device))
        .collect()
}

/// The dense layers as plain layers, with a ReLU after every one but the last.
fn dense_layers(layers: &[Linear]) -> Vec<Layer> {
    let mut out = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let [inputs, outputs] = layer.weight.val().dims();
        out.push(Layer::Dense(DenseLayer {
            inputs,
            outputs,
            weight: to_f32(layer.weight.val().into_data()),
            bias: bias_values(layer.bias.as_ref(), outputs),
        }));
        if i + 1 < layers.len() {
            out.push(Layer::Relu);
        }
    }
    out
}

fn bias_values(bias: Option<&burn::module::Param<Tensor<1>>>, outputs: usize) -> Vec<f32> {
    match bias {
        Some(bias) => to_f32(bias.val().into_data()),
        None => vec![0.0; outputs],
    }
}

fn to_f32(data: TensorData) -> Vec<f32> {
    // After `convert::<f32>` the data is f32, so the typed read cannot fail.
    data.convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap_or_default()
}
