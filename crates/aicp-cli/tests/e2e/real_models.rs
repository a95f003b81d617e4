//! Real models nobody on aicp wrote, served by `aicp serve` on each CPU engine and compared
//! with onnxruntime in process: the ONNX files PyPI packages ship inside their wheels
//! (rapidocr-onnxruntime's three PP-OCR models, silero-vad's voice activity detector; unpacked
//! by scripts/test.sh into `AICP_WHEEL_MODELS`), and torch and transformers exports with random
//! weights (`tests/fixtures/exported`, written by scripts/export-test-models.py): a text
//! encoder on int64 ids of dynamic sequence, an image model of dynamic height and width, and a
//! stateful model with a scalar input. The script is `tests/fixtures/real_models.py`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::{Server, fixture_script, manifest_dir, wheel_models};

/// Each model's result: `None` when it passed, else why not.
type Results = BTreeMap<String, Option<String>>;

fn script(args: &[&dyn AsRef<std::ffi::OsStr>]) {
    fixture_script("real_models.py", args, Duration::from_secs(300));
}

/// Serves every model on `engine`; returns whether the engine's own library runs each in
/// process, and how each went through aicp.
fn real_models(engine: &str) -> (Results, Results) {
    let dir = tempfile::tempdir().unwrap();
    let exported = manifest_dir().join("tests/fixtures/exported");
    script(&[&"prepare", &dir.path(), &engine, &wheel_models(), &exported]);
    let server = Server::start(&dir.path().join("models"), &["--gpu", "off"]);
    let http = server.base.trim_start_matches("http://").to_string();
    script(&[&"serve", &dir.path(), &http, &server.grpc]);
    let read = |name: &str| -> Results {
        serde_json::from_slice(&std::fs::read(dir.path().join(name)).unwrap()).unwrap()
    };
    (read("in_process.json"), read("served.json"))
}

const MODELS: [&str; 7] = [
    "image_classifier",
    "ocr_cls",
    "ocr_det",
    "ocr_rec",
    "silero_vad",
    "streaming_gru",
    "text_encoder",
];

#[test]
fn real_models_serve_on_onnxruntime_as_onnxruntime_answers() {
    let (_, served) = real_models("onnxruntime");
    assert_eq!(
        served.keys().map(String::as_str).collect::<Vec<_>>(),
        MODELS
    );
    let failed: Vec<_> = served.iter().filter(|(_, why)| why.is_some()).collect();
    assert!(failed.is_empty(), "{failed:#?}");
}

#[test]
fn real_models_serve_on_tract_where_tract_runs_them() {
    let (in_process, served) = real_models("tract");
    assert_eq!(
        served.keys().map(String::as_str).collect::<Vec<_>>(),
        MODELS
    );
    let failed: Vec<_> = served
        .iter()
        .filter(|(name, why)| why.is_some() && in_process[*name].is_none())
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
    // tract 0.23.9 runs all but Silero's (an If on the sample rate's value) in process; the
    // OCR models and the text encoder only at concrete shapes, which aicp plans per shape.
    let runs: Vec<_> = in_process
        .iter()
        .filter(|(_, why)| why.is_none())
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(runs.len(), 6, "{in_process:#?}");
}
