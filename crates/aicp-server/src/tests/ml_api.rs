//! The ML API (`/api/v1/ml/...`) with the bundled MLP and real held-out digits: one image or a
//! batch in every accepted layout, raw outputs, listings, reshaping to a model's declared
//! input, and bad requests answered with what was expected and what came.

use aicp_testkit::{digits, fixtures, install, install_with_metadata};
use serde_json::{Value, json};

use crate::tests::support::{Options, Server};

/// A model directory: the bundled `mnist`, the same file as a bare seed-style
/// `digits_model.onnx`, a `tractonly` model pinned to tract, a corrupt `broken.onnx`, and a
/// corrupt `mnist.onnx` that clashes with `mnist/`.
pub fn model_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    install_with_metadata(root, "mnist");
    std::fs::copy(
        aicp_testkit::bundled_model("mnist"),
        root.join("digits_model.onnx"),
    )
    .unwrap();
    install(root, "mnist", "tractonly", 1);
    std::fs::write(root.join("tractonly/model.toml"), "backend = \"tract\"\n").unwrap();
    std::fs::write(root.join("broken.onnx"), b"this is not an onnx file").unwrap();
    // Same name as the mnist/ directory: skipped, never replacing it.
    std::fs::write(root.join("mnist.onnx"), b"not a model either").unwrap();
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

#[tokio::test]
async fn classifies_real_digits_as_one_image_or_a_batch() {
    let models = model_dir();
    let server = Server::start(models.path(), Options::default()).await;
    let digits = digits(50);

    // One image, flat: the top class is right for nearly every held-out digit.
    let mut correct = 0;
    for (pixels, label) in &digits {
        let (status, body) = server
            .post("/api/v1/ml/classify", &json!({"image_data": pixels}))
            .await;
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
    let (_, single) = server
        .post("/api/v1/ml/classify", &json!({"image_data": digits[0].0}))
        .await;
    assert_eq!(single["model_name"], "mnist");
    assert_eq!(single["model_version"], 1);
    assert!(single["inference_time_ms"].as_f64().unwrap() > 0.0);

    // The same image as [28][28] and [1][28][28] gives the same answer.
    let rows: Vec<&[f32]> = digits[0].0.chunks(28).collect();
    for image in [json!(rows), json!([rows])] {
        let (status, body) = server
            .post("/api/v1/ml/classify", &json!({"image_data": image}))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["predictions"], single["predictions"]);
    }

    // A batch in each accepted layout: one result per image, each matching its single answer.
    let batch: Vec<&Vec<f32>> = digits[..3].iter().map(|(p, _)| p).collect();
    let as_rows: Vec<Vec<&[f32]>> = batch.iter().map(|p| p.chunks(28).collect()).collect();
    let as_nchw: Vec<Vec<Vec<&[f32]>>> = as_rows.iter().map(|r| vec![r.clone()]).collect();
    for images in [json!(batch), json!(as_rows), json!(as_nchw)] {
        let (status, body) = server
            .post(
                "/api/v1/ml/classify",
                &json!({"image_data": images, "top_k": 3}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let results = body["results"].as_array().unwrap();
        assert_eq!(results.len(), 3);
        for (result, (pixels, _)) in results.iter().zip(&digits) {
            let (_, alone) = server
                .post(
                    "/api/v1/ml/classify",
                    &json!({"image_data": pixels, "top_k": 3}),
                )
                .await;
            assert_eq!(
                classes(&result["predictions"]),
                classes(&alone["predictions"])
            );
        }
    }

    // top_k above the class count returns every class; the seed's bare file is served too.
    let (_, body) = server
        .post(
            "/api/v1/ml/classify",
            &json!({"image_data": digits[0].0, "top_k": 50, "model_name": "digits"}),
        )
        .await;
    assert_eq!(body["predictions"].as_array().unwrap().len(), 10);
}

#[tokio::test]
async fn inference_returns_raw_outputs_with_optional_softmax() {
    let models = model_dir();
    let server = Server::start(models.path(), Options::default()).await;
    let digits = digits(200);
    let flat: Vec<f32> = digits.iter().flat_map(|(p, _)| p.iter().copied()).collect();

    let (status, body) = server
        .post(
            "/api/v1/ml/inference",
            &json!({"model_name": "mnist", "input_data": flat, "input_shape": [200, 1, 28, 28]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let output = &body["outputs"][0];
    assert_eq!(output["name"], "logits");
    assert_eq!(output["shape"], json!([200, 10]));
    let logits: Vec<f32> = serde_json::from_value(output["data"].clone()).unwrap();
    let images: Vec<Vec<f32>> = digits.into_iter().map(|(p, _)| p).collect();
    crate::tests::support::assert_close(&logits, &crate::tests::support::engine_logits(&images));

    // The model's own shape when input_shape is absent ([N, 784] feeds [N, 1, 28, 28]).
    let (status, body) = server
        .post(
            "/api/v1/ml/inference",
            &json!({"input_data": &flat[..784 * 2], "apply_softmax": true, "top_k": 2}),
        )
        .await;
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
    let (status, body) = server
        .post(
            "/api/v1/ml/inference",
            &json!({"input_data": &flat[..784], "input_shape": [1, 784]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_the_server_lives_on() {
    let models = model_dir();
    let options = Options {
        max_body_bytes: 100_000,
        ..Options::default()
    };
    let server = Server::start(models.path(), options).await;
    let image = digits(1).remove(0).0;
    let check = |(status, body): (u16, Value), expected_status: u16, needle: &str| {
        assert_eq!(status, expected_status, "{body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(needle),
            "expected {needle:?} in {message:?}"
        );
        assert!(body["error"]["code"].is_string(), "{body}");
    };
    let classify = async |body: Value| server.post("/api/v1/ml/classify", &body).await;

    check(
        classify(json!({"image_data": image, "model_name": "nope"})).await,
        404,
        "available models: broken, digits, mnist, tractonly",
    );
    check(
        classify(json!({"image_data": &image[..783]})).await,
        422,
        "expected 784 values, got 783",
    );
    check(
        classify(json!({"image_data": [[1.0, 0.0], [0.5]]})).await,
        422,
        "not rectangular",
    );
    check(
        classify(json!({"image_data": ["a"]})).await,
        422,
        "image_data",
    );
    check(
        classify(json!({"image_data": image, "top_k": "five"})).await,
        422,
        "top_k",
    );
    check(
        classify(json!({"image_data": image, "top_k": 0})).await,
        422,
        "top_k must be at least 1",
    );
    check(
        classify(json!({"model_name": "mnist"})).await,
        422,
        "missing field `image_data`",
    );
    check(
        classify(json!({"image_data": image, "imagedata": 1})).await,
        422,
        "unknown field `imagedata`",
    );
    check(classify(json!({"image_data": []})).await, 422, "empty");
    let pixels: Vec<f32> = image.iter().map(|v| v * 255.0).collect();
    check(
        classify(json!({"image_data": pixels})).await,
        422,
        "divide them by 255",
    );
    // 1e39 is valid JSON but beyond float32.
    check(
        server
            .post_raw(
                "/api/v1/ml/classify",
                format!("{{\"image_data\": [1e39{}]}}", ", 0.5".repeat(783)),
            )
            .await,
        422,
        "does not fit FP32",
    );
    check(
        classify(json!({"image_data": image, "model_name": "../mnist"})).await,
        422,
        "invalid model name",
    );
    check(
        classify(json!({"image_data": image, "model_name": "broken"})).await,
        503,
        "not ready",
    );
    check(
        server
            .post_raw("/api/v1/ml/classify", "{\"image_data\": [1, 2,")
            .await,
        400,
        "malformed JSON",
    );
    check(
        server
            .post_raw("/api/v1/ml/classify", "not json at all")
            .await,
        400,
        "malformed JSON",
    );
    check(
        server
            .post_raw(
                "/api/v1/ml/classify",
                format!("[{}]", "0.5,".repeat(40_000)),
            )
            .await,
        413,
        "",
    );

    let inference = async |body: Value| server.post("/api/v1/ml/inference", &body).await;
    check(
        inference(json!({"input_data": image, "input_shape": [1, -1, 28, 28]})).await,
        422,
        "input_shape[1] is -1",
    );
    check(
        inference(json!({"input_data": image, "input_shape": [0, 784]})).await,
        422,
        "input_shape[0] is 0",
    );
    check(
        inference(json!({"input_data": image, "input_shape": [2, 784]})).await,
        422,
        "needs 1568 values, input_data has 784",
    );
    check(
        inference(json!({"input_data": &image[..700]})).await,
        422,
        "takes 784 values per sample",
    );
    check(
        inference(json!({"input_data": image, "input_shape": [1, 28, 28], "apply_softmax": "yes"}))
            .await,
        422,
        "apply_softmax",
    );
    check(
        server.get("/api/v1/ml/models/nope").await,
        404,
        "model \"nope\" not found",
    );
    check(server.get("/no/such/route").await, 404, "no route");

    // None of that hurt the server.
    let (status, body) = classify(json!({"image_data": image})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.get("/healthz").await.0, 200);
}

#[tokio::test]
async fn lists_models_with_state_engine_and_signature() {
    let models = model_dir();
    let server = Server::start(models.path(), Options::default()).await;
    let (status, body) = server.get("/api/v1/ml/models").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = body["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["broken", "digits", "mnist", "tractonly"]);

    let (status, mnist) = server.get("/api/v1/ml/models/mnist").await;
    assert_eq!(status, 200);
    assert_eq!(mnist["state"], "ready");
    assert_eq!(mnist["engine"], "tract");
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

    let (_, digits) = server.get("/api/v1/ml/models/digits").await;
    assert_eq!(digits["source"], "digits_model.onnx");
    assert_eq!(digits["state"], "ready");

    let (_, broken) = server.get("/api/v1/ml/models/broken").await;
    assert_eq!(broken["state"], "failed");
    assert!(
        broken["reason"]
            .as_str()
            .unwrap()
            .contains("not a readable ONNX model"),
        "{broken}"
    );

    let (status, ready) = server.get("/readyz").await;
    assert_eq!(status, 200);
    assert_eq!(ready["models_ready"], 3);
    assert_eq!(ready["models_failed"], 1);
}

#[tokio::test]
async fn reshapes_to_the_declared_input_and_never_applies_softmax_twice() {
    let models = model_dir();
    // A model taking [N, 784] and ending in Softmax, derived from the bundled one.
    fixtures::flat_softmax(&models.path().join("flat.onnx"));
    let server = Server::start(models.path(), Options::default()).await;
    let (_, flat) = server.get("/api/v1/ml/models/flat").await;
    assert_eq!(flat["inputs"][0]["shape"], json!([-1, 784]));
    assert_eq!(flat["output"], "probabilities");

    let pixels = digits(1).remove(0).0;
    let (status, reference) = server
        .post(
            "/api/v1/ml/classify",
            &json!({"image_data": pixels, "top_k": 10}),
        )
        .await;
    assert_eq!(status, 200, "{reference}");
    let rows: Vec<&[f32]> = pixels.chunks(28).collect();
    let (status, probabilities) = server
        .post(
            "/api/v1/ml/classify",
            &json!({"image_data": [[rows]], "model_name": "flat", "top_k": 10}),
        )
        .await;
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
    let (status, body) = server
        .post(
            "/api/v1/ml/inference",
            &json!({"model_name": "flat", "input_data": pixels, "input_shape": [1, 1, 28, 28]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outputs"][0]["name"], "probabilities");
    assert_eq!(body["outputs"][0]["shape"], json!([1, 10]));
}
