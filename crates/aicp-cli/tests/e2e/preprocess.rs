//! Pictures and text in, for models nobody on aicp wrote: `aicp serve` prepares scikit-image's
//! photographs for a torchvision classifier as its model.toml declares (ImageNet's resize,
//! crop and normalisation), and tokenises the Python documentation's sentences with a
//! WordPiece tokenizer.json that Hugging Face's `tokenizers` trained, for a transformers text
//! encoder; each is compared with what Python's own libraries make of the same input
//! (`tests/fixtures/preprocess.py`). A chain of that encoder and a classifier head, served
//! under its own name, answers as the two run by hand with onnxruntime.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::common::{AICP, Server, fixture_script, manifest_dir, run_bounded};

fn script(args: &[&dyn AsRef<std::ffi::OsStr>]) {
    fixture_script("preprocess.py", args, Duration::from_secs(300));
}

#[test]
fn pictures_and_texts_are_prepared_as_pythons_own_libraries_prepare_them() {
    let dir = tempfile::tempdir().unwrap();
    let exported = manifest_dir().join("tests/fixtures/exported");
    script(&[&"prepare", &dir.path(), &exported]);
    let server = Server::start(&dir.path().join("models"), &["--gpu", "off"]);
    let http = server.base.trim_start_matches("http://").to_string();
    script(&[&"check", &dir.path(), &http, &server.grpc]);
    let results: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("results.json")).unwrap()).unwrap();
    let number = |key: &str| {
        results[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key}: {results}"))
    };

    // Pictures: 20 photographs, each as PNG and as JPEG.
    assert_eq!(number("pictures"), 40.0);
    assert!(
        number("top1_agree") >= 0.95 * 40.0,
        "top-1 agrees with torchvision's pipeline on {} of 40",
        number("top1_agree")
    );
    // Resizing filters differ in their rounding: within one 8-bit step of the resized picture
    // nearly everywhere (JPEG's decoders differ as well).
    assert!(number("pixel_steps_within_1") >= 0.99, "{results}");
    assert!(number("tensor_mean_abs") < 0.01, "{results}");
    assert_eq!(results["grpc_equals_rest"], Value::Bool(true));

    // Texts: exactly the ids of Hugging Face's tokenizers, and embeddings within 1e-4.
    assert!(number("tokenized") >= 2000.0, "{results}");
    assert_eq!(number("tokens_mismatched"), 0.0, "{results}");
    assert!(number("embed_max_abs") <= 1e-4, "{results}");
    assert!(number("classify_text_max_abs") <= 1e-4, "{results}");
    assert!(number("v2_text_max_abs") <= 1e-4, "{results}");

    // A chain, the encoder then a classifier head: the answer of the two run by hand.
    assert_eq!(number("chain_scores"), 256.0, "{results}");
    assert_eq!(number("chain_top1_agree"), 256.0, "{results}");
    assert!(number("chain_max_abs") <= 1e-4, "{results}");
    assert!(number("chain_v2_max_abs") <= 1e-4, "{results}");
    assert_eq!(results["chain_platform"], "ensemble");
    assert_eq!(
        results["chain_steps"],
        serde_json::json!(["encoder", "sentiment_head"])
    );

    // `aicp predict` prepares a picture and a text as the server does.
    let predict = |args: &[&dyn AsRef<std::ffi::OsStr>]| {
        let mut command = Command::new(AICP);
        command
            .args(["predict", "--models"])
            .arg(dir.path().join("models"));
        for arg in args {
            command.arg(arg);
        }
        let out = run_bounded(&mut command, Duration::from_secs(120));
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let picture = dir.path().join("pictures/chelsea.png");
    let stdout = predict(&[&"--model", &"imagenet", &"--top-k", &"2", &picture]);
    assert!(stdout.contains("picture 451x300\n"), "{stdout}");
    assert!(stdout.contains("model imagenet version 1"), "{stdout}");
    let stdout = predict(&[
        &"--model",
        &"encoder",
        &"--text",
        &"The cat sat on the mat.",
    ]);
    assert!(stdout.contains("text of 23 characters: "), "{stdout}");
    assert!(stdout.contains("embedding of 32 values: ["), "{stdout}");
}
