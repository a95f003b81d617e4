//! Observability against a real `aicp serve`: `/metrics` read by Prometheus's own Python parser
//! (`prometheus_client`) (request outcomes by reason, samples and engine runs, histograms, queue
//! gauges, models loaded, build info, the separate metrics port), request ids in responses
//! and in JSON logs down to the engine, which failures are logged as errors, and each model's
//! start-up line said once.

use crate::common::{Server, digits, repo_root, run_python};
use aicp_server::proto::ModelInferRequest;
use aicp_server::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use serde_json::{Value, json};

/// One sample of the exposition: name, labels, value and its family's type.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: serde_json::Map<String, Value>,
    value: f64,
    kind: String,
}

/// Parses an exposition with `prometheus_client`'s parser, which rejects malformed text.
fn parse(text: &str) -> Vec<Sample> {
    let script = "import sys, json\n\
        from prometheus_client.parser import text_string_to_metric_families\n\
        print(json.dumps([[s.name, s.labels, s.value, f.type]\n\
            for f in text_string_to_metric_families(sys.stdin.read()) for s in f.samples]))";
    let output = run_python(script, text.as_bytes());
    assert!(
        output.status.success(),
        "prometheus_client could not parse /metrics: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    let samples: Vec<(String, serde_json::Map<String, Value>, f64, String)> =
        serde_json::from_slice(&output.stdout).unwrap();
    samples
        .into_iter()
        .map(|(name, labels, value, kind)| Sample {
            name,
            labels,
            value,
            kind,
        })
        .collect()
}

/// The value of the sample `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).and_then(Value::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

#[test]
fn metrics_count_requests_samples_and_runs_per_model_on_their_own_port() {
    let server = Server::start(&repo_root().join("models"), &["--metrics-port", "0"]);
    let metrics_url = server
        .startup
        .iter()
        .find_map(|line| line.strip_prefix("aicp metrics on ").map(str::to_string))
        .expect("the server should say where its metrics are");

    let images: Vec<Vec<f32>> = digits(3).into_iter().map(|(pixels, _)| pixels).collect();
    for image in &images {
        let (status, body) = server.post(
            "/api/v1/ml/classify",
            &json!({"model_name": "mnist", "image_data": image}),
        );
        assert_eq!(status, 200, "{body}");
    }
    // One request of three samples.
    let (status, body) = server.post(
        "/api/v1/ml/classify",
        &json!({"model_name": "mnist", "image_data": images}),
    );
    assert_eq!(status, 200, "{body}");
    let (status, _) = server.post(
        "/api/v1/ml/classify",
        &json!({"model_name": "mnist", "image_data": [0.5, 0.5, 0.5]}),
    );
    assert_eq!(status, 422);
    // Refused by the V2 front end before the runtime sees it: still counted for the model.
    let (status, _) = server.post(
        "/v2/models/mnist/infer",
        &json!({"inputs": [{"name": "input", "shape": [1, 1], "datatype": "BYTES", "data": ["a"]}]}),
    );
    assert_eq!(status, 400);
    let (status, _) = server.post(
        "/api/v1/ml/classify",
        &json!({"model_name": "no-such-model", "image_data": images[0]}),
    );
    assert_eq!(status, 404);

    // Only on the metrics port.
    let (status, _) = server.get("/metrics");
    assert_eq!(status, 404);
    let response = server.client.get(&metrics_url).send().unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
    );
    let samples = parse(&response.text().unwrap());
    let model = [("model", "mnist"), ("version", "1")];

    assert_eq!(
        value(&samples, "aicp_request_success_total", &model),
        Some(4.0)
    );
    assert_eq!(
        value(&samples, "aicp_inference_count_total", &model),
        Some(6.0)
    );
    let executions = value(&samples, "aicp_execution_count_total", &model).unwrap();
    assert!(
        (1.0..=4.0).contains(&executions),
        "{executions} engine runs"
    );
    let invalid = [("model", "mnist"), ("reason", "invalid")];
    assert_eq!(
        value(&samples, "aicp_request_failure_total", &invalid),
        Some(2.0)
    );
    // An unknown model's name never becomes a label.
    let not_found = [("model", ""), ("reason", "not_found")];
    assert_eq!(
        value(&samples, "aicp_request_failure_total", &not_found),
        Some(1.0)
    );
    assert!(
        !samples
            .iter()
            .any(|s| s.labels.values().any(|v| v == "no-such-model"))
    );

    // Histograms, with microsecond-scale buckets.
    for name in [
        "aicp_request_duration_seconds",
        "aicp_queue_duration_seconds",
        "aicp_compute_duration_seconds",
        "aicp_batch_size",
    ] {
        assert!(
            samples
                .iter()
                .any(|s| s.name == format!("{name}_bucket") && s.kind == "histogram"),
            "{name} should be a histogram"
        );
    }
    let requests = [("model", "mnist"), ("le", "0.00001")];
    assert!(value(&samples, "aicp_request_duration_seconds_bucket", &requests).is_some());
    assert_eq!(
        value(&samples, "aicp_request_duration_seconds_count", &model),
        Some(6.0),
        "every request that reached the model, failed ones included"
    );
    assert_eq!(value(&samples, "aicp_batch_size_sum", &model), Some(6.0));

    // States, read at the scrape.
    assert_eq!(value(&samples, "aicp_queue_waiting", &model), Some(0.0));
    assert_eq!(value(&samples, "aicp_queue_running", &model), Some(0.0));
    assert!(value(&samples, "aicp_models_loaded", &[]).unwrap() >= 1.0);
    let engine = samples
        .iter()
        .find(|s| s.name == "aicp_model_info" && s.labels["model"] == "mnist")
        .expect("aicp_model_info for mnist");
    assert!(engine.labels.contains_key("engine"), "{engine:?}");
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        value(&samples, "aicp_build_info", &[("version", version)]),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "aicp_model_loads_total",
            &[("model", "mnist"), ("result", "success")]
        ),
        Some(1.0)
    );

    // Every series the server exposes is in the metrics reference.
    let reference = std::fs::read_to_string(repo_root().join("docs/reference/metrics.md")).unwrap();
    let mut undocumented: Vec<&str> = samples
        .iter()
        .map(|s| {
            // A histogram's samples are its series' name with a suffix.
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    s.name
                        .strip_suffix(suffix)
                        .filter(|_| s.kind == "histogram")
                })
                .unwrap_or(&s.name)
        })
        .filter(|name| !reference.contains(&format!("`{name}")))
        .collect();
    undocumented.dedup();
    assert!(
        undocumented.is_empty(),
        "docs/reference/metrics.md does not list {undocumented:?}"
    );
}

#[test]
fn request_ids_are_echoed_and_carried_to_the_engine_in_json_logs() {
    let logs = tempfile::NamedTempFile::new().unwrap();
    let mut server = Server::start_with_stderr(
        &repo_root().join("models"),
        &[
            "--log-format",
            "json",
            "--log",
            "info,aicp_runtime::scheduler=debug",
        ],
        logs.reopen().unwrap(),
    );
    let (pixels, _) = digits(1).remove(0);
    let body = json!({"model_name": "mnist", "image_data": pixels}).to_string();
    let send = |id: Option<&str>| {
        let mut request = server
            .client
            .post(format!("{}/api/v1/ml/classify", server.base))
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(id) = id {
            request = request.header("x-request-id", id);
        }
        let response = request.send().unwrap();
        assert_eq!(response.status(), 200);
        response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_string()
    };
    // The client's id is kept; without one, each request gets its own.
    assert_eq!(send(Some("trace-me-42")), "trace-me-42");
    let (a, b) = (send(None), send(None));
    assert!(!a.is_empty() && a != b, "{a} {b}");
    let response = server
        .client
        .get(format!("{}/healthz", server.base))
        .send()
        .unwrap();
    assert!(response.headers().contains_key("x-request-id"));

    let _ = server.child.kill();
    let _ = server.child.wait();
    let lines = json_lines(logs.path());
    // The engine's thread logged the run inside the request's span.
    let engine = lines
        .iter()
        .find(|line| {
            line["span"]["id"] == "trace-me-42" && line["target"] == "aicp_runtime::scheduler"
        })
        .unwrap_or_else(|| panic!("no engine log line carries the request id:\n{lines:#?}"));
    assert_eq!(engine["fields"]["message"], "engine run", "{engine}");
    assert_eq!(engine["span"]["path"], "/api/v1/ml/classify", "{engine}");
}

#[test]
fn text_logs_carry_the_request_span_without_colour_codes_in_a_file() {
    let logs = tempfile::NamedTempFile::new().unwrap();
    let mut server = Server::start_with_stderr(
        &repo_root().join("models"),
        &["--log", "info,aicp_runtime::scheduler=debug"],
        logs.reopen().unwrap(),
    );
    let (pixels, _) = digits(1).remove(0);
    let body = json!({"model_name": "mnist", "image_data": pixels}).to_string();
    for id in ["trace-me-43", r#"two words "quoted""#] {
        let response = server
            .client
            .post(format!("{}/api/v1/ml/classify", server.base))
            .header("content-type", "application/json")
            .header("x-request-id", id)
            .body(body.clone())
            .send()
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let _ = server.child.kill();
    let _ = server.child.wait();
    let text = std::fs::read_to_string(logs.path()).unwrap();
    assert!(
        !text.contains('\x1b'),
        "colour codes in a log file:\n{text}"
    );
    let engine_line = |span: &str| {
        text.lines()
            .find(|line| line.contains(span) && line.contains("engine run"))
            .unwrap_or_else(|| panic!("no engine line in {span}:\n{text}"))
            .to_string()
    };
    // A plain id goes out as it is; one with spaces or quotes is quoted, so it stays one field.
    engine_line("request{id=trace-me-43 method=POST path=/api/v1/ml/classify}:");
    engine_line(r#"request{id="two words \"quoted\"" method=POST path=/api/v1/ml/classify}:"#);
}

/// The JSON log lines a server wrote to `path`.
fn json_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

#[test]
fn client_mistakes_and_missed_deadlines_are_not_logged_as_server_errors() {
    let logs = tempfile::NamedTempFile::new().unwrap();
    let mut server = Server::start_with_stderr(
        &repo_root().join("models"),
        &["--log-format", "json"],
        logs.reopen().unwrap(),
    );
    let (status, _) = server.post(
        "/api/v1/ml/classify",
        &json!({"model_name": "mnist", "image_data": [0.5, 0.5]}),
    );
    assert_eq!(status, 422);
    // A timeout of 1 us has passed before the request reaches the queue: a 504.
    let (status, body) = server.post(
        "/v2/models/mnist/infer",
        &json!({"parameters": {"timeout": 1}, "inputs": [
            {"name": "input", "shape": [1, 784], "datatype": "FP32", "data": vec![0.0; 784]}
        ]}),
    );
    assert_eq!(status, 504, "{body}");
    let endpoint = format!("http://{}", server.grpc);
    let status = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut client = GrpcInferenceServiceClient::connect(endpoint).await.unwrap();
        client
            .model_infer(ModelInferRequest {
                model_name: "no-such-model".into(),
                ..Default::default()
            })
            .await
            .unwrap_err()
    });
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");

    let _ = server.child.kill();
    let _ = server.child.wait();
    let lines = json_lines(logs.path());
    assert!(!lines.is_empty());
    let errors: Vec<&Value> = lines.iter().filter(|l| l["level"] == "ERROR").collect();
    assert!(errors.is_empty(), "logged as errors: {errors:#?}");
}

/// At the default log level each model's start-up line is said once, on stdout, not again in
/// the log; a version that becomes ready later, with no start-up line to say it, is in the log.
#[test]
fn each_models_start_up_line_is_said_once_and_a_later_version_in_the_log() {
    let models = tempfile::tempdir().unwrap();
    aicp_testkit::install(models.path(), "mnist", "mnist", 1);
    let logs = tempfile::NamedTempFile::new().unwrap();
    let server = Server::start_with_stderr(
        models.path(),
        &["--poll-interval-ms", "200"],
        logs.reopen().unwrap(),
    );
    let said = |prefix: &str| {
        server
            .startup
            .iter()
            .filter(|l| l.starts_with(prefix))
            .count()
    };
    assert_eq!(
        said("model mnist version 1 ready on "),
        1,
        "{:?}",
        server.startup
    );
    let log = || std::fs::read_to_string(logs.path()).unwrap();
    assert!(!log().contains("ready on"), "said twice:\n{}", log());

    aicp_testkit::install(models.path(), "mnist", "mnist", 2);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !log().contains("model mnist version 2 ready on") {
        assert!(
            std::time::Instant::now() < deadline,
            "version 2 never said it is ready:\n{}",
            log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
