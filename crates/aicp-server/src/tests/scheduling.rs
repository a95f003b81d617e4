//! The scheduler seen through the front ends: concurrent requests batched without mixing up
//! their answers, overload refused at once on every protocol (a model's queue, and the cap on
//! requests in flight) with when to come back, and timeouts and clients that hang up dropped
//! before the engine. A gated fake engine ([`Gate`]) holds the one instance busy for as long
//! as a test needs, so none of this waits on a slow model or a timer.

use std::sync::Arc;
use std::time::Duration;

use aicp_runtime::Batching;
use aicp_testkit::{digits, fixtures};
use axum::http::HeaderMap;
use serde_json::{Value, json};
use tonic::Code;

use crate::tests::grpc::request;
use crate::tests::support::{Gate, OpenOnDrop, Options, Server, binary_request, engine_logits};

/// The slow fixture's model (`slow`, input `x` [N, 512]) on a gated engine with one instance,
/// gate closed; `tune` adjusts the options.
struct Gated {
    server: Arc<Server>,
    gate: Gate,
    _open: OpenOnDrop,
    _models: tempfile::TempDir,
    /// Runs and samples the engine saw before the test began (the warm-up).
    before: (usize, usize),
}

async fn gated(tune: impl FnOnce(&mut Options)) -> Gated {
    gated_beside(tune, |_| {}).await
}

/// [`gated`], with `add` putting more into the model directory first.
async fn gated_beside(
    tune: impl FnOnce(&mut Options),
    add: impl FnOnce(&std::path::Path),
) -> Gated {
    let models = tempfile::tempdir().unwrap();
    fixtures::slow(models.path());
    add(models.path());
    let gate = Gate::default();
    let mut options = Options {
        engine: gate.engine(),
        batching: Batching {
            instances: Some(1),
            ..Batching::default()
        },
        ..Options::default()
    };
    tune(&mut options);
    let server = Arc::new(Server::start(models.path(), options).await);
    gate.close();
    Gated {
        server,
        before: gate.started(),
        _open: OpenOnDrop(gate.clone()),
        gate,
        _models: models,
    }
}

/// One row of the slow model through the ML API's inference route, with `extra` fields.
fn ml_row(extra: Value) -> Value {
    let mut body = json!({"model_name": "slow", "input_data": vec![0.5; 512]});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

fn v2_row(parameters: Value) -> Value {
    json!({"parameters": parameters,
           "inputs": [{"name": "x", "shape": [1, 512], "datatype": "FP32", "data": vec![0.5; 512]}]})
}

fn grpc_row() -> crate::grpc::proto::ModelInferRequest {
    request("slow", "FP32", &[1, 512], vec![0; 512 * 4])
}

/// Starts a request of one row over V2 binary in its own task; await it for its status.
fn occupy(server: &Arc<Server>) -> tokio::task::JoinHandle<u16> {
    let server = server.clone();
    tokio::spawn(async move {
        let header = json!({
            "inputs": [{"name": "x", "shape": [1, 512], "datatype": "FP32",
                        "parameters": {"binary_data_size": 512 * 4}}],
            "outputs": [{"name": "y", "parameters": {"binary_data": true}}],
        });
        let raw: Vec<u8> = std::iter::repeat_n(0.5f32.to_le_bytes(), 512)
            .flatten()
            .collect();
        let request = binary_request("/v2/models/slow/infer", &header, &raw, None);
        server.call(request).await.status().as_u16()
    })
}

fn retry_after(headers: &HeaderMap) -> &str {
    headers["retry-after"].to_str().unwrap()
}

/// Checks that an inference request on each protocol is refused as overloaded, at once, with
/// when to come back; `says` is in the ML API's message.
async fn refused_on_every_protocol(server: &Server, says: &str) {
    let ml = crate::tests::support::post(
        "/api/v1/ml/inference",
        "application/json",
        ml_row(json!({})).to_string(),
    );
    let (status, headers, body) = server.send(ml).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "overloaded");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(says), "{message}");
    assert_eq!(retry_after(&headers), "1");

    let v2 = crate::tests::support::post(
        "/v2/models/slow/infer",
        "application/json",
        v2_row(json!({})).to_string(),
    );
    let (status, headers, body) = server.send(v2).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].as_str().unwrap().contains(says), "{body}");
    assert_eq!(retry_after(&headers), "1");

    let status = server
        .grpc()
        .await
        .model_infer(grpc_row())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let pushback = status.metadata().get("grpc-retry-pushback-ms").unwrap();
    assert_eq!(pushback, "1000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_batched_and_each_gets_its_own_answer() {
    // A queue delay makes batches form even on a fast machine.
    let options = Options {
        batching: Batching {
            instances: Some(1),
            max_queue_delay_us: Some(3000),
            ..Batching::default()
        },
        ..Options::default()
    };
    let server = Arc::new(Server::start(&aicp_testkit::bundled_models(), options).await);
    let images: Vec<Vec<f32>> = digits(96).into_iter().map(|(p, _)| p).collect();
    // Single-request inference in this process, one digit at a time: the reference.
    let want: Vec<Vec<f32>> = images
        .iter()
        .map(|image| engine_logits(std::slice::from_ref(image)))
        .collect();
    let (images, want) = (Arc::new(images), Arc::new(want));
    let (samples_before, runs_before) = server.counts("mnist");

    // 24 clients at once, each sending its share of digits one by one: classify and V2 JSON
    // alternate, so batches mix the two front ends.
    let clients: Vec<_> = (0..24)
        .map(|worker| {
            let (server, images, want) = (server.clone(), images.clone(), want.clone());
            tokio::spawn(async move {
                for i in (worker..images.len()).step_by(24) {
                    let got: Vec<f32> = if i % 2 == 0 {
                        let (status, body) = server
                            .post(
                                "/api/v1/ml/inference",
                                &json!({"input_data": images[i], "input_shape": [1, 784]}),
                            )
                            .await;
                        assert_eq!(status, 200, "{body}");
                        serde_json::from_value(body["outputs"][0]["data"].clone()).unwrap()
                    } else {
                        let (status, body) = server
                            .post(
                                "/v2/models/mnist/infer",
                                &json!({"id": format!("digit-{i}"), "inputs": [{
                                    "name": "input", "shape": [1, 1, 28, 28],
                                    "datatype": "FP32", "data": images[i]}]}),
                            )
                            .await;
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
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    // The model configuration says how it is scheduled, over REST and gRPC alike.
    let (status, config) = server.get("/v2/models/mnist/config").await;
    assert_eq!(status, 200, "{config}");
    assert_eq!(
        config["dynamic_batching"]["max_queue_delay_microseconds"],
        3000
    );
    assert_eq!(config["instance_group"][0]["count"], 1);
    let request = crate::grpc::proto::ModelConfigRequest {
        name: "mnist".into(),
        version: String::new(),
    };
    let grpc_config = server
        .grpc()
        .await
        .model_config(request)
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert_eq!(
        grpc_config
            .dynamic_batching
            .unwrap()
            .max_queue_delay_microseconds,
        3000
    );

    let (samples, runs) = server.counts("mnist");
    assert_eq!(samples - samples_before, 96);
    assert!(
        runs - runs_before < 96,
        "no request was batched: {} runs for 96 samples",
        runs - runs_before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_model_queue_is_refused_at_once_on_every_protocol() {
    let gated = gated(|options| {
        options.batching.max_queue_size = Some(1);
        options.batching.dynamic = Some(false);
    })
    .await;
    let (server, gate) = (&gated.server, &gated.gate);
    let (_, config) = server.get("/v2/models/slow/config").await;
    assert!(config.get("dynamic_batching").is_none(), "{config}");
    let busy = occupy(server);
    server.wait_for_queue("slow", 0, 1).await;
    // The one place in the queue is taken by a second request.
    let queued = occupy(server);
    server.wait_for_queue("slow", 1, 1).await;

    refused_on_every_protocol(server, "max_queue_size").await;
    // Refused at once: the queued request ahead of them has not even started.
    assert!(!queued.is_finished(), "the refusals waited for the engine");
    gate.open();
    assert_eq!(busy.await.unwrap(), 200);
    assert_eq!(queued.await.unwrap(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_flight_cap_sheds_load_and_spares_health() {
    let gated = gated(|options| options.max_in_flight = 1).await;
    let (server, gate) = (&gated.server, &gated.gate);
    let busy = occupy(server);
    server.wait_for_queue("slow", 0, 1).await;

    refused_on_every_protocol(server, "1 requests are in flight (--max-in-flight)").await;
    // Health, readiness and metadata are not inference: never shed.
    assert_eq!(server.get("/v2/health/ready").await.0, 200);
    assert_eq!(server.get("/readyz").await.0, 200);
    assert_eq!(server.get("/v2/models/slow").await.0, 200);

    gate.open();
    assert_eq!(busy.await.unwrap(), 200);
    // The place is free again.
    let (status, body) = server
        .post("/api/v1/ml/inference", &ml_row(json!({})))
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_gone_clients_are_dropped_before_the_engine() {
    let gated = gated(|_| {}).await;
    let (server, gate, before) = (&gated.server, &gated.gate, gated.before);
    let busy = occupy(server);
    server.wait_for_queue("slow", 0, 1).await;

    // Each waits behind the busy request and times out long before it finishes.
    let (status, body) = server
        .post("/api/v1/ml/inference", &ml_row(json!({"timeout_ms": 50})))
        .await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "deadline_exceeded");
    let (status, body) = server
        .post("/v2/models/slow/infer", &v2_row(json!({"timeout": 50_000})))
        .await;
    assert_eq!(status, 504, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("timeout"),
        "{body}"
    );
    // The server answers DEADLINE_EXCEEDED a little before the deadline; tonic's client may
    // still cancel first on its own timer (CANCELLED, "Timeout expired"). Either way the
    // request must never reach the engine: the sample count below checks that.
    let mut call = tonic::Request::new(grpc_row());
    call.set_timeout(Duration::from_millis(50));
    let status = server.grpc().await.model_infer(call).await.unwrap_err();
    let client_gave_up = status.code() == Code::Cancelled && status.message() == "Timeout expired";
    assert!(
        status.code() == Code::DeadlineExceeded || client_gave_up,
        "{status:?}"
    );

    // A client that sends a request and hangs up: its request's future is dropped, as hyper
    // drops it when the connection closes. It waits behind the three timed-out requests,
    // which stay in the queue until an instance takes them and throws them away.
    let gone = {
        let server = server.clone();
        tokio::spawn(async move {
            server
                .post("/api/v1/ml/inference", &ml_row(json!({})))
                .await
        })
    };
    server.wait_for_queue("slow", 4, 1).await;
    gone.abort();
    // `abort` only asks: the request's future is dropped when the runtime next runs the task.
    // Waiting for that keeps the gate from opening first on a busy machine, which would hand
    // the engine a request whose client is still, for a moment, there.
    assert!(gone.await.unwrap_err().is_cancelled());

    // A bad timeout is an error, not a wait.
    let (status, body) = server
        .post("/api/v1/ml/inference", &ml_row(json!({"timeout_ms": 0})))
        .await;
    assert_eq!(status, 422, "{body}");

    gate.open();
    assert_eq!(busy.await.unwrap(), 200);
    // Only the busy request reached the engine, and the model still serves.
    let (status, body) = server
        .post(
            "/api/v1/ml/inference",
            &ml_row(json!({"timeout_ms": 10_000})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (runs, samples) = gate.started();
    assert_eq!((runs - before.0, samples - before.1), (2, 2));
    assert_eq!(server.counts("slow").0, 2);
}

/// A chain takes one place among the requests in flight, not one per step, and its one
/// deadline covers every step: a chain of `slow` twice that times out in its first step never
/// reaches its second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_takes_one_place_in_flight_and_its_deadline_covers_every_step() {
    let chain = |root: &std::path::Path| {
        std::fs::create_dir_all(root.join("slow_twice")).unwrap();
        let steps = "[[steps]]\nmodel = \"slow\"\n[[steps]]\nmodel = \"slow\"\ninputs = { x = \"slow.y\" }\n";
        std::fs::write(root.join("slow_twice/model.toml"), steps).unwrap();
    };
    let gated = gated_beside(|options| options.max_in_flight = 1, chain).await;
    let (server, gate) = (&gated.server, &gated.gate);
    let chain_row = |timeout_us: u64| {
        let mut body = v2_row(json!({"timeout": timeout_us}));
        body["inputs"][0]["name"] = json!("x");
        body
    };

    gate.open();
    let (status, body) = server
        .post("/v2/models/slow_twice/infer", &chain_row(10_000_000))
        .await;
    assert_eq!(status, 200, "{body}");
    let (runs, _) = gate.started();
    assert_eq!(runs - gated.before.0, 2, "one run per step");

    gate.close();
    let (status, body) = server
        .post("/v2/models/slow_twice/infer", &chain_row(50_000))
        .await;
    assert_eq!(status, 504, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("chain step 1 (model \"slow\")"),
        "{message}"
    );
    gate.open();
    // The first step's run finishes; the second step never starts.
    server.wait_for_queue("slow", 0, 0).await;
    let (status, body) = server
        .post("/api/v1/ml/inference", &ml_row(json!({})))
        .await;
    assert_eq!(status, 200, "{body}");
    let (runs, _) = gate.started();
    assert_eq!(
        runs - gated.before.0,
        4,
        "two steps, then one, then the last request"
    );
}
