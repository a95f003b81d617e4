//! What preparing one picture costs: a 640x480 JPEG decoded and made an ImageNet input
//! (resize 256, crop 224, mean and std, NCHW FP32), as `[preprocess.image]` declares it. The
//! baseline, PIL and torchvision's transforms in process, is `bench/preprocess_python.py`;
//! `bench/run.sh` runs both: `AICP_BENCH_JPEG_OUT=FILE` writes the picture measured, and
//! `AICP_BENCH_JSON=FILE` the median time per picture, timed again after criterion's runs.

use std::hint::black_box;
use std::io::Cursor;
use std::time::Instant;

use aicp_core::{DataType, ImagePreprocess, ModelSignature, Resize, TensorSpec};
use aicp_image::DecodeLimits;
use aicp_transform::ImageTransform;
use criterion::{Criterion, criterion_group, criterion_main};
use image::{Rgb, RgbImage};

/// A 640x480 picture with a photograph's mix of smooth areas and edges, as JPEG (quality 90):
/// the same bytes the Python baseline reads (`AICP_BENCH_JPEG` names a file to use instead).
fn jpeg() -> Vec<u8> {
    if let Some(path) = std::env::var_os("AICP_BENCH_JPEG") {
        return std::fs::read(path).expect("AICP_BENCH_JPEG");
    }
    let image = RgbImage::from_fn(640, 480, |x, y| {
        let ring = ((x as f32 - 320.0).hypot(y as f32 - 240.0) / 9.0).sin();
        Rgb([
            (x * 255 / 640) as u8,
            (128.0 + 100.0 * ring) as u8,
            ((x ^ y) & 0xff) as u8,
        ])
    });
    let mut bytes = Cursor::new(Vec::new());
    let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90);
    encoder.encode_image(&image).unwrap();
    bytes.into_inner()
}

fn prepare(c: &mut Criterion) {
    let signature = ModelSignature {
        inputs: vec![TensorSpec {
            name: "pixel_values".into(),
            datatype: DataType::F32,
            shape: Some(vec![None, Some(3), Some(224), Some(224)]),
        }],
        outputs: Vec::new(),
    };
    let spec = ImagePreprocess {
        resize: Some(Resize::ShorterSide(256)),
        crop: Some([224, 224]),
        mean: vec![0.485, 0.456, 0.406],
        std: vec![0.229, 0.224, 0.225],
        ..Default::default()
    };
    let transform = ImageTransform::new(&spec, &signature).unwrap();
    let bytes = jpeg();
    if let Some(path) = std::env::var_os("AICP_BENCH_JPEG_OUT") {
        std::fs::write(path, &bytes).unwrap();
    }
    c.bench_function("prepare/jpeg_640x480_to_imagenet", |b| {
        b.iter(|| transform.prepare(&bytes, DecodeLimits::default()).unwrap())
    });
    c.bench_function("prepare/decode_only", |b| {
        b.iter(|| aicp_image::decode(&bytes, DecodeLimits::default()).unwrap())
    });
    if let Some(path) = std::env::var_os("AICP_BENCH_JSON") {
        let mut times: Vec<f64> = (0..300)
            .map(|_| {
                let started = Instant::now();
                black_box(transform.prepare(&bytes, DecodeLimits::default()).unwrap());
                started.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let json = format!("{{\"median_us\": {:.1}}}\n", times[times.len() / 2]);
        std::fs::write(path, json).expect("writing AICP_BENCH_JSON");
    }
}

criterion_group!(benches, prepare);
criterion_main!(benches);
