//! Pictures of digits: MNIST's held-out digits written as PNG and JPEG files (plain, inverted,
//! off-centre, scaled up, drawn on the page's pad), classified through the image path by both
//! bundled models; the bundled CNN's accuracy through the ML API and the image endpoint; the
//! image endpoint raw and multipart, with `debug`; and bad pictures refused with the right
//! status. (`aicp predict` on a picture: the full lane's end-to-end tests.)

use aicp_engine::tract::TractEngine;
use aicp_engine::{Engine, Runnable, onnx};
use aicp_testkit::pictures::{VARIANTS, Variant, bomb, encode, picture};
use aicp_testkit::{bundled_model, digits};
use image::{GrayImage, ImageFormat};
use serde_json::Value;

use crate::tests::support::{Options, Server, post};

/// The bundled models that read 28x28 digits.
const MODELS: [&str; 2] = ["mnist", "mnist-cnn"];

/// A bundled model on tract, in this process.
fn model(name: &str) -> Box<dyn Runnable> {
    let file = bundled_model(name);
    let info = onnx::inspect(&file).unwrap();
    TractEngine
        .load(&file, &info.signature, &Default::default())
        .unwrap()
}

fn best(row: &[f32]) -> usize {
    (0..row.len())
        .max_by(|&a, &b| row[a].total_cmp(&row[b]))
        .unwrap()
}

/// How many of `images` (each 784 values in [0, 1]) the model gets right.
fn correct(model: &mut dyn Runnable, images: &[Vec<f32>], labels: &[u8]) -> usize {
    let input = aicp_core::Tensor::new(vec![images.len(), 1, 28, 28], images.concat()).unwrap();
    let logits = model.run(vec![input.into()]).unwrap().remove(0);
    logits
        .as_f32()
        .unwrap()
        .chunks(10)
        .zip(labels)
        .filter(|(row, label)| best(row) == usize::from(**label))
        .count()
}

/// The picture as the image path gives it to the model.
fn through_image_path(bytes: &[u8]) -> Vec<f32> {
    let image = aicp_image::decode(bytes, aicp_image::DecodeLimits::default()).unwrap();
    let digit = aicp_image::preprocess(&image).unwrap();
    digit.pixels.iter().map(|&p| f32::from(p) / 255.0).collect()
}

#[test]
fn accuracy_holds_through_pictures() {
    let samples = digits(2000);
    let labels: Vec<u8> = samples.iter().map(|(_, label)| *label).collect();
    let floats: Vec<Vec<f32>> = samples.iter().map(|(pixels, _)| pixels.clone()).collect();
    let total = samples.len() as f64;
    let pictures: Vec<(Variant, Vec<Vec<f32>>)> = VARIANTS
        .iter()
        .map(|&variant| {
            let seen = floats
                .iter()
                .map(|pixels| through_image_path(&picture(pixels, variant)))
                .collect();
            (variant, seen)
        })
        .collect();
    for name in MODELS {
        let mut model = model(name);
        let baseline = correct(model.as_mut(), &floats, &labels);
        println!("{name}: float path {:.2}%", 100.0 * baseline as f64 / total);
        for (variant, seen) in &pictures {
            let right = correct(model.as_mut(), seen, &labels);
            let gap = 100.0 * (baseline as f64 - right as f64) / total;
            println!(
                "{name}: {variant:?} {:.2}% ({gap:+.2} points below the float path)",
                100.0 * right as f64 / total
            );
            assert!(
                gap <= 1.0,
                "{name}: {variant:?} pictures lose {gap:.2} points of accuracy (float path {baseline}, pictures {right} of {total})"
            );
        }
    }
}

/// A multipart/form-data body with one file field.
fn multipart(field: &str, bytes: &[u8], media_type: &str) -> (String, Vec<u8>) {
    let boundary = "aicp-test-boundary-7MA4YWxkTrZu0gW";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"digit\"\r\n\
         Content-Type: {media_type}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Posts a picture to the image endpoint with `query`.
async fn classify(
    server: &Server,
    query: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (u16, Value) {
    let path = format!("/api/v1/ml/classify/image{query}");
    let request = match content_type {
        Some(content_type) => post(&path, content_type, body),
        None => axum::http::Request::post(path).body(body.into()).unwrap(),
    };
    let (status, _, answer) = server.send(request).await;
    (status, answer)
}

/// The bundled CNN as a user reaches it: all 2,000 held-out digits through
/// `/api/v1/ml/classify` give the accuracy its training report states (at least 98%), and the
/// same digits as the page's pictures through the image endpoint stay within a point of it.
#[tokio::test]
async fn the_bundled_cnn_reads_the_held_out_digits() {
    let server = Server::bundled().await;
    let samples = digits(2000);
    let mut right = 0;
    for chunk in samples.chunks(200) {
        let images: Vec<&Vec<f32>> = chunk.iter().map(|(pixels, _)| pixels).collect();
        let (status, answer) = server
            .post(
                "/api/v1/ml/classify",
                &serde_json::json!({"image_data": images, "model_name": "mnist-cnn", "top_k": 1}),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        let results = answer["results"].as_array().unwrap();
        assert_eq!(results.len(), chunk.len());
        right += results
            .iter()
            .zip(chunk)
            .filter(|(result, (_, label))| result["predictions"][0]["class"] == *label)
            .count();
    }
    let total = samples.len() as f64;
    let accuracy = right as f64 / total;
    let report: Value = serde_json::from_slice(
        &std::fs::read(aicp_testkit::bundled_models().join("mnist-cnn/1/training_report.json"))
            .unwrap(),
    )
    .unwrap();
    let reported = report["test_accuracy"].as_f64().unwrap();
    println!(
        "mnist-cnn over /api/v1/ml/classify: {:.2}% (report: {:.2}%)",
        100.0 * accuracy,
        100.0 * reported
    );
    // The served engine may differ from burn in the last bits: one digit at most changes side.
    assert!(
        (accuracy - reported).abs() <= 1.0 / total,
        "{accuracy} vs {reported}"
    );
    assert!(accuracy >= 0.98, "{accuracy}");

    let mut pictures_right = 0;
    for (pixels, label) in &samples {
        let (status, answer) = classify(
            &server,
            "?model_name=mnist-cnn&top_k=1",
            Some("image/png"),
            picture(pixels, Variant::Page),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        pictures_right += usize::from(answer["predictions"][0]["class"] == *label);
    }
    let gap = 100.0 * (right as f64 - pictures_right as f64) / total;
    println!(
        "mnist-cnn over the image endpoint, the page's pictures: {:.2}% ({gap:+.2} points below)",
        100.0 * pictures_right as f64 / total
    );
    assert!(gap <= 1.0, "pictures lose {gap:.2} points");
}

#[tokio::test]
async fn the_image_endpoint_classifies_pictures_and_shows_what_the_model_saw() {
    let server = Server::bundled().await;
    let mut model = model("mnist");
    for (pixels, _) in digits(12) {
        let png = picture(&pixels, Variant::Inverted);
        let (status, answer) = classify(
            &server,
            "?top_k=3&debug=true",
            Some("image/png"),
            png.clone(),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["model_name"], "mnist");
        assert_eq!(answer["predictions"].as_array().unwrap().len(), 3);
        assert_eq!(answer["picture"]["inverted"], true);
        assert_eq!(answer["picture"]["width"], 28);
        // What the model saw is what the image path gives, and the answer is the model's on it.
        let rows: Vec<Vec<u8>> = serde_json::from_value(answer["preprocessed"].clone()).unwrap();
        assert_eq!((rows.len(), rows[0].len()), (28, 28));
        let seen: Vec<f32> = rows
            .concat()
            .iter()
            .map(|&p| f32::from(p) / 255.0)
            .collect();
        assert_eq!(seen, through_image_path(&png));
        let input = aicp_core::Tensor::new(vec![1, 1, 28, 28], seen).unwrap();
        let logits = model.run(vec![input.into()]).unwrap().remove(0);
        let best = best(logits.as_f32().unwrap());
        assert_eq!(answer["predictions"][0]["class"], best, "{answer}");

        // The same picture as JPEG in a multipart form, without debug.
        let (content_type, body) =
            multipart("image", &picture(&pixels, Variant::Scaled), "image/jpeg");
        let (status, answer) =
            classify(&server, "?model_name=mnist", Some(&content_type), body).await;
        assert_eq!(status, 200, "{answer}");
        assert!(answer.get("preprocessed").is_none());
        assert_eq!(answer["predictions"].as_array().unwrap().len(), 5);
    }
}

#[tokio::test]
async fn bad_pictures_get_clear_errors_and_never_hurt_the_server() {
    let options = Options {
        max_body_bytes: 2_000_000,
        ..Options::default()
    };
    let server = Server::start(&aicp_testkit::bundled_models(), options).await;
    let (pixels, _) = digits(1).remove(0);
    let png = picture(&pixels, Variant::Png);
    let message = |answer: &Value| {
        answer["error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };

    // (case, Content-Type, body, expected status, expected in the message)
    type Case<'a> = (&'a str, Option<&'a str>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "not a picture",
            Some("image/png"),
            b"hello, world".to_vec(),
            400,
            "not a picture",
        ),
        (
            "truncated",
            Some("image/png"),
            png[..png.len() / 2].to_vec(),
            400,
            "broken",
        ),
        ("empty", Some("image/png"), Vec::new(), 400, "empty"),
        (
            "wrong type",
            Some("text/plain"),
            png.clone(),
            415,
            "expected a picture",
        ),
        ("no type", None, png.clone(), 415, "no Content-Type"),
        (
            "blank",
            Some("image/png"),
            encode(&GrayImage::new(40, 40), ImageFormat::Png),
            422,
            "blank",
        ),
        (
            "too large a body",
            Some("image/png"),
            vec![0; 2_100_000],
            413,
            "",
        ),
        (
            "a decompression bomb",
            Some("image/png"),
            bomb(),
            413,
            "too large",
        ),
        (
            "tiff",
            Some("image/png"),
            b"II*\0\x08\0\0\0".to_vec(),
            415,
            "not supported",
        ),
    ];
    for (case, content_type, body, status, says) in cases {
        let (got, answer) = classify(&server, "", content_type, body).await;
        assert_eq!(got, status, "{case}: {answer}");
        assert!(message(&answer).contains(says), "{case}: {answer}");
    }
    let (content_type, body) = multipart("picture", &png, "image/png");
    let (status, answer) = classify(&server, "", Some(&content_type), body).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        message(&answer).contains("no field named \"image\""),
        "{answer}"
    );
    for (query, status) in [
        ("?top_k=0", 422),
        ("?model_name=nope", 404),
        ("?colour=red", 422),
    ] {
        let (got, answer) = classify(&server, query, Some("image/png"), png.clone()).await;
        assert_eq!(got, status, "{query}: {answer}");
    }

    // Every one of those left the server serving.
    let (status, answer) = classify(&server, "", Some("image/png"), png).await;
    assert_eq!(status, 200, "{answer}");
}
