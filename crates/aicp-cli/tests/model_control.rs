//! Live model management against a real `aicp serve`: the directory watcher (new, changed,
//! broken and removed models; files still being written), atomic swaps under load, explicit
//! load and unload over REST and gRPC with the admin token, the API key, and the model
//! directory's boundary.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aicp_server::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use aicp_server::grpc::proto::{
    RepositoryModelLoadRequest, RepositoryModelUnloadRequest, ServerLiveRequest,
    ServerMetadataRequest,
};
use common::{Server, digits, json_of, repo_root};
use serde_json::{Value, json};

fn bundled_model() -> PathBuf {
    repo_root().join("models/mnist/1/model.onnx")
}

/// A model directory holding `mnist` (version 1, the bundled model).
fn model_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "mnist", 1);
    dir
}

/// Copies the bundled model in as `name` version `version`.
fn install(root: &Path, name: &str, version: u64) {
    let dir = root.join(name).join(version.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(bundled_model(), dir.join("model.onnx")).unwrap();
}

/// Replaces a file the way deployment tools do: written beside it, then renamed over it.
fn replace(file: &Path, bytes: &[u8]) {
    let staging = file.with_extension("staging");
    std::fs::write(&staging, bytes).unwrap();
    std::fs::rename(&staging, file).unwrap();
}

/// The repository index, as `(name, version) -> (state, reason)`.
fn index(server: &Server) -> Vec<(String, String, String, String)> {
    let (status, body) = server.post("/v2/repository/index", &json!({}));
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

/// Waits (at most 20 s) until `check` holds for the index, and returns it.
fn wait_for_index(
    server: &Server,
    what: &str,
    check: impl Fn(&[(String, String, String, String)]) -> bool,
) -> Vec<(String, String, String, String)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let index = index(server);
        if check(&index) {
            return index;
        }
        assert!(Instant::now() < deadline, "never saw {what}: {index:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn has(index: &[(String, String, String, String)], name: &str, version: &str, state: &str) -> bool {
    index
        .iter()
        .any(|(n, v, s, _)| n == name && v == version && s == state)
}

/// Classifies the first held-out digit with `model`; (status, body).
fn classify(server: &Server, model: &str) -> (u16, Value) {
    let (pixels, _) = digits(1).remove(0);
    server.post(
        "/api/v1/ml/classify",
        &json!({"model_name": model, "image_data": pixels}),
    )
}

#[test]
fn the_watcher_loads_new_and_changed_models_and_unloads_removed_ones() {
    let dir = model_dir();
    let server = Server::start(dir.path(), &["--poll-interval-ms", "100"]);
    assert!(has(&index(&server), "mnist", "1", "READY"));

    // A new model, written slowly in chunks (a copy in progress): never tried before it is whole.
    let version_dir = dir.path().join("digits/1");
    std::fs::create_dir_all(&version_dir).unwrap();
    let bytes = std::fs::read(bundled_model()).unwrap();
    let mut file = std::fs::File::create(version_dir.join("model.onnx")).unwrap();
    for chunk in bytes.chunks(bytes.len() / 10 + 1) {
        file.write_all(chunk).unwrap();
        file.flush().unwrap();
        let seen = index(&server);
        assert!(
            !seen.iter().any(|(n, ..)| n == "digits"),
            "a file still being written was taken for a model: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(30));
    }
    drop(file);
    wait_for_index(&server, "digits loaded", |i| has(i, "digits", "1", "READY"));
    let (status, body) = classify(&server, "digits");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model_version"], 1, "{body}");

    // A new version becomes the default.
    install(dir.path(), "digits", 2);
    wait_for_index(&server, "digits 2", |i| has(i, "digits", "2", "READY"));
    assert_eq!(classify(&server, "digits").1["model_version"], 2);

    // A broken replacement: the previous load keeps serving and the failure is reported.
    let model_file = dir.path().join("digits/2/model.onnx");
    replace(&model_file, &bytes[..1000]);
    let seen = wait_for_index(&server, "the failed reload reported", |i| {
        i.iter()
            .any(|(n, v, s, r)| n == "digits" && v == "2" && s == "READY" && !r.is_empty())
    });
    let reason = &seen
        .iter()
        .find(|e| e.0 == "digits" && e.1 == "2")
        .unwrap()
        .3;
    assert!(
        reason.contains("failed to load") && reason.contains("previous load still serves"),
        "{reason}"
    );
    let (status, body) = classify(&server, "digits");
    assert_eq!((status, &body["model_version"]), (200, &json!(2)), "{body}");
    let (_, listing) = server.get("/api/v1/ml/models/digits");
    assert!(
        listing["versions"][1]["reload_error"]
            .as_str()
            .is_some_and(|e| e.contains("not a readable ONNX model")),
        "{listing}"
    );

    // Fixed: reloaded, the report is gone.
    replace(&model_file, &bytes);
    wait_for_index(&server, "the fixed reload", |i| {
        i.iter()
            .any(|(n, v, s, r)| n == "digits" && v == "2" && s == "READY" && r.is_empty())
    });

    // A new version that fails leaves the older one serving.
    let broken = dir.path().join("digits/3");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("model.onnx"), b"not a model").unwrap();
    wait_for_index(&server, "digits 3 failed", |i| {
        has(i, "digits", "3", "UNAVAILABLE")
    });
    assert_eq!(classify(&server, "digits").1["model_version"], 2);

    // Removed: gone from the index, and not found.
    std::fs::remove_dir_all(dir.path().join("digits")).unwrap();
    wait_for_index(&server, "digits removed", |i| {
        !i.iter().any(|(n, ..)| n == "digits")
    });
    let (status, body) = classify(&server, "digits");
    assert_eq!(status, 404, "{body}");
    assert!(has(&index(&server), "mnist", "1", "READY"));
}

#[test]
fn swapping_models_under_load_fails_no_request() {
    let dir = model_dir();
    let server = Server::start(dir.path(), &["--poll-interval-ms", "50"]);
    let base = server.base.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let (pixels, label) = digits(1).remove(0);
    let body = json!({"model_name": "mnist", "image_data": pixels}).to_string();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (base, body, stop, answered) =
                (base.clone(), body.clone(), stop.clone(), answered.clone());
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap();
                let mut versions = std::collections::BTreeSet::new();
                while !stop.load(Ordering::Relaxed) {
                    let response = client
                        .post(format!("{base}/api/v1/ml/classify"))
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .unwrap();
                    let (status, reply) = json_of(response);
                    assert_eq!(status, 200, "a request failed during a swap: {reply}");
                    assert_eq!(reply["predictions"][0]["class"], label, "{reply}");
                    versions.insert(reply["model_version"].as_u64().unwrap());
                    answered.fetch_add(1, Ordering::Relaxed);
                }
                versions
            })
        })
        .collect();

    let bytes = std::fs::read(bundled_model()).unwrap();
    let wait_for_answers = |after: usize| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while answered.load(Ordering::Relaxed) < after + 20 {
            assert!(
                Instant::now() < deadline,
                "the clients stopped getting answers"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    for round in 0..3 {
        // Replace version 1 in place, add version 2, take it away again.
        replace(&dir.path().join("mnist/1/model.onnx"), &bytes);
        wait_for_answers(answered.load(Ordering::Relaxed));
        install(dir.path(), "mnist", 2);
        wait_for_index(&server, "version 2", |i| has(i, "mnist", "2", "READY"));
        wait_for_answers(answered.load(Ordering::Relaxed));
        std::fs::remove_dir_all(dir.path().join("mnist/2")).unwrap();
        wait_for_index(&server, "version 2 gone", |i| {
            !i.iter().any(|(n, v, ..)| n == "mnist" && v == "2")
        });
        wait_for_answers(answered.load(Ordering::Relaxed));
        eprintln!(
            "round {round}: {} answers",
            answered.load(Ordering::Relaxed)
        );
    }
    stop.store(true, Ordering::Relaxed);
    let mut versions = std::collections::BTreeSet::new();
    for client in clients {
        versions.extend(client.join().expect("a client saw a failed request"));
    }
    assert_eq!(
        versions,
        [1, 2].into(),
        "requests should have been served by both versions"
    );
}

/// A request to `path` with an optional bearer secret and JSON body; (status, body, headers).
fn call(
    server: &Server,
    path: &str,
    bearer: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let url = format!("{}{path}", server.base);
    let mut request = match body {
        Some(body) => server
            .client
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_string()),
        None if path.ends_with("/load") || path.ends_with("/unload") => server.client.post(url),
        None => server.client.get(url),
    };
    if let Some(secret) = bearer {
        request = request.bearer_auth(secret);
    }
    let response = request.send().unwrap();
    let headers = response.headers().clone();
    let (status, body) = json_of(response);
    (status, body, headers)
}

#[test]
fn explicit_control_needs_the_admin_token_and_inference_needs_the_api_key() {
    let dir = model_dir();
    // A model outside the directory, linked in: never loaded.
    let outside = tempfile::tempdir().unwrap();
    install(outside.path(), "escape", 1);
    std::os::unix::fs::symlink(outside.path().join("escape"), dir.path().join("escape")).unwrap();
    let server = Server::start(
        dir.path(),
        &[
            "--model-control",
            "explicit",
            "--admin-token",
            "t0ken",
            "--api-key",
            "k3y",
            "--poll-interval-ms",
            "50",
        ],
    );
    let (pixels, _) = digits(1).remove(0);
    let digits_request = json!({"model_name": "digits", "image_data": pixels});

    // Open routes stay open; everything else wants the key.
    for path in [
        "/healthz",
        "/readyz",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/mnist/ready",
    ] {
        assert_eq!(call(&server, path, None, None).0, 200, "{path}");
    }
    for path in [
        "/api/v1/ml/models",
        "/v2",
        "/v2/models/mnist",
        "/v2/models/stats",
    ] {
        let (status, body, headers) = call(&server, path, None, None);
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(headers["www-authenticate"], "Bearer", "{path}");
        assert_eq!(call(&server, path, Some("k3y"), None).0, 200, "{path}");
    }
    let (status, body, _) = call(
        &server,
        "/api/v1/ml/classify",
        Some("wrong"),
        Some(&digits_request),
    );
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("API key is wrong"),
        "{body}"
    );
    let with_header = server
        .client
        .post(format!("{}/v2/repository/index", server.base))
        .header("x-api-key", "k3y")
        .send()
        .unwrap();
    assert_eq!(with_header.status(), 200);

    // Explicit mode: a new model is not loaded until asked for.
    install(dir.path(), "digits", 1);
    std::thread::sleep(Duration::from_millis(500));
    let (status, body, _) = call(
        &server,
        "/api/v1/ml/classify",
        Some("k3y"),
        Some(&digits_request),
    );
    assert_eq!(status, 404, "{body}");

    for (secret, expected) in [(None, 401), (Some("k3y"), 401), (Some("t0ke"), 401)] {
        let (status, body, _) = call(&server, "/v2/repository/models/digits/load", secret, None);
        assert_eq!(status, expected, "{secret:?}: {body}");
    }
    let (status, body, _) = call(
        &server,
        "/v2/repository/models/digits/load",
        Some("t0ken"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = call(
        &server,
        "/api/v1/ml/classify",
        Some("k3y"),
        Some(&digits_request),
    );
    assert_eq!(status, 200, "{body}");

    // Unloaded: listed as such, refused with the reason, loadable again.
    let (status, body, _) = call(
        &server,
        "/v2/repository/models/digits/unload",
        Some("t0ken"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let (status, body, _) = call(
        &server,
        "/api/v1/ml/classify",
        Some("k3y"),
        Some(&digits_request),
    );
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unloaded"),
        "{body}"
    );
    let (status, body, _) = call(
        &server,
        "/v2/repository/models/digits/load",
        Some("t0ken"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        call(
            &server,
            "/api/v1/ml/classify",
            Some("k3y"),
            Some(&digits_request)
        )
        .0,
        200
    );

    // Nothing outside the directory, whatever the name.
    for (name, expected) in [
        ("escape", 404),
        ("nosuch", 404),
        ("a..b", 400),
        ("..%2F..%2Fetc", 400),
    ] {
        let (status, body, _) = call(
            &server,
            &format!("/v2/repository/models/{name}/load"),
            Some("t0ken"),
            None,
        );
        assert_eq!(status, expected, "{name}: {body}");
    }
    // A model that does not load is reported, and nothing else changes.
    let broken = dir.path().join("broken/1");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("model.onnx"), b"not a model").unwrap();
    let (status, body, _) = call(
        &server,
        "/v2/repository/models/broken/load",
        Some("t0ken"),
        None,
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("failed to load"),
        "{body}"
    );

    // The same over gRPC.
    let endpoint = format!("http://{}", server.grpc);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut client = GrpcInferenceServiceClient::connect(endpoint).await.unwrap();
        client
            .server_live(ServerLiveRequest {})
            .await
            .expect("liveness is open");
        let status = client
            .server_metadata(ServerMetadataRequest {})
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
        let response = client
            .server_metadata(with("k3y", ServerMetadataRequest {}))
            .await
            .unwrap();
        assert!(
            response.metadata().contains_key("x-request-id"),
            "{response:?}"
        );
        let unload = || RepositoryModelUnloadRequest {
            model_name: "digits".into(),
            ..Default::default()
        };
        let status = client.repository_model_unload(unload()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
        client
            .repository_model_unload(with("t0ken", unload()))
            .await
            .unwrap();
        let load = RepositoryModelLoadRequest {
            model_name: "nosuch".into(),
            ..Default::default()
        };
        let status = client
            .repository_model_load(with("t0ken", load))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    });
    let (status, _, _) = call(
        &server,
        "/api/v1/ml/classify",
        Some("k3y"),
        Some(&digits_request),
    );
    assert_eq!(status, 503);
}

/// A gRPC request carrying `Authorization: Bearer <secret>`.
fn with<T>(secret: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {secret}").parse().unwrap());
    request
}

#[test]
fn model_management_is_off_without_a_token_and_with_control_none() {
    let dir = model_dir();
    let server = Server::start(dir.path(), &[]);
    let (status, body, _) = call(
        &server,
        "/v2/repository/models/mnist/unload",
        Some("anything"),
        None,
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("--admin-token"),
        "{body}"
    );
    drop(server);

    let server = Server::start(
        dir.path(),
        &[
            "--model-control",
            "none",
            "--admin-token",
            "t0ken",
            "--poll-interval-ms",
            "50",
        ],
    );
    let (status, body, _) = call(
        &server,
        "/v2/repository/models/mnist/unload",
        Some("t0ken"),
        None,
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("\"none\""),
        "{body}"
    );
    // And nothing watches the directory.
    install(dir.path(), "digits", 1);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!index(&server).iter().any(|(n, ..)| n == "digits"));
}
