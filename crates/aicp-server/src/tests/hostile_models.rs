//! Hostile model files beside a good model, on tract: weights stored as external data outside
//! the model directory (an absolute path, `../`, a symbolic link out), absurd declared
//! dimensions, truncated, empty and garbage files. Each is refused with a reason, no byte
//! outside the model directory is read into a model, and the good model serves throughout.
//! (The same files on ONNX Runtime: the full lane's `aicp-cli` end-to-end tests.)

use aicp_testkit::digits;
use aicp_testkit::fixtures;
use serde_json::{Value, json};

use crate::tests::support::{Options, Server};

#[tokio::test]
async fn hostile_model_files_are_refused_by_tract_with_a_reason() {
    let root = fixtures::hostile_repository("tract");
    let models = root.path().join("models");
    let server = Server::start(&models, Options::default()).await;

    let (status, index) = server.post("/v2/repository/index", &json!({})).await;
    assert_eq!(status, 200, "{index}");
    fixtures::assert_hostile_refused(&index, "tract");
    // The good model serves.
    let (pixels, label) = digits(1).remove(0);
    let (status, answer) = server
        .post(
            "/api/v1/ml/classify",
            &json!({"image_data": pixels, "top_k": 1}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["predictions"][0]["class"], Value::from(label));
    let (status, refused) = server
        .post(
            "/api/v1/ml/classify",
            &json!({"model_name": "ext_parent", "image_data": pixels}),
        )
        .await;
    assert!(status == 503 || status == 404, "{status}: {refused}");
}
