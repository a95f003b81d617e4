//! Pictures to one sample of an image model's input, as model.toml's `[preprocess.image]`
//! says: decode (within limits), colour, resize, centre crop, scale, per-channel mean and std,
//! layout and the input's datatype. Or MNIST's preparation, as the `mnist` preset. Checked
//! against the model's input once, at load; run per picture on the request's side of the queue.

use aicp_core::{
    ColorOrder, DataType, ImagePreprocess, ImagePreset, Layout, ModelSignature, Resize,
    ResizeFilter, TensorData, TensorSpec,
};
use aicp_image::{DecodeLimits, Digit, ImageError};
use fast_image_resize::images::Image;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

/// The values an MNIST-style input takes per sample: 28 x 28.
const MNIST_VALUES: usize = (aicp_image::SIDE * aicp_image::SIDE) as usize;

/// How a picture becomes one sample of one model input.
#[derive(Debug, Clone)]
pub struct ImageTransform {
    /// The input it feeds.
    pub input: String,
    steps: Steps,
}

#[derive(Debug, Clone)]
enum Steps {
    /// [`aicp_image::preprocess`]; the caller maps the digit's pixels onto the input.
    Mnist,
    General(General),
}

#[derive(Debug, Clone)]
struct General {
    color: ColorOrder,
    resize: Option<Resize>,
    filter: ResizeFilter,
    crop: Option<[u32; 2]>,
    /// What every value becomes, per channel and 8-bit value: `(v * scale - mean) / std`.
    table: Vec<[f32; 256]>,
    layout: Layout,
    datatype: DataType,
}

/// A picture made ready for the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Picture {
    /// The picture's size as it came.
    pub width: u32,
    pub height: u32,
    pub sample: Sample,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    /// An MNIST-style digit, for the caller to map onto the model's input range.
    Digit(Digit),
    /// One sample of the input, in its layout and datatype, without the batch dimension.
    Tensor { shape: Vec<usize>, data: TensorData },
}

impl ImageTransform {
    /// The MNIST preparation for a model with one input of 28 x 28 values per sample: what the
    /// picture routes did for any model before `[preprocess]` existed.
    pub fn mnist_default(signature: &ModelSignature) -> Option<Self> {
        match signature.inputs.as_slice() {
            [input] if input.sample_elements() == Some(MNIST_VALUES) => Some(Self {
                input: input.name.clone(),
                steps: Steps::Mnist,
            }),
            _ => None,
        }
    }

    /// Checks `spec` against the model's input and readies it; the error says which key does
    /// not fit the model, and why.
    pub fn new(spec: &ImagePreprocess, signature: &ModelSignature) -> Result<Self, String> {
        let input = pick_input(spec.input.as_deref(), signature)?;
        if spec.preset == Some(ImagePreset::Mnist) {
            let only_input = ImagePreprocess {
                preset: spec.preset,
                input: spec.input.clone(),
                ..Default::default()
            };
            if *spec != only_input {
                return Err(
                    "preset = \"mnist\" is a whole preparation: give no other key \
                            than input beside it"
                        .into(),
                );
            }
            if input.sample_elements() != Some(MNIST_VALUES) {
                return Err(format!(
                    "preset = \"mnist\" makes 28 x 28 values, but input {:?} takes {:?} per \
                     sample",
                    input.name,
                    input.display_shape()
                ));
            }
            return Ok(Self {
                input: input.name.clone(),
                steps: Steps::Mnist,
            });
        }
        Ok(Self {
            input: input.name.clone(),
            steps: Steps::General(General::new(spec, input)?),
        })
    }

    /// Decodes `bytes` within `limits` and makes the picture one sample of the input.
    pub fn prepare(&self, bytes: &[u8], limits: DecodeLimits) -> Result<Picture, ImageError> {
        let image = aicp_image::decode(bytes, limits)?;
        let (width, height) = (image.width(), image.height());
        let sample = match &self.steps {
            Steps::Mnist => Sample::Digit(aicp_image::preprocess(&image)?),
            Steps::General(general) => general.prepare(image)?,
        };
        Ok(Picture {
            width,
            height,
            sample,
        })
    }

    /// Whether this is the MNIST preparation.
    pub fn is_mnist(&self) -> bool {
        matches!(self.steps, Steps::Mnist)
    }
}

/// The input a transform feeds: the one named, or the model's only one.
pub(crate) fn pick_input<'a>(
    name: Option<&str>,
    signature: &'a ModelSignature,
) -> Result<&'a TensorSpec, String> {
    let names = || {
        let names: Vec<_> = signature.inputs.iter().map(|s| s.name.as_str()).collect();
        format!("{names:?}")
    };
    match (name, signature.inputs.as_slice()) {
        (Some(name), inputs) => inputs.iter().find(|s| s.name == name).ok_or_else(|| {
            format!(
                "input = {name:?}: the model has no such input; its inputs: {}",
                names()
            )
        }),
        (None, [only]) => Ok(only),
        (None, _) => Err(format!(
            "the model has several inputs ({}): say which one the picture feeds with input = \"...\"",
            names()
        )),
    }
}

impl General {
    fn new(spec: &ImagePreprocess, input: &TensorSpec) -> Result<Self, String> {
        let layout = spec.layout.unwrap_or_default();
        let name = &input.name;
        let Some(shape) = input.shape.as_ref().filter(|s| s.len() == 4) else {
            return Err(format!(
                "input {name:?} has shape {:?}; a picture feeds a 4-dimensional input, {}",
                input.display_shape(),
                match layout {
                    Layout::Nchw => "[N, C, H, W] (layout = \"NCHW\")",
                    Layout::Nhwc => "[N, H, W, C] (layout = \"NHWC\")",
                }
            ));
        };
        let (channels, height, width) = match layout {
            Layout::Nchw => (shape[1], shape[2], shape[3]),
            Layout::Nhwc => (shape[3], shape[1], shape[2]),
        };
        let color = match (spec.color, channels) {
            (Some(color), _) => color,
            (None, Some(1)) => ColorOrder::Gray,
            (None, _) => ColorOrder::Rgb,
        };
        if let Some(channels) = channels.filter(|&c| c != color.channels()) {
            return Err(format!(
                "input {name:?} has {channels} channel(s) ({:?}, layout {}), but color = {:?} \
                 gives {}",
                input.display_shape(),
                layout_name(layout),
                color_name(color),
                color.channels()
            ));
        }
        let size = spec.crop.or(match spec.resize {
            Some(Resize::Exact(size)) => Some(size),
            _ => None,
        });
        match (size, width.zip(height)) {
            (Some([w, h]), Some((mw, mh))) if (w as usize, h as usize) != (mw, mh) => {
                return Err(format!(
                    "the preparation makes {w} x {h} pictures, but input {name:?} takes {mw} x \
                     {mh} ({:?})",
                    input.display_shape()
                ));
            }
            _ => {}
        }
        // A model that fixes its picture size gets pictures resized to it when nothing else
        // is said.
        let resize = match (spec.resize, spec.crop, width.zip(height)) {
            (None, None, Some((w, h))) => Some(Resize::Exact([w as u32, h as u32])),
            (resize, ..) => resize,
        };
        if matches!(
            resize,
            Some(Resize::ShorterSide(0)) | Some(Resize::Exact([0, _] | [_, 0]))
        ) || matches!(spec.crop, Some([0, _] | [_, 0]))
        {
            return Err("resize and crop must be at least 1 pixel".into());
        }
        let datatype = input.datatype;
        let float = matches!(
            datatype,
            DataType::F32 | DataType::F16 | DataType::BF16 | DataType::F64
        );
        if datatype == DataType::U8 {
            if spec.scale.is_some() || !spec.mean.is_empty() || !spec.std.is_empty() {
                return Err(format!(
                    "input {name:?} takes UINT8: the pixels themselves, so scale, mean and std \
                     do not apply"
                ));
            }
        } else if !float {
            return Err(format!(
                "input {name:?} takes {datatype}; a picture feeds FP32, FP16, BF16, FP64 or \
                 UINT8"
            ));
        }
        let channels = color.channels();
        let per_channel = |values: &[f32], key: &str, default: f32| match values.len() {
            0 => Ok(vec![default; channels]),
            1 => Ok(vec![values[0]; channels]),
            n if n == channels => Ok(values.to_vec()),
            n => Err(format!(
                "{key} has {n} values; color = {:?} has {channels} channel(s): give 1 or \
                 {channels}",
                color_name(color)
            )),
        };
        let mean = per_channel(&spec.mean, "mean", 0.0)?;
        let std = per_channel(&spec.std, "std", 1.0)?;
        if std.iter().any(|s| *s == 0.0 || !s.is_finite()) {
            return Err("std must be finite and non-zero".into());
        }
        let scale = if datatype == DataType::U8 {
            1.0
        } else {
            spec.scale.unwrap_or(1.0 / 255.0)
        };
        let table = mean
            .iter()
            .zip(&std)
            .map(|(mean, std)| std::array::from_fn(|v| (v as f32 * scale - mean) / std))
            .collect();
        Ok(Self {
            color,
            resize,
            filter: spec.filter.unwrap_or_default(),
            crop: spec.crop,
            table,
            layout,
            datatype,
        })
    }

    fn prepare(&self, image: image::DynamicImage) -> Result<Sample, ImageError> {
        let (width, height) = (image.width(), image.height());
        let (pixels, pixel_type) = match self.color {
            // PIL's convert("RGB") and "L": alpha dropped, grey by ITU-R 601 luma.
            ColorOrder::Gray => (image.into_luma8().into_raw(), PixelType::U8),
            ColorOrder::Rgb | ColorOrder::Bgr => (image.into_rgb8().into_raw(), PixelType::U8x3),
        };
        let (resized_w, resized_h) = match self.resize {
            None => (width, height),
            Some(Resize::Exact([w, h])) => (w, h),
            Some(Resize::ShorterSide(side)) => shorter_side_to(width, height, side),
        };
        let [out_w, out_h] = self.crop.unwrap_or([resized_w, resized_h]);
        if out_w > resized_w || out_h > resized_h {
            return Err(ImageError::Invalid(format!(
                "the picture is {width} x {height}, {resized_w} x {resized_h} once resized: \
                 smaller than the {out_w} x {out_h} crop the model takes"
            )));
        }
        // The centre crop's corner, rounded as torchvision rounds it (half to even).
        let left = (f64::from(resized_w - out_w) / 2.0).round_ties_even();
        let top = (f64::from(resized_h - out_h) / 2.0).round_ties_even();
        let channels = self.color.channels();
        let pixels = if (resized_w, resized_h) == (width, height) {
            crop_exact(
                &pixels,
                width,
                channels,
                (left as u32, top as u32),
                [out_w, out_h],
            )
        } else {
            // Resizing only the part the crop keeps: every output pixel samples the same
            // source positions with the same filter width as a whole resize then a crop.
            let (sx, sy) = (
                f64::from(width) / f64::from(resized_w),
                f64::from(height) / f64::from(resized_h),
            );
            let source = Image::from_vec_u8(width, height, pixels, pixel_type)
                .map_err(|e| ImageError::Invalid(format!("the decoded picture: {e}")))?;
            let mut target = Image::new(out_w, out_h, pixel_type);
            let options = ResizeOptions::new()
                .resize_alg(algorithm(self.filter))
                .crop(
                    left * sx,
                    top * sy,
                    f64::from(out_w) * sx,
                    f64::from(out_h) * sy,
                );
            Resizer::new()
                .resize(&source, &mut target, &options)
                .map_err(|e| ImageError::Invalid(format!("resizing the picture: {e}")))?;
            target.into_vec()
        };
        self.layout_values(&pixels, out_w as usize, out_h as usize)
    }

    /// Interleaved 8-bit pixels to the input's layout, values and datatype.
    fn layout_values(
        &self,
        pixels: &[u8],
        width: usize,
        height: usize,
    ) -> Result<Sample, ImageError> {
        let channels = self.color.channels();
        let plane = width * height;
        // The picture's channel that model channel `c` takes.
        let source = |c: usize| match self.color {
            ColorOrder::Bgr => 2 - c,
            _ => c,
        };
        let shape = match self.layout {
            Layout::Nchw => vec![channels, height, width],
            Layout::Nhwc => vec![height, width, channels],
        };
        if self.datatype == DataType::U8 {
            let mut data = vec![0u8; plane * channels];
            for c in 0..channels {
                let from = pixels.iter().skip(source(c)).step_by(channels);
                match self.layout {
                    Layout::Nchw => data[c * plane..(c + 1) * plane]
                        .iter_mut()
                        .zip(from)
                        .for_each(|(d, p)| *d = *p),
                    Layout::Nhwc => data
                        .iter_mut()
                        .skip(c)
                        .step_by(channels)
                        .zip(from)
                        .for_each(|(d, p)| *d = *p),
                }
            }
            return Ok(Sample::Tensor {
                shape,
                data: TensorData::U8(data),
            });
        }
        let mut values = vec![0f32; plane * channels];
        for c in 0..channels {
            let table = &self.table[c];
            let from = pixels.iter().skip(source(c)).step_by(channels);
            match self.layout {
                Layout::Nchw => values[c * plane..(c + 1) * plane]
                    .iter_mut()
                    .zip(from)
                    .for_each(|(d, p)| *d = table[usize::from(*p)]),
                Layout::Nhwc => values
                    .iter_mut()
                    .skip(c)
                    .step_by(channels)
                    .zip(from)
                    .for_each(|(d, p)| *d = table[usize::from(*p)]),
            }
        }
        // The table's values are finite; only FP16 can overflow (past 65504, with a scale,
        // mean and std that make such values), which float_as names.
        let data = TensorData::float_as(values, self.datatype)
            .map_err(|e| ImageError::Invalid(format!("the prepared picture: {}", e.message)))?;
        Ok(Sample::Tensor { shape, data })
    }
}

/// torchvision's `Resize(side)`: the shorter side to `side`, the longer in proportion,
/// truncated.
fn shorter_side_to(width: u32, height: u32, side: u32) -> (u32, u32) {
    let longer = |long: u32, short: u32| {
        ((u64::from(side) * u64::from(long)) / u64::from(short)).max(1) as u32
    };
    if width <= height {
        (side, longer(height, width))
    } else {
        (longer(width, height), side)
    }
}

/// The `[w, h]` box at `(left, top)` of interleaved pixels `width` wide.
fn crop_exact(
    pixels: &[u8],
    width: u32,
    channels: usize,
    (left, top): (u32, u32),
    [w, h]: [u32; 2],
) -> Vec<u8> {
    let row = width as usize * channels;
    let mut out = Vec::with_capacity(w as usize * h as usize * channels);
    for y in top as usize..(top + h) as usize {
        let start = y * row + left as usize * channels;
        out.extend_from_slice(&pixels[start..start + w as usize * channels]);
    }
    out
}

fn algorithm(filter: ResizeFilter) -> ResizeAlg {
    match filter {
        ResizeFilter::Nearest => ResizeAlg::Nearest,
        // Convolutions whose support widens with the reduction: PIL's antialiased filters.
        ResizeFilter::Bilinear => ResizeAlg::Convolution(FilterType::Bilinear),
        ResizeFilter::Bicubic => ResizeAlg::Convolution(FilterType::CatmullRom),
        ResizeFilter::Lanczos3 => ResizeAlg::Convolution(FilterType::Lanczos3),
    }
}

fn layout_name(layout: Layout) -> &'static str {
    match layout {
        Layout::Nchw => "NCHW",
        Layout::Nhwc => "NHWC",
    }
}

fn color_name(color: ColorOrder) -> &'static str {
    match color {
        ColorOrder::Rgb => "rgb",
        ColorOrder::Bgr => "bgr",
        ColorOrder::Gray => "gray",
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use image::{ImageFormat, Rgb, RgbImage};

    use super::*;

    fn signature(datatype: DataType, shape: &[Option<usize>]) -> ModelSignature {
        ModelSignature {
            inputs: vec![TensorSpec {
                name: "pixel_values".into(),
                datatype,
                shape: Some(shape.to_vec()),
            }],
            outputs: Vec::new(),
        }
    }

    fn nchw(c: usize, h: Option<usize>, w: Option<usize>) -> Vec<Option<usize>> {
        vec![None, Some(c), h, w]
    }

    /// A picture whose pixel (x, y) is (x, y, 200), as PNG.
    fn gradient(width: u32, height: u32) -> Vec<u8> {
        let image = RgbImage::from_fn(width, height, |x, y| Rgb([x as u8, y as u8, 200]));
        let mut bytes = Cursor::new(Vec::new());
        image.write_to(&mut bytes, ImageFormat::Png).unwrap();
        bytes.into_inner()
    }

    fn tensor(picture: Picture) -> (Vec<usize>, TensorData) {
        match picture.sample {
            Sample::Tensor { shape, data } => (shape, data),
            Sample::Digit(_) => panic!("a digit"),
        }
    }

    #[test]
    fn a_crop_without_resize_keeps_pixels_and_the_layout_orders_them() {
        let spec = ImagePreprocess {
            crop: Some([4, 2]),
            scale: Some(1.0),
            mean: vec![1.0, 2.0, 3.0],
            std: vec![1.0, 1.0, 0.5],
            ..Default::default()
        };
        let transform =
            ImageTransform::new(&spec, &signature(DataType::F32, &nchw(3, None, None))).unwrap();
        let picture = transform
            .prepare(&gradient(10, 6), DecodeLimits::default())
            .unwrap();
        assert_eq!((picture.width, picture.height), (10, 6));
        let (shape, data) = tensor(picture);
        assert_eq!(shape, [3, 2, 4]);
        let values = data.as_f32().unwrap();
        // The centre: x from 3, y from 2. Channel 0 is x - 1, channel 1 is y - 2, channel 2
        // (200 - 3) / 0.5.
        assert_eq!(&values[..4], &[2.0, 3.0, 4.0, 5.0]);
        assert_eq!(&values[8..12], &[0.0; 4]);
        assert_eq!(values[16], 394.0);

        let nhwc = ImagePreprocess {
            layout: Some(Layout::Nhwc),
            color: Some(ColorOrder::Bgr),
            ..spec
        };
        let shape = [None, None, None, Some(3)];
        let transform = ImageTransform::new(&nhwc, &signature(DataType::F32, &shape)).unwrap();
        let (shape, data) = tensor(
            transform
                .prepare(&gradient(10, 6), DecodeLimits::default())
                .unwrap(),
        );
        assert_eq!(shape, [2, 4, 3]);
        // BGR: blue first, minus the first mean.
        assert_eq!(
            &data.as_f32().unwrap()[..3],
            &[199.0, 0.0, (3.0 - 3.0) / 0.5]
        );
    }

    #[test]
    fn resize_then_crop_follows_torchvision_sizes() {
        assert_eq!(shorter_side_to(640, 480, 256), (341, 256));
        assert_eq!(shorter_side_to(480, 640, 256), (256, 341));
        assert_eq!(shorter_side_to(300, 300, 256), (256, 256));
        let spec = ImagePreprocess {
            resize: Some(Resize::ShorterSide(16)),
            crop: Some([12, 12]),
            ..Default::default()
        };
        let transform = ImageTransform::new(
            &spec,
            &signature(DataType::F16, &nchw(3, Some(12), Some(12))),
        )
        .unwrap();
        let (shape, data) = tensor(
            transform
                .prepare(&gradient(64, 32), DecodeLimits::default())
                .unwrap(),
        );
        assert_eq!(shape, [3, 12, 12]);
        assert_eq!(data.datatype(), DataType::F16);
        let values = data.to_f64().unwrap();
        // Shrunk 2x: pixel (x, 0) of the crop averages source columns around 2 * (x + 10) + 0.5.
        let first = values[0] * 255.0;
        assert!((first - 20.5).abs() < 1.5, "{first}");
        assert!(
            values[2 * 144..]
                .iter()
                .all(|v| (v * 255.0 - 200.0).abs() < 0.6)
        );
    }

    #[test]
    fn a_model_of_fixed_size_gets_pictures_resized_to_it_and_uint8_as_is() {
        let transform = ImageTransform::new(
            &ImagePreprocess::default(),
            &signature(DataType::U8, &nchw(1, Some(5), Some(7))),
        )
        .unwrap();
        let (shape, data) = tensor(
            transform
                .prepare(&gradient(70, 50), DecodeLimits::default())
                .unwrap(),
        );
        assert_eq!(shape, [1, 5, 7]);
        assert_eq!(data.datatype(), DataType::U8);
    }

    #[test]
    fn a_preparation_that_does_not_fit_the_model_is_refused_with_the_reason() {
        let refuse = |spec: ImagePreprocess, signature: ModelSignature, says: &str| {
            let err = ImageTransform::new(&spec, &signature).unwrap_err();
            assert!(err.contains(says), "{err:?} should say {says:?}");
        };
        let rgb = signature(DataType::F32, &nchw(3, Some(224), Some(224)));
        let crop = |w, h| ImagePreprocess {
            crop: Some([w, h]),
            ..Default::default()
        };
        refuse(crop(200, 200), rgb.clone(), "takes 224 x 224");
        let gray = ImagePreprocess {
            color: Some(ColorOrder::Gray),
            ..crop(224, 224)
        };
        refuse(gray, rgb.clone(), "color = \"gray\" gives 1");
        let mean = ImagePreprocess {
            mean: vec![0.1, 0.2],
            ..crop(224, 224)
        };
        refuse(mean, rgb.clone(), "mean has 2 values");
        let std = ImagePreprocess {
            std: vec![0.0],
            ..crop(224, 224)
        };
        refuse(std, rgb.clone(), "non-zero");
        let flat = signature(DataType::F32, &[None, Some(784)]);
        refuse(crop(28, 28), flat.clone(), "4-dimensional");
        let ints = signature(DataType::I64, &nchw(3, None, None));
        refuse(crop(2, 2), ints, "takes INT64");
        let bytes = signature(DataType::U8, &nchw(3, None, None));
        let scaled = ImagePreprocess {
            scale: Some(1.0),
            ..crop(2, 2)
        };
        refuse(scaled, bytes, "do not apply");
        let named = ImagePreprocess {
            input: Some("image".into()),
            ..Default::default()
        };
        refuse(named, rgb, "no such input");
        let mnist = ImagePreprocess {
            preset: Some(ImagePreset::Mnist),
            ..Default::default()
        };
        assert!(ImageTransform::new(&mnist, &flat).unwrap().is_mnist());
        let mnist_and_more = ImagePreprocess {
            resize: Some(Resize::ShorterSide(28)),
            ..mnist.clone()
        };
        refuse(mnist_and_more, flat, "no other key");
        refuse(
            mnist,
            signature(DataType::F32, &nchw(3, Some(224), Some(224))),
            "makes 28 x 28",
        );
    }

    #[test]
    fn a_picture_smaller_than_the_crop_is_refused() {
        let spec = ImagePreprocess {
            crop: Some([32, 32]),
            ..Default::default()
        };
        let transform =
            ImageTransform::new(&spec, &signature(DataType::F32, &nchw(3, None, None))).unwrap();
        let err = transform
            .prepare(&gradient(20, 40), DecodeLimits::default())
            .unwrap_err();
        assert!(
            matches!(&err, ImageError::Invalid(m) if m.contains("smaller than the 32 x 32 crop")),
            "{err:?}"
        );
    }
}
