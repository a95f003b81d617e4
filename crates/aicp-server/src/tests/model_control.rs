//! Live model management seen through the front ends, one watcher pass at a time
//! ([`aicp_runtime::ModelControl::poll`], what the watcher runs on its timer): new, changed,
//! broken and removed models, files still being written, and atomic swaps under load that fail
//! no request.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use aicp_testkit::{bundled_model, digits, install};
use serde_json::{Value, json};

use crate::tests::support::{Options, Server, eventually};

/// Replaces a file the way deployment tools do: written beside it, then renamed over it.
fn replace(file: &Path, bytes: &[u8]) {
    let staging = file.with_extension("staging");
    std::fs::write(&staging, bytes).unwrap();
    std::fs::rename(&staging, file).unwrap();
}

/// One pass of the watcher, on a blocking thread as the server runs it.
async fn poll(server: &Server) {
    let control = server.control.clone();
    tokio::task::spawn_blocking(move || control.poll())
        .await
        .unwrap()
        .unwrap();
}

/// Two passes: a change to a model's files is taken at the second pass that sees them the
/// same (a whole model's removal, at the first).
async fn settle(server: &Server) {
    poll(server).await;
    poll(server).await;
}

/// The repository index, as `(name, version, state, reason)`.
async fn index(server: &Server) -> Vec<(String, String, String, String)> {
    let (status, body) = server.post("/v2/repository/index", &json!({})).await;
    assert_eq!(status, 200, "{body}");
    body.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let field = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (
                field("name"),
                field("version"),
                field("state"),
                field("reason"),
            )
        })
        .collect()
}

async fn has(server: &Server, name: &str, version: &str, state: &str) -> bool {
    index(server)
        .await
        .iter()
        .any(|(n, v, s, _)| n == name && v == version && s == state)
}

/// Classifies the first held-out digit with `model`; (status, body).
async fn classify(server: &Server, model: &str) -> (u16, Value) {
    let (pixels, _) = digits(1).remove(0);
    server
        .post(
            "/api/v1/ml/classify",
            &json!({"model_name": model, "image_data": pixels}),
        )
        .await
}

#[tokio::test]
async fn the_watcher_loads_new_and_changed_models_and_unloads_removed_ones() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "mnist", "mnist", 1);
    let server = Server::start(dir.path(), Options::default()).await;
    assert!(has(&server, "mnist", "1", "READY").await);

    // A new model, written in chunks (a copy in progress): never tried before it is whole.
    let version_dir = dir.path().join("digits/1");
    std::fs::create_dir_all(&version_dir).unwrap();
    let bytes = std::fs::read(bundled_model("mnist")).unwrap();
    let mut file = std::fs::File::create(version_dir.join("model.onnx")).unwrap();
    for chunk in bytes.chunks(bytes.len() / 10 + 1) {
        file.write_all(chunk).unwrap();
        file.flush().unwrap();
        poll(&server).await;
        let seen = index(&server).await;
        assert!(
            !seen.iter().any(|(n, ..)| n == "digits"),
            "a file still being written was taken for a model: {seen:?}"
        );
    }
    drop(file);
    poll(&server).await;
    assert!(has(&server, "digits", "1", "READY").await);
    let (status, body) = classify(&server, "digits").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model_version"], 1, "{body}");

    // A new version becomes the default.
    install(dir.path(), "mnist", "digits", 2);
    settle(&server).await;
    assert!(has(&server, "digits", "2", "READY").await);
    assert_eq!(classify(&server, "digits").await.1["model_version"], 2);

    // A broken replacement: the previous load keeps serving and the failure is reported.
    let model_file = dir.path().join("digits/2/model.onnx");
    replace(&model_file, &bytes[..1000]);
    settle(&server).await;
    let seen = index(&server).await;
    let (_, _, state, reason) = seen.iter().find(|e| e.0 == "digits" && e.1 == "2").unwrap();
    assert_eq!(state, "READY");
    assert!(
        reason.contains("failed to load") && reason.contains("previous load still serves"),
        "{reason}"
    );
    let (status, body) = classify(&server, "digits").await;
    assert_eq!((status, &body["model_version"]), (200, &json!(2)), "{body}");
    let (_, listing) = server.get("/api/v1/ml/models/digits").await;
    assert!(
        listing["versions"][1]["reload_error"]
            .as_str()
            .is_some_and(|e| e.contains("not a readable ONNX model")),
        "{listing}"
    );

    // Fixed: reloaded, the report is gone.
    replace(&model_file, &bytes);
    settle(&server).await;
    let seen = index(&server).await;
    assert!(
        seen.iter()
            .any(|(n, v, s, r)| n == "digits" && v == "2" && s == "READY" && r.is_empty()),
        "{seen:?}"
    );

    // A new version that fails leaves the older one serving.
    let broken = dir.path().join("digits/3");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("model.onnx"), b"not a model").unwrap();
    settle(&server).await;
    assert!(has(&server, "digits", "3", "UNAVAILABLE").await);
    assert_eq!(classify(&server, "digits").await.1["model_version"], 2);

    // Removed: gone from the index, and not found.
    std::fs::remove_dir_all(dir.path().join("digits")).unwrap();
    poll(&server).await;
    assert!(!index(&server).await.iter().any(|(n, ..)| n == "digits"));
    let (status, body) = classify(&server, "digits").await;
    assert_eq!(status, 404, "{body}");
    assert!(has(&server, "mnist", "1", "READY").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_models_under_load_fails_no_request() {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "mnist", "mnist", 1);
    let server = Arc::new(Server::start(dir.path(), Options::default()).await);
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let (pixels, label) = digits(1).remove(0);
    let body = json!({"model_name": "mnist", "image_data": pixels});
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (server, body, stop, answered) =
                (server.clone(), body.clone(), stop.clone(), answered.clone());
            tokio::spawn(async move {
                let mut versions = std::collections::BTreeSet::new();
                while !stop.load(Ordering::Relaxed) {
                    let (status, reply) = server.post("/api/v1/ml/classify", &body).await;
                    assert_eq!(status, 200, "a request failed during a swap: {reply}");
                    assert_eq!(reply["predictions"][0]["class"], label, "{reply}");
                    versions.insert(reply["model_version"].as_u64().unwrap());
                    answered.fetch_add(1, Ordering::Relaxed);
                }
                versions
            })
        })
        .collect();

    let bytes = std::fs::read(bundled_model("mnist")).unwrap();
    let answers_go_on = async || {
        let after = answered.load(Ordering::Relaxed) + 20;
        eventually("the clients getting answers", || {
            answered.load(Ordering::Relaxed) >= after
        })
        .await;
    };
    for _ in 0..3 {
        // Replace version 1 in place, add version 2, take it away again.
        replace(&dir.path().join("mnist/1/model.onnx"), &bytes);
        settle(&server).await;
        answers_go_on().await;
        install(dir.path(), "mnist", "mnist", 2);
        settle(&server).await;
        assert!(has(&server, "mnist", "2", "READY").await);
        answers_go_on().await;
        std::fs::remove_dir_all(dir.path().join("mnist/2")).unwrap();
        settle(&server).await;
        assert!(
            !index(&server)
                .await
                .iter()
                .any(|(n, v, ..)| n == "mnist" && v == "2")
        );
        answers_go_on().await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut versions = std::collections::BTreeSet::new();
    for client in clients {
        versions.extend(client.await.expect("a client saw a failed request"));
    }
    assert_eq!(
        versions,
        [1, 2].into(),
        "requests should have been served by both versions"
    );
}
