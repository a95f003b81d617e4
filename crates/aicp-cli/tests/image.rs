//! Pictures of digits: MNIST's held-out digits written as PNG and JPEG files (plain, inverted,
//! off-centre, scaled up, drawn on the page's pad), classified through the image path by both
//! bundled models; the bundled CNN's accuracy over HTTP through the ML API and the image
//! endpoint; the image endpoint of the real server, raw and multipart, with `debug`; bad
//! pictures refused with the right status; and `aicp predict` on a picture.

mod common;

use std::io::Cursor;
use std::process::Command;

use aicp_engine::{Engine, Runnable, onnx, tract::TractEngine};
use common::{Server, digits, json_of, repo_root};
use image::codecs::jpeg::JpegEncoder;
use image::{GrayImage, ImageFormat};
use serde_json::Value;

/// How a held-out digit is turned into a picture.
#[derive(Debug, Clone, Copy)]
enum Variant {
    /// The 28x28 digit as it is, light on dark, PNG.
    Png,
    /// Dark ink on white paper, PNG.
    Inverted,
    /// JPEG at quality 85.
    Jpeg,
    /// In a corner of a 90x70 picture, PNG.
    OffCentre,
    /// Three times larger, dark on light, in a 110x100 picture, JPEG: a photo-like input.
    Scaled,
    /// What the drawing page sends for a dropped picture: drawn to fill its 280x280 white pad
    /// (smoothed, as a canvas scales), dark on light, PNG.
    Page,
}

const VARIANTS: [Variant; 6] = [
    Variant::Png,
    Variant::Inverted,
    Variant::Jpeg,
    Variant::OffCentre,
    Variant::Scaled,
    Variant::Page,
];

/// The bundled models that read 28x28 digits.
const MODELS: [&str; 2] = ["mnist", "mnist-cnn"];

fn gray(pixels: &[f32]) -> GrayImage {
    let bytes = pixels.iter().map(|&p| (p * 255.0).round() as u8).collect();
    GrayImage::from_raw(28, 28, bytes).unwrap()
}

fn encode(image: &GrayImage, format: ImageFormat) -> Vec<u8> {
    let mut bytes = Cursor::new(Vec::new());
    match format {
        ImageFormat::Jpeg => image
            .write_with_encoder(JpegEncoder::new_with_quality(&mut bytes, 85))
            .unwrap(),
        _ => image.write_to(&mut bytes, format).unwrap(),
    }
    bytes.into_inner()
}

fn on_canvas(digit: &GrayImage, width: u32, height: u32, x: i64, y: i64) -> GrayImage {
    let mut canvas = GrayImage::new(width, height);
    image::imageops::overlay(&mut canvas, digit, x, y);
    canvas
}

fn picture(pixels: &[f32], variant: Variant) -> Vec<u8> {
    let digit = gray(pixels);
    match variant {
        Variant::Png => encode(&digit, ImageFormat::Png),
        Variant::Inverted => {
            let mut inverted = digit;
            image::imageops::invert(&mut inverted);
            encode(&inverted, ImageFormat::Png)
        }
        Variant::Jpeg => encode(&digit, ImageFormat::Jpeg),
        Variant::OffCentre => encode(&on_canvas(&digit, 90, 70, 55, 4), ImageFormat::Png),
        Variant::Scaled => {
            let large =
                image::imageops::resize(&digit, 84, 84, image::imageops::FilterType::Triangle);
            let mut photo = on_canvas(&large, 110, 100, 6, 9);
            image::imageops::invert(&mut photo);
            encode(&photo, ImageFormat::Jpeg)
        }
        Variant::Page => {
            let mut pad =
                image::imageops::resize(&digit, 280, 280, image::imageops::FilterType::Triangle);
            image::imageops::invert(&mut pad);
            encode(&pad, ImageFormat::Png)
        }
    }
}

/// A bundled model on tract, in this process.
fn model(name: &str) -> Box<dyn Runnable> {
    let file = repo_root().join(format!("models/{name}/1/model.onnx"));
    let info = onnx::inspect(&file).unwrap();
    TractEngine
        .load(&file, &info.signature, &Default::default())
        .unwrap()
}

/// How many of `images` (each 784 values in [0, 1]) the model gets right.
fn correct(model: &mut dyn Runnable, images: &[Vec<f32>], labels: &[u8]) -> usize {
    let input = aicp_core::Tensor::new(vec![images.len(), 1, 28, 28], images.concat()).unwrap();
    let logits = model.run(vec![input.into()]).unwrap().remove(0).data;
    logits
        .chunks(10)
        .zip(labels)
        .filter(|(row, label)| {
            let best = (0..10).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
            best == usize::from(**label)
        })
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

/// The bundled CNN over HTTP, as a user reaches it: all 2,000 held-out digits through
/// `/api/v1/ml/classify` give the accuracy its training report states (at least 98%), and the
/// same digits as the page's pictures through the image endpoint stay within a point of it.
#[test]
fn the_bundled_cnn_reads_the_held_out_digits_over_http() {
    let server = Server::start(&repo_root().join("models"), &[]);
    let samples = digits(2000);
    let mut right = 0;
    for chunk in samples.chunks(200) {
        let images: Vec<&Vec<f32>> = chunk.iter().map(|(pixels, _)| pixels).collect();
        let (status, answer) = server.post(
            "/api/v1/ml/classify",
            &serde_json::json!({"image_data": images, "model_name": "mnist-cnn", "top_k": 1}),
        );
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
        &std::fs::read(repo_root().join("models/mnist-cnn/1/training_report.json")).unwrap(),
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
        let (status, answer) = post(
            &server,
            "?model_name=mnist-cnn&top_k=1",
            Some("image/png"),
            picture(pixels, Variant::Page),
        );
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

fn post(server: &Server, query: &str, content_type: Option<&str>, body: Vec<u8>) -> (u16, Value) {
    let mut request = server
        .client
        .post(format!("{}/api/v1/ml/classify/image{query}", server.base))
        .body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    json_of(request.send().unwrap())
}

#[test]
fn the_image_endpoint_classifies_pictures_and_shows_what_the_model_saw() {
    let server = Server::start(&repo_root().join("models"), &[]);
    let mut model = model("mnist");
    for (pixels, _) in digits(12) {
        let png = picture(&pixels, Variant::Inverted);
        let (status, answer) = post(
            &server,
            "?top_k=3&debug=true",
            Some("image/png"),
            png.clone(),
        );
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
        let logits = model.run(vec![input.into()]).unwrap().remove(0).data;
        let best = (0..10)
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
            .unwrap();
        assert_eq!(answer["predictions"][0]["class"], best, "{answer}");

        // The same picture as JPEG in a multipart form, without debug.
        let (content_type, body) =
            multipart("image", &picture(&pixels, Variant::Scaled), "image/jpeg");
        let (status, answer) = post(&server, "?model_name=mnist", Some(&content_type), body);
        assert_eq!(status, 200, "{answer}");
        assert!(answer.get("preprocessed").is_none());
        assert_eq!(answer["predictions"].as_array().unwrap().len(), 5);
    }
}

#[test]
fn bad_pictures_get_clear_errors_and_never_hurt_the_server() {
    let server = Server::start(
        &repo_root().join("models"),
        &["--max-body-bytes", "2000000"],
    );
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
        let (got, answer) = post(&server, "", content_type, body);
        assert_eq!(got, status, "{case}: {answer}");
        assert!(message(&answer).contains(says), "{case}: {answer}");
    }
    let (content_type, body) = multipart("picture", &png, "image/png");
    let (status, answer) = post(&server, "", Some(&content_type), body);
    assert_eq!(status, 400, "{answer}");
    assert!(
        message(&answer).contains("no field named \"image\""),
        "{answer}"
    );
    let (status, answer) = post(&server, "?top_k=0", Some("image/png"), png.clone());
    assert_eq!(status, 422, "{answer}");
    let (status, answer) = post(&server, "?model_name=nope", Some("image/png"), png.clone());
    assert_eq!(status, 404, "{answer}");
    let (status, answer) = post(&server, "?colour=red", Some("image/png"), png.clone());
    assert_eq!(status, 422, "{answer}");

    // Every one of those left the server serving.
    let (status, answer) = post(&server, "", Some("image/png"), png);
    assert_eq!(status, 200, "{answer}");
}

/// A real decompression bomb: a PNG of 8193 x 8193 blank pixels, 67 MB decoded from a few
/// hundred kB, and one pixel a side over the decoder's limit.
fn bomb() -> Vec<u8> {
    encode(&GrayImage::new(8193, 8193), ImageFormat::Png)
}

#[test]
fn predict_classifies_a_picture_file() {
    let dir = tempfile::tempdir().unwrap();
    let (pixels, label) = digits(1).remove(0);
    let file = dir.path().join("digit.jpg");
    std::fs::write(&file, picture(&pixels, Variant::Scaled)).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_aicp"))
        .current_dir(repo_root())
        .args(["predict", "--model", "mnist", "--top-k", "3", "--debug"])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("picture 110x100, dark on light: inverted"),
        "{stdout}"
    );
    // 28 rows of the picture the model saw, then the model, then 3 classes, best first.
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with('|')).count(),
        28,
        "{stdout}"
    );
    let classes: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("model mnist"))
        .skip(1)
        .collect();
    assert_eq!(classes.len(), 3, "{stdout}");
    assert_eq!(
        classes[0].split_whitespace().next(),
        Some(label.to_string().as_str()),
        "{stdout}"
    );

    // The CNN, by name, unchanged.
    let output = Command::new(env!("CARGO_BIN_EXE_aicp"))
        .current_dir(repo_root())
        .args(["predict", "--model", "mnist-cnn", "--top-k", "1"])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    let best = stdout
        .lines()
        .skip_while(|l| !l.starts_with("model mnist-cnn"))
        .nth(1);
    assert_eq!(
        best.and_then(|l| l.split_whitespace().next()),
        Some(label.to_string().as_str()),
        "{stdout}"
    );

    let broken = dir.path().join("broken.png");
    std::fs::write(&broken, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_aicp"))
        .current_dir(repo_root())
        .args(["predict", "--model", "mnist"])
        .arg(&broken)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("broken.png") && stderr.contains("broken"),
        "{stderr}"
    );
}
