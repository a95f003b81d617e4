//! The page at `/`, in a real browser: headless Chromium (Debian's `chromium`, driven by
//! `playwright-core`; scripts/test.sh installs both) draws a digit on the canvas, picks a
//! picture file and drops it on the pad, and opens the page on a phone-sized screen. Screenshots are kept as test
//! artifacts in `<target>/tmp/web/`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::common::{Server, digits, repo_root, run_bounded};
use serde_json::Value;

fn playwright_core() -> PathBuf {
    std::env::var_os("AICP_PLAYWRIGHT_CORE")
        .map(Into::into)
        .unwrap_or_else(|| repo_root().join(".venv/node/node_modules/playwright-core"))
}

/// Runs the browser script against `server` (killed after two minutes); what it saw.
fn browse(server: &Server, shots: &std::path::Path, api_key: Option<&str>) -> Value {
    std::fs::create_dir_all(shots).unwrap();
    // A picture of a held-out digit, dark on light, for the file picker.
    let (pixels, _) = digits(1).remove(0);
    let bytes: Vec<u8> = pixels
        .iter()
        .map(|&p| 255 - (p * 255.0).round() as u8)
        .collect();
    let picture = shots.join("digit.png");
    image::GrayImage::from_raw(28, 28, bytes)
        .unwrap()
        .save(&picture)
        .unwrap();
    let output = run_bounded(
        Command::new("node")
            .arg(repo_root().join("crates/aicp-cli/tests/web/page.cjs"))
            .arg(&server.base)
            .arg(shots)
            .arg(&picture)
            .args(api_key)
            .env("AICP_PLAYWRIGHT_CORE", playwright_core()),
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser test failed:\n{stdout}\n{stderr}"
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn is_png(path: &std::path::Path) -> bool {
    std::fs::read(path).is_ok_and(|bytes| bytes.starts_with(b"\x89PNG"))
}

#[test]
fn a_digit_drawn_in_the_browser_is_classified() {
    let server = Server::start(&repo_root().join("models"), &[]);
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web");
    let seen = browse(&server, &shots, None);
    println!("{seen}\nscreenshots in {}", shots.display());

    // Both bundled models are offered, the CNN (the more accurate) first and chosen.
    assert_eq!(
        seen["models"],
        serde_json::json!(["mnist-cnn", "mnist"]),
        "{seen}"
    );
    assert_eq!(seen["chosen"], "mnist-cnn", "{seen}");
    assert_eq!(seen["errors"], serde_json::json!([]), "{seen}");
    // The stroke is a "1", its top-5 bars show, and the 28x28 preview shows the stroke.
    assert_eq!(seen["drawn"]["top"], "1", "{seen}");
    assert_eq!(seen["drawn"]["bars"], 5, "{seen}");
    // Each bar is drawn as long as the percentage beside it says (to a pixel's rounding),
    // and the top one can be seen.
    for bar in seen["drawn"]["drawn"].as_array().unwrap() {
        let (filled, written) = (
            bar["filled"].as_f64().unwrap(),
            bar["written"].as_f64().unwrap(),
        );
        assert!(
            (filled - written).abs() < 1.5,
            "bar drawn at {filled}% for {written}%: {seen}"
        );
    }
    assert!(
        seen["drawn"]["drawn"][0]["filled"].as_f64().unwrap() > 20.0,
        "{seen}"
    );
    assert!(seen["drawn"]["ink"].as_u64().unwrap() > 15, "{seen}");
    assert!(
        seen["drawn"]["status"]
            .as_str()
            .unwrap()
            .starts_with("mnist-cnn: 1"),
        "{seen}"
    );
    // The picture is the first held-out digit.
    let (_, label) = digits(1).remove(0);
    assert_eq!(seen["picked"]["top"], label.to_string(), "{seen}");
    assert_eq!(seen["drop"]["top"], label.to_string(), "{seen}");
    // On a phone too: the answer, its five bars drawn to their percentages, and the preview.
    let phone = &seen["onPhone"];
    assert_eq!(phone["top"], label.to_string(), "{seen}");
    assert_eq!(phone["bars"], 5, "{seen}");
    assert!(phone["ink"].as_u64().unwrap() > 15, "{seen}");
    for bar in phone["drawn"].as_array().unwrap() {
        let (filled, written) = (
            bar["filled"].as_f64().unwrap(),
            bar["written"].as_f64().unwrap(),
        );
        assert!(
            (filled - written).abs() < 1.5,
            "bar drawn at {filled}% for {written}%: {seen}"
        );
    }
    assert_eq!(seen["fits"], true, "{seen}");
    for shot in ["drawn.png", "picture.png", "phone.png"] {
        assert!(is_png(&shots.join(shot)), "{shot} was not saved");
    }
}

#[test]
fn the_page_asks_for_the_api_key_when_the_server_has_one() {
    let server = Server::start(&repo_root().join("models"), &["--api-key", "s3cret-key"]);
    // The page itself is open; the API behind it is not.
    let page = server
        .client
        .get(format!("{}/", server.base))
        .send()
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.headers().contains_key("content-security-policy"));
    let (status, _) = server.get("/api/v1/ml/models");
    assert_eq!(status, 401);

    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web-api-key");
    let seen = browse(&server, &shots, Some("s3cret-key"));
    assert_eq!(seen["drawn"]["top"], "1", "{seen}");
    assert_eq!(seen["errors"], serde_json::json!([]), "{seen}");
}
