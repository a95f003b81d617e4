//! `aicp serve` as a user runs it: the real binary on an ephemeral loopback port, a real HTTP
//! client, the bundled model and real digits.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Server, digits, python, repo_root};
use serde_json::{Value, json};

/// A model directory: the bundled `mnist`, the same file as a bare seed-style
/// `digits_model.onnx`, a `tractonly` model pinned to tract, a corrupt `broken.onnx`, and a
/// corrupt `mnist.onnx` that clashes with `mnist/`.
fn model_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let bundled = repo_root().join("models/mnist");
    let onnx = bundled.join("1/model.onnx");
    std::fs::create_dir_all(dir.path().join("mnist/1")).unwrap();
    std::fs::copy(&onnx, dir.path().join("mnist/1/model.onnx")).unwrap();
    std::fs::copy(
        bundled.join("model.toml"),
        dir.path().join("mnist/model.toml"),
    )
    .unwrap();
    std::fs::copy(&onnx, dir.path().join("digits_model.onnx")).unwrap();
    std::fs::create_dir_all(dir.path().join("tractonly/1")).unwrap();
    std::fs::copy(&onnx, dir.path().join("tractonly/1/model.onnx")).unwrap();
    std::fs::write(
        dir.path().join("tractonly/model.toml"),
        "backend = \"tract\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("broken.onnx"), b"this is not an onnx file").unwrap();
    // Same name as the mnist/ directory: skipped, never replacing it.
    std::fs::write(dir.path().join("mnist.onnx"), b"not a model either").unwrap();
    dir
}

fn classes(predictions: &Value) -> Vec<u64> {
    predictions
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["class"].as_u64().unwrap())
        .collect()
}

#[test]
fn classifies_real_digits_as_one_image_or_a_batch() {
    let models = model_dir();
    let server = Server::start(models.path(), &[]);
    let digits = digits(50);

    // One image, flat: the top class is right for nearly every held-out digit.
    let mut correct = 0;
    for (pixels, label) in &digits {
        let (status, body) = server.post("/api/v1/ml/classify", &json!({"image_data": pixels}));
        assert_eq!(status, 200, "{body}");
        let predictions = body["predictions"].as_array().unwrap();
        assert_eq!(predictions.len(), 5);
        let confidences: Vec<f64> = predictions
            .iter()
            .map(|p| p["confidence"].as_f64().unwrap())
            .collect();
        assert!(
            confidences.windows(2).all(|w| w[0] >= w[1]),
            "{confidences:?}"
        );
        assert!(confidences.iter().sum::<f64>() <= 1.0 + 1e-5);
        assert_eq!(predictions[0]["label"], predictions[0]["class"].to_string());
        correct += usize::from(predictions[0]["class"] == u64::from(*label));
    }
    assert!(
        correct >= 45,
        "only {correct}/50 digits classified correctly"
    );
    let (_, single) = server.post("/api/v1/ml/classify", &json!({"image_data": digits[0].0}));
    assert_eq!(single["model_name"], "mnist");
    assert_eq!(single["model_version"], 1);
    assert!(single["inference_time_ms"].as_f64().unwrap() > 0.0);

    // The same image as [28][28] and [1][28][28] gives the same answer.
    let rows: Vec<&[f32]> = digits[0].0.chunks(28).collect();
    for image in [json!(rows), json!([rows])] {
        let (status, body) = server.post("/api/v1/ml/classify", &json!({"image_data": image}));
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["predictions"], single["predictions"]);
    }

    // A batch in each accepted layout: one result per image, each matching its single answer.
    let batch: Vec<&Vec<f32>> = digits[..3].iter().map(|(p, _)| p).collect();
    let as_rows: Vec<Vec<&[f32]>> = batch.iter().map(|p| p.chunks(28).collect()).collect();
    let as_nchw: Vec<Vec<Vec<&[f32]>>> = as_rows.iter().map(|r| vec![r.clone()]).collect();
    for images in [json!(batch), json!(as_rows), json!(as_nchw)] {
        let (status, body) = server.post(
            "/api/v1/ml/classify",
            &json!({"image_data": images, "top_k": 3}),
        );
        assert_eq!(status, 200, "{body}");
        let results = body["results"].as_array().unwrap();
        assert_eq!(results.len(), 3);
        for (result, (pixels, _)) in results.iter().zip(&digits) {
            let (_, alone) = server.post(
                "/api/v1/ml/classify",
                &json!({"image_data": pixels, "top_k": 3}),
            );
            assert_eq!(
                classes(&result["predictions"]),
                classes(&alone["predictions"])
            );
        }
    }

    // top_k above the class count returns every class; the seed's bare file is served too.
    let (_, body) = server.post(
        "/api/v1/ml/classify",
        &json!({"image_data": digits[0].0, "top_k": 50, "model_name": "digits"}),
    );
    assert_eq!(body["predictions"].as_array().unwrap().len(), 10);
}

#[test]
fn inference_returns_raw_outputs_and_both_engines_agree() {
    let models = model_dir();
    let server = Server::start(models.path(), &[]);
    let digits = digits(200);
    let flat: Vec<f32> = digits.iter().flat_map(|(p, _)| p.iter().copied()).collect();

    let (_, listing) = server.get("/api/v1/ml/models");
    let engine_of = |name: &str| {
        listing["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .map(|m| m["engine"].clone())
            .unwrap()
    };
    // CI installs the onnxruntime wheel, so auto picks it; tractonly is pinned to tract.
    assert_eq!(engine_of("mnist"), "onnxruntime");
    assert_eq!(engine_of("tractonly"), "tract");

    let run = |model: &str| {
        let (status, body) = server.post(
            "/api/v1/ml/inference",
            &json!({"model_name": model, "input_data": flat, "input_shape": [200, 1, 28, 28]}),
        );
        assert_eq!(status, 200, "{body}");
        let output = &body["outputs"][0];
        assert_eq!(output["name"], "logits");
        assert_eq!(output["shape"], json!([200, 10]));
        output["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect::<Vec<f64>>()
    };
    let ort = run("mnist");
    let tract = run("tractonly");
    let difference = ort
        .iter()
        .zip(&tract)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(difference < 1e-4, "engines differ by {difference}");

    // The model's own shape when input_shape is absent ([N, 784] feeds [N, 1, 28, 28]).
    let (status, body) = server.post(
        "/api/v1/ml/inference",
        &json!({"input_data": &flat[..784 * 2], "apply_softmax": true, "top_k": 2}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outputs"][0]["shape"], json!([2, 10]));
    let first_row: f64 = body["outputs"][0]["data"].as_array().unwrap()[..10]
        .iter()
        .map(|v| v.as_f64().unwrap())
        .sum();
    assert!(
        (first_row - 1.0).abs() < 1e-5,
        "softmax row sums to {first_row}"
    );
    let predictions = body["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 2);
    assert_eq!(predictions[0].as_array().unwrap().len(), 2);
    let (status, body) = server.post(
        "/api/v1/ml/inference",
        &json!({"input_data": &flat[..784], "input_shape": [1, 784]}),
    );
    assert_eq!(status, 200, "{body}");
}

#[test]
fn bad_requests_get_clear_errors_and_the_server_lives_on() {
    let models = model_dir();
    let server = Server::start(models.path(), &["--max-body-bytes", "100000"]);
    let image = digits(1).remove(0).0;
    let check = |status: u16, body: &Value, expected_status: u16, needle: &str| {
        assert_eq!(status, expected_status, "{body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(needle),
            "expected {needle:?} in {message:?}"
        );
        assert!(body["error"]["code"].is_string(), "{body}");
    };
    let classify = |body: Value| server.post("/api/v1/ml/classify", &body);

    let (s, b) = classify(json!({"image_data": image, "model_name": "nope"}));
    check(
        s,
        &b,
        404,
        "available models: broken, digits, mnist, tractonly",
    );
    let (s, b) = classify(json!({"image_data": &image[..783]}));
    check(s, &b, 422, "expected 784 values, got 783");
    let (s, b) = classify(json!({"image_data": [[1.0, 0.0], [0.5]]}));
    check(s, &b, 422, "not rectangular");
    let (s, b) = classify(json!({"image_data": ["a"]}));
    check(s, &b, 422, "image_data");
    let (s, b) = classify(json!({"image_data": image, "top_k": "five"}));
    check(s, &b, 422, "top_k");
    let (s, b) = classify(json!({"image_data": image, "top_k": 0}));
    check(s, &b, 422, "top_k must be at least 1");
    let (s, b) = classify(json!({"model_name": "mnist"}));
    check(s, &b, 422, "missing field `image_data`");
    let (s, b) = classify(json!({"image_data": image, "imagedata": 1}));
    check(s, &b, 422, "unknown field `imagedata`");
    let (s, b) = classify(json!({"image_data": []}));
    check(s, &b, 422, "empty");
    let pixels: Vec<f32> = image.iter().map(|v| v * 255.0).collect();
    let (s, b) = classify(json!({"image_data": pixels}));
    check(s, &b, 422, "divide them by 255");
    // 1e39 is valid JSON but beyond float32.
    let (s, b) = server.post_raw(
        "/api/v1/ml/classify",
        format!("{{\"image_data\": [1e39{}]}}", ", 0.5".repeat(783)),
    );
    check(s, &b, 422, "does not fit FP32");
    let (s, b) = classify(json!({"image_data": image, "model_name": "../mnist"}));
    check(s, &b, 422, "invalid model name");
    let (s, b) = classify(json!({"image_data": image, "model_name": "broken"}));
    check(s, &b, 503, "not ready");
    let (s, b) = server.post_raw("/api/v1/ml/classify", "{\"image_data\": [1, 2,");
    check(s, &b, 400, "malformed JSON");
    let (s, b) = server.post_raw("/api/v1/ml/classify", "not json at all");
    check(s, &b, 400, "malformed JSON");
    let (s, b) = server.post_raw(
        "/api/v1/ml/classify",
        format!("[{}]", "0.5,".repeat(40_000)),
    );
    check(s, &b, 413, "");

    let inference = |body: Value| server.post("/api/v1/ml/inference", &body);
    let (s, b) = inference(json!({"input_data": image, "input_shape": [1, -1, 28, 28]}));
    check(s, &b, 422, "input_shape[1] is -1");
    let (s, b) = inference(json!({"input_data": image, "input_shape": [0, 784]}));
    check(s, &b, 422, "input_shape[0] is 0");
    let (s, b) = inference(json!({"input_data": image, "input_shape": [2, 784]}));
    check(s, &b, 422, "needs 1568 values, input_data has 784");
    let (s, b) = inference(json!({"input_data": &image[..700]}));
    check(s, &b, 422, "takes 784 values per sample");
    let (s, b) =
        inference(json!({"input_data": image, "input_shape": [1, 28, 28], "apply_softmax": "yes"}));
    check(s, &b, 422, "apply_softmax");
    let (s, b) = server.get("/api/v1/ml/models/nope");
    check(s, &b, 404, "model \"nope\" not found");
    let (s, b) = server.get("/no/such/route");
    check(s, &b, 404, "no route");

    // None of that hurt the server.
    let (status, body) = classify(json!({"image_data": image}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.get("/healthz").0, 200);
}

#[test]
fn lists_models_with_state_engine_and_signature() {
    let models = model_dir();
    let server = Server::start(models.path(), &[]);
    let (status, body) = server.get("/api/v1/ml/models");
    assert_eq!(status, 200);
    let names: Vec<&str> = body["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["broken", "digits", "mnist", "tractonly"]);

    let (status, mnist) = server.get("/api/v1/ml/models/mnist");
    assert_eq!(status, 200);
    assert_eq!(mnist["state"], "ready");
    assert_eq!(mnist["default_version"], 1);
    assert_eq!(mnist["versions"][0]["state"], "ready");
    assert_eq!(
        mnist["inputs"][0],
        json!({"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]})
    );
    assert_eq!(mnist["outputs"][0]["shape"], json!([-1, 10]));
    assert_eq!(mnist["output"], "logits");
    assert_eq!(mnist["labels"].as_array().unwrap().len(), 10);
    assert!(mnist["description"].as_str().unwrap().contains("MNIST"));
    assert_eq!(mnist["source"], "mnist");

    let (_, digits) = server.get("/api/v1/ml/models/digits");
    assert_eq!(digits["source"], "digits_model.onnx");
    assert_eq!(digits["state"], "ready");

    let (_, broken) = server.get("/api/v1/ml/models/broken");
    assert_eq!(broken["state"], "failed");
    assert!(
        broken["reason"]
            .as_str()
            .unwrap()
            .contains("not a readable ONNX model"),
        "{broken}"
    );

    let (status, ready) = server.get("/readyz");
    assert_eq!(status, 200);
    assert_eq!(ready["models_ready"], 3);
    assert_eq!(ready["models_failed"], 1);
    let startup = &server.startup;
    assert!(
        startup
            .iter()
            .any(|l| l == "model mnist version 1 ready on onnxruntime (cpu)"),
        "{startup:?}"
    );
    assert!(
        startup
            .iter()
            .any(|l| l.starts_with("model broken failed:")),
        "{startup:?}"
    );
}

#[test]
fn reshapes_to_the_declared_input_and_never_applies_softmax_twice() {
    let models = model_dir();
    // A model taking [N, 784] and ending in Softmax, derived from the bundled one.
    let status = Command::new(python())
        .arg(common::manifest_dir().join("tests/fixtures/flat_softmax.py"))
        .arg(repo_root().join("models/mnist/1/model.onnx"))
        .arg(models.path().join("flat.onnx"))
        .status()
        .expect("scripts/test.sh creates the .venv this test needs");
    assert!(status.success());
    let server = Server::start(models.path(), &[]);
    let (_, flat) = server.get("/api/v1/ml/models/flat");
    assert_eq!(flat["inputs"][0]["shape"], json!([-1, 784]));
    assert_eq!(flat["output"], "probabilities");

    let pixels = digits(1).remove(0).0;
    let (status, reference) = server.post(
        "/api/v1/ml/classify",
        &json!({"image_data": pixels, "top_k": 10}),
    );
    assert_eq!(status, 200, "{reference}");
    let rows: Vec<&[f32]> = pixels.chunks(28).collect();
    let (status, probabilities) = server.post(
        "/api/v1/ml/classify",
        &json!({"image_data": [[rows]], "model_name": "flat", "top_k": 10}),
    );
    assert_eq!(status, 200, "{probabilities}");
    // Same classes, same confidences: the model's own softmax, not a second one on top.
    let confidences = |body: &Value| -> Vec<f64> {
        body["results"][0]["predictions"]
            .as_array()
            .or(body["predictions"].as_array())
            .unwrap()
            .iter()
            .map(|p| p["confidence"].as_f64().unwrap())
            .collect()
    };
    let (a, b) = (confidences(&reference), confidences(&probabilities));
    assert!(
        a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-5),
        "{a:?} vs {b:?}"
    );

    // The raw endpoint takes the [N, 1, 28, 28] shape for it too.
    let (status, body) = server.post(
        "/api/v1/ml/inference",
        &json!({"model_name": "flat", "input_data": pixels, "input_shape": [1, 1, 28, 28]}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outputs"][0]["name"], "probabilities");
    assert_eq!(body["outputs"][0]["shape"], json!([1, 10]));
}

#[test]
fn a_missing_onnxruntime_library_is_named_and_tract_serves() {
    let models = model_dir();
    let out = Command::new(env!("CARGO_BIN_EXE_aicp"))
        .current_dir(repo_root())
        .args([
            "models",
            "--ort-lib",
            "/nonexistent/libonnxruntime.so.1.32.0",
            "--models",
        ])
        .arg(models.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/libonnxruntime.so.1.32.0 does not exist"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mnist = stdout.lines().find(|l| l.starts_with("mnist ")).unwrap();
    assert!(
        mnist.contains("ready") && mnist.contains("tract"),
        "{stdout}"
    );
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let models = model_dir();
    let mut server = Server::start(models.path(), &[]);
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "the server did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn models_and_predict_commands_work_offline() {
    let models = model_dir();
    let out = Command::new(env!("CARGO_BIN_EXE_aicp"))
        .current_dir(repo_root())
        .args(["models", "--models"])
        .arg(models.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("mnist"), "{listing}");
    assert!(listing.contains("failed"), "{listing}");
    assert!(listing.contains("reason: "), "{listing}");

    let (pixels, label) = digits(1).remove(0);
    let file = models.path().join("digit.json");
    std::fs::write(&file, serde_json::to_string(&pixels).unwrap()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_aicp"))
        .current_dir(repo_root())
        .args(["predict", "--model", "mnist", "--top-k", "3", "--models"])
        .arg(models.path())
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(
        lines[1].trim_start().starts_with(&label.to_string()),
        "{stdout}"
    );
}
