//! Pictures and text in, through the front ends: a transformers image classifier with
//! `[preprocess.image]` and a BERT encoder with `[preprocess.text]` (the committed torch
//! exports) answer the ML API's picture and text routes and V2's BYTES `image` and `text`
//! inputs over REST and gRPC alike; bad pictures, texts and declarations are refused with the
//! reason. (The comparison with torchvision's and Hugging Face's own preprocessing, on
//! photographs and thousands of sentences: the full lane's `preprocess` test.)

use std::io::Cursor;
use std::path::Path;

use crate::grpc::proto::model_infer_request::InferInputTensor;
use crate::grpc::proto::{InferTensorContents, ModelInferRequest};
use image::{ImageFormat, Rgb, RgbImage};
use serde_json::{Value, json};

use crate::tests::support::{Options, Server, binary_request, floats, post};

const TOKENIZER: &str = include_str!("../../../aicp-transform/src/testdata/wordpiece.json");

fn exported(name: &str) -> std::path::PathBuf {
    aicp_testkit::repo_root()
        .join("crates/aicp-cli/tests/fixtures/exported")
        .join(name)
}

/// Puts `onnx` in `root/name/1` with `toml` beside it.
fn model(root: &Path, name: &str, onnx: &str, toml: &str) {
    std::fs::create_dir_all(root.join(name).join("1")).unwrap();
    std::fs::copy(exported(onnx), root.join(name).join("1/model.onnx")).unwrap();
    std::fs::write(root.join(name).join("model.toml"), toml).unwrap();
}

const PHOTO: &str = r#"
labels = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]
[preprocess.image]
resize = 40
crop = [32, 32]
mean = [0.5, 0.5, 0.5]
std = [0.25, 0.25, 0.25]
"#;

const ENCODER: &str = r#"
[preprocess.text]
max_length = 16
"#;

/// A served directory: `photo` (pictures), `encoder` (texts, embeddings by default) and
/// `head` (the encoder's pooler output as 32 classes).
async fn server() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    model(dir.path(), "photo", "image_classifier.onnx", PHOTO);
    for (name, toml) in [
        ("encoder", ENCODER.to_string()),
        (
            "head",
            format!(
                "{ENCODER}[postprocess]\nkind = \"classification\"\noutput = \"pooler_output\"\n"
            ),
        ),
    ] {
        model(dir.path(), name, "text_encoder.onnx", &toml);
        std::fs::write(dir.path().join(name).join("tokenizer.json"), TOKENIZER).unwrap();
    }
    let server = Server::start(dir.path(), Options::default()).await;
    (dir, server)
}

/// A `width` x `height` PNG of colours that vary across it.
fn png(width: u32, height: u32) -> Vec<u8> {
    let image = RgbImage::from_fn(width, height, |x, y| {
        Rgb([(x * 5) as u8, (y * 3) as u8, ((x + y) * 2) as u8])
    });
    let mut bytes = Cursor::new(Vec::new());
    image.write_to(&mut bytes, ImageFormat::Png).unwrap();
    bytes.into_inner()
}

/// `elements` as the binary extension lays BYTES out: each a 4-byte length and its bytes.
fn length_prefixed(elements: &[&[u8]]) -> Vec<u8> {
    let mut raw = Vec::new();
    for element in elements {
        raw.extend_from_slice(&(element.len() as u32).to_le_bytes());
        raw.extend_from_slice(element);
    }
    raw
}

/// V2 REST with one BYTES input `name` of `elements`, asking for `output` in binary; the
/// status, and the output's bytes (or the error's JSON).
async fn v2_bytes(
    server: &Server,
    (model, output): (&str, &str),
    name: &str,
    elements: &[&[u8]],
) -> (u16, Vec<u8>) {
    let raw = length_prefixed(elements);
    let header = json!({
        "inputs": [{"name": name, "datatype": "BYTES", "shape": [elements.len()],
                    "parameters": {"binary_data_size": raw.len()}}],
        "outputs": [{"name": output, "parameters": {"binary_data": true}}],
    });
    let path = format!("/v2/models/{model}/infer");
    let response = server
        .call(binary_request(&path, &header, &raw, None))
        .await;
    let status = response.status().as_u16();
    let length: Option<usize> = response
        .headers()
        .get("inference-header-content-length")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, body[length.unwrap_or(0)..].to_vec())
}

const PHOTO_LOGITS: (&str, &str) = ("photo", "logits");
const ENCODER_HIDDEN: (&str, &str) = ("encoder", "last_hidden_state");

fn softmax(row: &[f32]) -> Vec<f32> {
    aicp_runtime::softmax(row)
}

#[tokio::test]
async fn a_picture_is_classified_alike_over_the_ml_api_v2_rest_and_grpc() {
    let (_dir, server) = server().await;
    let picture = png(90, 60);
    let (status, _, answer) = server
        .send(post(
            "/api/v1/ml/classify/image?model=photo&top_k=10",
            "image/png",
            picture.clone(),
        ))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (
            answer["picture"]["width"].as_u64(),
            answer["picture"]["height"].as_u64()
        ),
        (Some(90), Some(60))
    );
    assert!(answer["picture"].get("inverted").is_none(), "{answer}");
    assert!(answer.get("preprocessed").is_none());
    let predictions = answer["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 10);

    let (status, logits) = v2_bytes(&server, PHOTO_LOGITS, "image", &[&picture, &picture]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&logits));
    let logits = floats(&logits);
    assert_eq!(logits.len(), 20);
    assert_eq!(
        logits[..10],
        logits[10..],
        "the same picture twice, the same answer"
    );
    let probabilities = softmax(&logits[..10]);
    for prediction in predictions {
        let class = prediction["class"].as_u64().unwrap() as usize;
        let label = ((b'a' + class as u8) as char).to_string();
        assert_eq!(prediction["label"], Value::String(label));
        let confidence = prediction["confidence"].as_f64().unwrap() as f32;
        assert!(
            (confidence - probabilities[class]).abs() < 1e-6,
            "{prediction}"
        );
    }

    let mut client = server.grpc().await;
    let answer = client
        .model_infer(ModelInferRequest {
            model_name: "photo".into(),
            inputs: vec![InferInputTensor {
                name: "image".into(),
                datatype: "BYTES".into(),
                shape: vec![1],
                contents: Some(InferTensorContents {
                    bytes_contents: vec![picture.clone()],
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let over_grpc = match answer.raw_output_contents.first() {
        Some(raw) => floats(raw),
        None => answer.outputs[0].contents.clone().unwrap().fp32_contents,
    };
    assert_eq!(over_grpc, logits[..10]);
}

#[tokio::test]
async fn bad_pictures_get_the_status_that_names_what_is_wrong() {
    let (_dir, server) = server().await;
    let classify = |body: Vec<u8>, content_type: &'static str| {
        post("/api/v1/ml/classify/image?model=photo", content_type, body)
    };
    let (status, _, body) = server
        .send(classify(b"not a picture".to_vec(), "image/png"))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a picture"),
        "{body}"
    );
    let (status, _, body) = server
        .send(classify(aicp_testkit::pictures::bomb(), "image/png"))
        .await;
    assert_eq!(status, 413, "{body}");
    // A text model takes no pictures.
    let (status, _, body) = server
        .send(post(
            "/api/v1/ml/classify/image?model=encoder",
            "image/png",
            png(40, 40),
        ))
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("[preprocess.image]"),
        "{body}"
    );
    // V2: a broken picture among good ones, and a shape that is not one picture per sample.
    let good = png(50, 50);
    let (status, body) =
        v2_bytes(&server, PHOTO_LOGITS, "image", &[&good, b"\x89PNG broken"]).await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let raw = length_prefixed(&[&good]);
    let header = json!({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1, 1],
        "parameters": {"binary_data_size": raw.len()}}]});
    let response = server
        .call(binary_request(
            "/v2/models/photo/infer",
            &header,
            &raw,
            None,
        ))
        .await;
    assert_eq!(response.status().as_u16(), 400);
    // The model still serves.
    let (status, _) = v2_bytes(&server, PHOTO_LOGITS, "image", &[&good]).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn texts_are_embedded_classified_and_tokenised_by_the_models_tokenizer() {
    let (_dir, server) = server().await;
    let (status, tokens) = server
        .post(
            "/api/v1/ml/tokenize",
            &json!({"inputs": "The cats sat.", "model_name": "encoder"}),
        )
        .await;
    assert_eq!(status, 200, "{tokens}");
    let words: Vec<_> = tokens[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["text"].as_str().unwrap())
        .collect();
    assert_eq!(words, ["[CLS]", "the", "cat", "##s", "sat", ".", "[SEP]"]);
    assert_eq!(
        tokens[0][2],
        json!({"id": 5, "text": "cat", "special": false, "start": 4, "stop": 7})
    );

    // The only embedding model is found without a name, as TEI's clients send none.
    let (status, vectors) = server
        .post(
            "/api/v1/ml/embed",
            &json!({"inputs": ["the cat sat on the mat", "on"]}),
        )
        .await;
    assert_eq!(status, 200, "{vectors}");
    let vectors: Vec<Vec<f32>> = serde_json::from_value(vectors).unwrap();
    assert_eq!(vectors.len(), 2);
    for vector in &vectors {
        assert_eq!(vector.len(), 32);
        let norm: f32 = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
    }
    // Padding the shorter text to the longer one's length changes nothing: the mask keeps it
    // out of the mean.
    let (_, alone) = server
        .post(
            "/api/v1/ml/embed",
            &json!({"inputs": "on", "normalize": true}),
        )
        .await;
    let alone: Vec<Vec<f32>> = serde_json::from_value(alone).unwrap();
    let most = alone[0]
        .iter()
        .zip(&vectors[1])
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(most < 1e-5, "{most}");

    let (status, one) = server
        .post(
            "/api/v1/ml/classify/text",
            &json!({"inputs": "the cat", "top_k": 3}),
        )
        .await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one.as_array().unwrap().len(), 3, "one text: one list");
    let (status, two) = server
        .post(
            "/api/v1/ml/classify/text",
            &json!({"inputs": ["the cat", "mat"]}),
        )
        .await;
    assert_eq!(status, 200, "{two}");
    assert_eq!(two.as_array().unwrap().len(), 2);
    assert_eq!(
        two[0].as_array().unwrap().len(),
        32,
        "every class by default"
    );
    let total: f64 = two[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["score"].as_f64().unwrap())
        .sum();
    assert!((total - 1.0).abs() < 1e-4, "{total}");

    // V2: the BYTES input "text" gives the encoder's own outputs.
    let (status, hidden) =
        v2_bytes(&server, ENCODER_HIDDEN, "text", &[b"the cat sat", b"mat"]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&hidden));
    assert_eq!(
        floats(&hidden).len(),
        2 * 5 * 32,
        "two texts padded to 5 tokens"
    );
}

#[tokio::test]
async fn bad_texts_get_a_clear_refusal() {
    let (_dir, server) = server().await;
    let refused = |body: Value, says: &'static str| {
        let server = &server;
        async move {
            let (status, answer) = server.post("/api/v1/ml/embed", &body).await;
            assert_eq!(status, 422, "{answer}");
            let message = answer["error"]["message"].as_str().unwrap().to_string();
            assert!(message.contains(says), "{message:?} should say {says:?}");
        }
    };
    refused(json!({"inputs": [], "model_name": "encoder"}), "no text").await;
    refused(
        json!({"inputs": "a", "model_name": "photo"}),
        "[preprocess.text]",
    )
    .await;
    refused(json!({"inputs": 7}), "inputs").await;
    let (status, answer) = server
        .post(
            "/api/v1/ml/embed",
            &json!({"inputs": "a", "model_name": "nope"}),
        )
        .await;
    assert_eq!(status, 404, "{answer}");
    // Two models take text: classify/text finds the one that classifies, tokenize needs a name.
    let (status, answer) = server
        .post("/api/v1/ml/tokenize", &json!({"inputs": "a"}))
        .await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("encoder, head"),
        "{answer}"
    );
    // A text longer than the body limit (4 MiB here) is refused before it is read whole.
    let long = "word ".repeat(1 << 20);
    let (status, answer) = server
        .post("/api/v1/ml/embed", &json!({"inputs": long}))
        .await;
    assert_eq!(status, 413, "{answer}");
    let (status, body) = v2_bytes(&server, ENCODER_HIDDEN, "text", &[b"\xff\xfe"]).await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("not UTF-8"));
}

/// The id of "cats"'s first word piece, with the encoder's tokenizer now.
async fn cats_token(server: &Server) -> Value {
    let body = json!({"inputs": "cats", "model_name": "encoder"});
    server.post("/api/v1/ml/tokenize", &body).await.1[0][1]["id"].clone()
}

#[tokio::test]
async fn a_changed_tokenizer_reloads_the_model() {
    let (dir, server) = server().await;
    assert_eq!(cats_token(&server).await, 5);
    // The same tokenizer with "cat" at another id: the watcher sees the file beside
    // model.toml change, and the model is loaded again with it.
    let changed = TOKENIZER
        .replace("\"cat\": 5", "\"cat\":  8")
        .replace("\"mat\": 8", "\"mat\": 5");
    std::fs::write(dir.path().join("encoder/tokenizer.json"), changed).unwrap();
    for _ in 0..2 {
        let control = server.control.clone();
        tokio::task::spawn_blocking(move || control.poll())
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(cats_token(&server).await, 8);
}

#[tokio::test]
async fn declarations_that_cannot_serve_the_model_fail_its_load_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    model(root, "bad_tokenizer", "text_encoder.onnx", ENCODER);
    std::fs::write(root.join("bad_tokenizer/tokenizer.json"), "{\"model\": 3}").unwrap();
    model(root, "no_tokenizer", "text_encoder.onnx", ENCODER);
    model(
        root,
        "escaping",
        "text_encoder.onnx",
        "[preprocess.text]\ntokenizer = \"../escaping/tokenizer.json\"\n",
    );
    model(
        root,
        "gray",
        "image_classifier.onnx",
        "[preprocess.image]\ncolor = \"gray\"\n",
    );
    model(
        root,
        "no_output",
        "image_classifier.onnx",
        "[preprocess.image]\ncrop = [32, 32]\n[postprocess]\noutput = \"scores\"\n",
    );
    let server = Server::start(root, Options::default()).await;
    let mut reasons = std::collections::HashMap::new();
    for name in [
        "bad_tokenizer",
        "no_tokenizer",
        "escaping",
        "gray",
        "no_output",
    ] {
        reasons.insert(name, server.failure_reason(name).await);
    }
    let reason = |name: &str| reasons[name].clone();
    assert!(reason("bad_tokenizer").contains("not a Hugging Face tokenizer.json"));
    assert!(reason("no_tokenizer").contains("tokenizer.json"));
    assert!(reason("escaping").contains("inside the model's directory"));
    assert!(
        reason("gray").contains("color = \"gray\" gives 1"),
        "{}",
        reason("gray")
    );
    assert!(
        reason("no_output").contains("no such output"),
        "{}",
        reason("no_output")
    );
}
