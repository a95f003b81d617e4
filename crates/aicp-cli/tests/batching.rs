//! The scheduler seen from outside, against the real `aicp serve`: concurrent requests batched
//! without mixing up their answers, overload refused fast on every protocol (a model's queue,
//! and the server's cap on requests in flight), timeouts and disconnected clients dropped before
//! the engine, and `aicp bench` reading it all back.

mod common;

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use aicp_engine::tract::TractEngine;
use aicp_engine::{Engine, onnx};
use aicp_server::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use aicp_server::grpc::proto::{ModelInferRequest, model_infer_request};
use common::{Server, digits, json_of, python, repo_root};
use serde_json::{Value, json};
use tonic::Code;

/// A repository holding the slow fixture model (`slow`, input `x` [N, 512]).
fn slow_models() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(python())
        .arg(repo_root().join("crates/aicp-cli/tests/fixtures/slow_model.py"))
        .arg(dir.path())
        .status()
        .expect("running the test virtualenv's python (scripts/test.sh creates it)");
    assert!(status.success(), "slow_model.py failed");
    dir
}

/// A V2 binary request of `samples` rows of 512 values for the slow model.
fn slow_request(samples: usize) -> (String, Vec<u8>) {
    let header = json!({
        "inputs": [{"name": "x", "shape": [samples, 512], "datatype": "FP32",
                    "parameters": {"binary_data_size": samples * 512 * 4}}],
        "outputs": [{"name": "y", "parameters": {"binary_data": true}}],
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend(std::iter::repeat_n(0.5f32.to_le_bytes(), samples * 512).flatten());
    (header.len().to_string(), body)
}

/// The slow model's queue right now: (requests waiting, requests in an engine run).
fn queue(server: &Server) -> (u64, u64) {
    let (status, body) = server.get("/api/v1/ml/models/slow");
    assert_eq!(status, 200, "{body}");
    let queue = &body["versions"][0]["queue"];
    (
        queue["waiting"].as_u64().unwrap(),
        queue["running"].as_u64().unwrap(),
    )
}

/// Polls (bounded) until the slow model's queue is in `state`.
fn wait_for_queue(server: &Server, state: (u64, u64)) {
    for _ in 0..1000 {
        if queue(server) == state {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("the queue never reached {state:?}: {:?}", queue(server));
}

/// Starts a request that holds the slow model's only instance for about half a second (a batch
/// of 1024); join the handle for its status.
fn occupy(server: &Server) -> std::thread::JoinHandle<u16> {
    let (length, body) = slow_request(1024);
    let url = format!("{}/v2/models/slow/infer", server.base);
    let client = server.client.clone();
    std::thread::spawn(move || {
        client
            .post(url)
            .header("Inference-Header-Content-Length", length)
            .body(body)
            .send()
            .unwrap()
            .status()
            .as_u16()
    })
}

fn stats(server: &Server, model: &str) -> (u64, u64) {
    let (status, body) = server.get(&format!("/v2/models/{model}/stats"));
    assert_eq!(status, 200, "{body}");
    let m = &body["model_stats"][0];
    (
        m["inference_count"].as_u64().unwrap(),
        m["execution_count"].as_u64().unwrap(),
    )
}

fn grpc_infer(server: &Server, timeout: Option<Duration>) -> tonic::Status {
    let endpoint = format!("http://{}", server.grpc);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut client = GrpcInferenceServiceClient::connect(endpoint).await.unwrap();
        let mut request = tonic::Request::new(ModelInferRequest {
            model_name: "slow".into(),
            inputs: vec![model_infer_request::InferInputTensor {
                name: "x".into(),
                datatype: "FP32".into(),
                shape: vec![1, 512],
                ..Default::default()
            }],
            raw_input_contents: vec![vec![0; 512 * 4]],
            ..Default::default()
        });
        if let Some(timeout) = timeout {
            request.set_timeout(timeout);
        }
        match client.model_infer(request).await {
            Ok(_) => tonic::Status::ok("answered"),
            Err(status) => status,
        }
    })
}

/// The `Retry-After` of an overloaded answer on each protocol: the ML API's 429, V2's 503 and
/// gRPC's RESOURCE_EXHAUSTED (as `grpc-retry-pushback-ms`).
fn retry_after(server: &Server) -> (String, String, String) {
    let header = |path: &str, body: Value| {
        let response = server
            .client
            .post(format!("{}{path}", server.base))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap();
        assert!(
            matches!(response.status().as_u16(), 429 | 503),
            "{response:?}"
        );
        response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .to_string()
    };
    let v2 = json!({"inputs": [{"name": "x", "shape": [1, 512], "datatype": "FP32", "data": vec![0.5; 512]}]});
    let status = grpc_infer(server, None);
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let pushback = status.metadata().get("grpc-retry-pushback-ms").unwrap();
    (
        header("/api/v1/ml/inference", ml_row(json!({}))),
        header("/v2/models/slow/infer", v2),
        pushback.to_str().unwrap().to_string(),
    )
}

/// One row of the slow model through the ML API's inference route.
fn ml_row(extra: Value) -> Value {
    let mut body = json!({"model_name": "slow", "input_data": vec![0.5; 512]});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

#[test]
fn concurrent_requests_are_batched_and_each_gets_its_own_answer() {
    // A queue delay makes batches form even on a fast machine.
    let server = Server::start(
        &repo_root().join("models"),
        &["--instances", "1", "--max-queue-delay-us", "3000"],
    );
    let images: Vec<Vec<f32>> = digits(96).into_iter().map(|(p, _)| p).collect();
    // Single-request inference in this process, one digit at a time: the reference.
    let model_file = repo_root().join("models/mnist/1/model.onnx");
    let signature = onnx::inspect(&model_file).unwrap().signature;
    let mut engine = TractEngine
        .load(&model_file, &signature, &Default::default())
        .unwrap();
    let want: Vec<Vec<f32>> = images
        .iter()
        .map(|image| {
            let input = aicp_core::Tensor::new(vec![1, 1, 28, 28], image.clone()).unwrap();
            engine.run(vec![input.into()]).unwrap().remove(0).data
        })
        .collect();
    let (samples_before, runs_before) = stats(&server, "mnist");

    // 24 clients at once, each sending its share of digits one by one: classify and V2 JSON
    // alternate, so batches mix the two front ends.
    std::thread::scope(|scope| {
        for worker in 0..24 {
            let (images, want) = (&images, &want);
            let (client, base) = (server.client.clone(), server.base.clone());
            scope.spawn(move || {
                let post = |path: &str, body: &Value| {
                    let request = client
                        .post(format!("{base}{path}"))
                        .header("content-type", "application/json")
                        .body(body.to_string());
                    json_of(request.send().unwrap())
                };
                for i in (worker..images.len()).step_by(24) {
                    let got: Vec<f32> = if i % 2 == 0 {
                        let (status, body) = post(
                            "/api/v1/ml/inference",
                            &json!({"input_data": images[i], "input_shape": [1, 784]}),
                        );
                        assert_eq!(status, 200, "{body}");
                        serde_json::from_value(body["outputs"][0]["data"].clone()).unwrap()
                    } else {
                        let (status, body) = post(
                            "/v2/models/mnist/infer",
                            &json!({"id": format!("digit-{i}"), "inputs": [{
                                "name": "input", "shape": [1, 1, 28, 28],
                                "datatype": "FP32", "data": images[i]}]}),
                        );
                        assert_eq!(status, 200, "{body}");
                        assert_eq!(body["id"], format!("digit-{i}"));
                        serde_json::from_value(body["outputs"][0]["data"].clone()).unwrap()
                    };
                    let worst = aicp_core::max_difference(&got, &want[i]);
                    assert!(
                        worst < 1e-4,
                        "digit {i} got another digit's answer: {got:?} vs {:?}",
                        want[i]
                    );
                }
            });
        }
    });
    // The model configuration says how it is scheduled, over REST and gRPC alike.
    let (status, config) = server.get("/v2/models/mnist/config");
    assert_eq!(status, 200, "{config}");
    assert_eq!(
        config["dynamic_batching"]["max_queue_delay_microseconds"],
        3000
    );
    assert_eq!(config["instance_group"][0]["count"], 1);
    let endpoint = format!("http://{}", server.grpc);
    let grpc_config = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut client = GrpcInferenceServiceClient::connect(endpoint).await.unwrap();
        let request = aicp_server::grpc::proto::ModelConfigRequest {
            name: "mnist".into(),
            version: String::new(),
        };
        client
            .model_config(request)
            .await
            .unwrap()
            .into_inner()
            .config
            .unwrap()
    });
    assert_eq!(
        grpc_config
            .dynamic_batching
            .unwrap()
            .max_queue_delay_microseconds,
        3000
    );

    let (samples, runs) = stats(&server, "mnist");
    assert_eq!(samples - samples_before, 96);
    assert!(
        runs - runs_before < 96,
        "no request was batched: {} runs for 96 samples",
        runs - runs_before
    );
}

#[test]
fn a_full_model_queue_is_refused_fast_on_every_protocol() {
    let models = slow_models();
    let server = Server::start(
        models.path(),
        &[
            "--instances",
            "1",
            "--max-queue-size",
            "1",
            "--dynamic-batching",
            "false",
        ],
    );
    let (_, config) = server.get("/v2/models/slow/config");
    assert!(config.get("dynamic_batching").is_none(), "{config}");
    let busy = occupy(&server);
    wait_for_queue(&server, (0, 1));
    // The one place in the queue is taken by a second long request.
    let queued = occupy(&server);
    wait_for_queue(&server, (1, 1));

    let (status, body) = server.post("/api/v1/ml/inference", &ml_row(json!({})));
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "overloaded");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("max_queue_size"), "{message}");

    let (status, body) = server.post(
        "/v2/models/slow/infer",
        &json!({"inputs": [{"name": "x", "shape": [1, 512], "datatype": "FP32", "data": vec![0.5; 512]}]}),
    );
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("overloaded"),
        "{body}"
    );

    let status = grpc_infer(&server, None);
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    // Each says when to come back.
    let told = ("1".to_string(), "1".to_string(), "1000".to_string());
    assert_eq!(retry_after(&server), told);
    // Refused at once: the queued request ahead of them has not even started.
    assert!(!queued.is_finished(), "the refusals waited for the engine");
    assert_eq!(busy.join().unwrap(), 200);
    assert_eq!(queued.join().unwrap(), 200);
}

#[test]
fn the_in_flight_cap_sheds_load_and_spares_health() {
    let models = slow_models();
    let server = Server::start(models.path(), &["--instances", "1", "--max-in-flight", "1"]);
    let busy = occupy(&server);
    wait_for_queue(&server, (0, 1));

    let (status, body) = server.post("/api/v1/ml/inference", &ml_row(json!({})));
    assert_eq!(status, 429, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("1 requests are in flight (--max-in-flight)"),
        "{message}"
    );
    let (status, body) = server.post("/v2/models/slow/infer", &json!({}));
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("in flight"),
        "{body}"
    );
    let status = grpc_infer(&server, None);
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let told = ("1".to_string(), "1".to_string(), "1000".to_string());
    assert_eq!(retry_after(&server), told);
    // Health, readiness and metadata are not inference: never shed.
    assert_eq!(server.get("/v2/health/ready").0, 200);
    assert_eq!(server.get("/readyz").0, 200);
    assert_eq!(server.get("/v2/models/slow").0, 200);

    assert_eq!(busy.join().unwrap(), 200);
    // The place is free again.
    let (status, body) = server.post("/api/v1/ml/inference", &ml_row(json!({})));
    assert_eq!(status, 200, "{body}");
}

#[test]
fn timeouts_and_gone_clients_are_dropped_before_the_engine() {
    let models = slow_models();
    let server = Server::start(models.path(), &["--instances", "1"]);
    let (samples_before, _) = stats(&server, "slow");
    let busy = occupy(&server);
    wait_for_queue(&server, (0, 1));

    // Each waits behind the busy request and times out long before it finishes.
    let (status, body) = server.post("/api/v1/ml/inference", &ml_row(json!({"timeout_ms": 50})));
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "deadline_exceeded");
    let (status, body) = server.post(
        "/v2/models/slow/infer",
        &json!({"parameters": {"timeout": 50_000},
                "inputs": [{"name": "x", "shape": [1, 512], "datatype": "FP32", "data": vec![0.5; 512]}]}),
    );
    assert_eq!(status, 504, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("timeout"),
        "{body}"
    );
    // The server answers DEADLINE_EXCEEDED a little before the deadline; on a loaded machine
    // tonic's client may still cancel first on its own timer (CANCELLED, "Timeout expired").
    // Either way the request must never reach the engine: the sample count below checks that.
    let status = grpc_infer(&server, Some(Duration::from_millis(50)));
    let client_gave_up = status.code() == Code::Cancelled && status.message() == "Timeout expired";
    assert!(
        status.code() == Code::DeadlineExceeded || client_gave_up,
        "{status:?}"
    );

    // A client that sends a request and hangs up.
    let address = server.base.trim_start_matches("http://").to_string();
    let body = ml_row(json!({})).to_string();
    let mut socket = std::net::TcpStream::connect(&address).unwrap();
    write!(
        socket,
        "POST /api/v1/ml/inference HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // It waits behind the three timed-out requests, which stay in the queue until an instance
    // takes them and throws them away.
    wait_for_queue(&server, (4, 1));
    drop(socket);

    // A bad timeout is an error, not a wait.
    let (status, body) = server.post("/api/v1/ml/inference", &ml_row(json!({"timeout_ms": 0})));
    assert_eq!(status, 422, "{body}");

    assert_eq!(busy.join().unwrap(), 200);
    // Only the busy request's 1024 samples ever reached the engine, and the model still serves.
    let (status, body) = server.post(
        "/api/v1/ml/inference",
        &ml_row(json!({"timeout_ms": 10_000})),
    );
    assert_eq!(status, 200, "{body}");
    let (samples, _) = stats(&server, "slow");
    assert_eq!(samples - samples_before, 1024 + 1);
}

#[test]
fn aicp_bench_reports_throughput_latency_and_the_servers_batch_size() {
    let server = Server::start(&repo_root().join("models"), &[]);
    let out = tempfile::tempdir().unwrap();
    let grpc_url = format!("http://{}", server.grpc);
    for (protocol, url) in [
        ("classify", server.base.as_str()),
        ("v2-json", server.base.as_str()),
        ("v2-binary", server.base.as_str()),
        ("grpc", grpc_url.as_str()),
    ] {
        let json_file = out.path().join(format!("{protocol}.json"));
        let output = Command::new(env!("CARGO_BIN_EXE_aicp"))
            .args(["bench", "--url", url, "--protocol", protocol])
            .args([
                "--concurrency",
                "1,4",
                "--duration",
                "0.5",
                "--warmup",
                "0.1",
            ])
            .args(["--requests", "2000", "--json"])
            .arg(&json_file)
            .output()
            .unwrap();
        let table = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{protocol}: {table}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(table.contains("p99 us") && table.contains("c=4"), "{table}");
        let results: Value =
            serde_json::from_str(&std::fs::read_to_string(&json_file).unwrap()).unwrap();
        let levels = results.as_array().unwrap();
        assert_eq!(levels.len(), 2, "{results}");
        for level in levels {
            assert_eq!(level["errors"], 0, "{level}");
            assert!(level["requests"].as_u64().unwrap() > 0, "{level}");
            assert!(level["requests"].as_u64().unwrap() <= 2000, "{level}");
            assert!(level["throughput"].as_f64().unwrap() > 0.0, "{level}");
            let p = &level["latency_us"];
            assert!(
                p["p50"].as_u64() <= p["p99"].as_u64() && p["p99"].as_u64() <= p["max"].as_u64(),
                "{level}"
            );
            // Read from the server's counters: at least one sample per engine run.
            assert!(
                level["server_avg_batch"].as_f64().unwrap() >= 1.0,
                "{level}"
            );
        }
    }
    // A fixed rate, and an error the tool explains instead of counting.
    let output = Command::new(env!("CARGO_BIN_EXE_aicp"))
        .args([
            "bench",
            "--url",
            &server.base,
            "--rate",
            "200",
            "--duration",
            "0.5",
            "--warmup",
            "0",
            "--json",
            "-",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(results[0]["rate"], 200.0);
    assert!(results[0]["requests"].as_u64().unwrap() > 50, "{results}");
    let output = Command::new(env!("CARGO_BIN_EXE_aicp"))
        .args([
            "bench",
            "--url",
            &server.base,
            "--model",
            "nope",
            "--duration",
            "0.2",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the first request failed") && stderr.contains("nope"),
        "{stderr}"
    );
}

/// Sends SIGTERM to the server and waits for it to exit.
fn terminate(server: &mut Server) -> std::process::ExitStatus {
    send_sigterm(server);
    wait_for_exit(server)
}

fn send_sigterm(server: &Server) {
    let pid = server.child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success());
}

/// Waits (at most 60 s) for the server to exit.
fn wait_for_exit(server: &mut Server) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn shutdown_turns_readiness_false_first_then_finishes_requests_in_flight() {
    let models = slow_models();
    let mut server = Server::start(models.path(), &["--shutdown-delay-secs", "1"]);
    let first = occupy(&server);
    wait_for_queue(&server, (0, 1));
    let second = occupy(&server);
    wait_for_queue(&server, (1, 1));

    send_sigterm(&server);
    // Not ready at once, while it still answers (the shutdown delay).
    let mut not_ready = None;
    for _ in 0..200 {
        let (status, body) = server.get("/readyz");
        if status == 503 {
            not_ready = Some(body);
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let body = not_ready.expect("readiness should turn false as shutdown starts");
    assert!(
        body["reason"].as_str().unwrap().contains("shutting down"),
        "{body}"
    );
    let (status, _) = server.get("/v2/health/ready");
    assert_eq!(status, 503);

    // Both requests finish, then the server exits cleanly.
    assert_eq!(first.join().unwrap(), 200);
    assert_eq!(second.join().unwrap(), 200);
    let exit = wait_for_exit(&mut server);
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn the_drain_timeout_bounds_how_long_shutdown_waits() {
    let models = slow_models();
    let mut server = Server::start(models.path(), &["--drain-timeout-secs", "0"]);
    let running = occupy(&server);
    wait_for_queue(&server, (0, 1));
    let queued: Vec<_> = (0..4).map(|_| occupy(&server)).collect();
    wait_for_queue(&server, (4, 1));
    // Two seconds of work are in flight; the server does not wait for them.
    let exit = terminate(&mut server);
    assert!(exit.success(), "{exit:?}");
    let answered = std::iter::once(running)
        .chain(queued)
        .map(|request| request.join())
        .filter(|status| matches!(status, Ok(200)))
        .count();
    assert!(
        answered < 5,
        "every request finished: the drain timeout was not applied"
    );
}
