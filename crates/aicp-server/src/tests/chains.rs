//! Chains through the front ends: a model.toml that lists `[[steps]]` serves the steps' models
//! one after another under its own name, over V2 REST and gRPC, giving what running the steps
//! by hand gives; steps whose names or types do not fit are refused at load with the reason;
//! a step that is unloaded makes the chain not ready until it is loaded again. (One
//! admission and one deadline for the whole chain: `scheduling.rs`. An encoder and its head
//! from torch exports, against onnxruntime: the full lane's `preprocess` test.)

use std::path::Path;

use crate::grpc::proto::ModelInferRequest;
use crate::grpc::proto::model_infer_request::InferInputTensor;
use aicp_runtime::ControlMode;
use aicp_testkit::fixtures;
use serde_json::{Value, json};

use crate::tests::support::{Options, Server};

/// The values of a JSON array of numbers.
fn floats(values: &Value) -> Vec<f32> {
    values
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

/// Writes chain `name`: a directory with only a model.toml.
fn chain(root: &Path, name: &str, toml: &str) {
    std::fs::create_dir_all(root.join(name)).unwrap();
    std::fs::write(root.join(name).join("model.toml"), toml).unwrap();
}

/// `(a, b) -> two_inputs -> (sum = a + 2b, diff = a - b) -> two_inputs(a = sum, b)`: the
/// second step takes the first's output under another name and the chain's input `b` again.
const ADDED: &str = r#"
description = "a + 4b and a + b"
[[steps]]
model = "two_inputs"
[[steps]]
model = "two_inputs"
inputs = { a = "two_inputs.sum" }
"#;

/// `(a, b) -> two_inputs -> echo_fp32(x = diff)`.
const ECHOED: &str = r#"
[[steps]]
model = "two_inputs"
[[steps]]
model = "echo_fp32"
inputs = { x = "two_inputs.diff" }
"#;

/// A directory with the fixtures `two_inputs` and `echo_*`, and the chains `added` and
/// `echoed`, served in `control` mode.
async fn server(control: ControlMode) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    fixtures::two_inputs(dir.path());
    fixtures::echoes(dir.path());
    chain(dir.path(), "added", ADDED);
    chain(dir.path(), "echoed", ECHOED);
    let options = Options {
        control,
        ..Options::default()
    };
    let server = Server::start(dir.path(), options).await;
    (dir, server)
}

/// Infers `inputs` (name, rows of 3) with `model` over V2 REST JSON: each output by name.
async fn infer(server: &Server, model: &str, inputs: &[(&str, &[f32])]) -> Value {
    let inputs: Vec<Value> = inputs
        .iter()
        .map(|(name, data)| {
            json!({"name": name, "shape": [data.len() / 3, 3], "datatype": "FP32", "data": data})
        })
        .collect();
    let (status, body) = server
        .post(
            &format!("/v2/models/{model}/infer"),
            &json!({"inputs": inputs}),
        )
        .await;
    assert_eq!(status, 200, "{model}: {body}");
    body["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["name"].as_str().unwrap().to_string(), o["data"].clone()))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

const A: [f32; 6] = [1.0, 2.0, 3.0, -4.0, 0.5, 8.0];
const B: [f32; 6] = [0.25, -1.0, 7.0, 2.0, 3.0, -0.5];

#[tokio::test]
async fn a_chain_answers_as_its_steps_run_by_hand_over_every_protocol() {
    let (_dir, server) = server(ControlMode::Poll).await;

    // By hand: the first step, then the second on its outputs.
    let first = infer(&server, "two_inputs", &[("a", &A), ("b", &B)]).await;
    let sum = floats(&first["sum"]);
    let by_hand = infer(&server, "two_inputs", &[("a", &sum), ("b", &B)]).await;
    let diff = floats(&first["diff"]);
    let echoed_by_hand = infer(&server, "echo_fp32", &[("x", &diff)]).await;

    let added = infer(&server, "added", &[("a", &A), ("b", &B)]).await;
    assert_eq!(added, by_hand);
    let expected: Vec<f32> = A.iter().zip(&B).map(|(a, b)| a + 4.0 * b).collect();
    assert_eq!(floats(&added["sum"]), expected);
    let echoed = infer(&server, "echoed", &[("a", &A), ("b", &B)]).await;
    assert_eq!(echoed, echoed_by_hand);

    // gRPC, raw contents: the same answer.
    let raw = |values: &[f32]| values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let tensor = |name: &str| InferInputTensor {
        name: name.into(),
        datatype: "FP32".into(),
        shape: vec![2, 3],
        ..Default::default()
    };
    let response = server
        .grpc()
        .await
        .model_infer(ModelInferRequest {
            model_name: "added".into(),
            inputs: vec![tensor("a"), tensor("b")],
            raw_input_contents: vec![raw(&A), raw(&B)],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = response.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["sum", "diff"]);
    let sum: Vec<f32> = response.raw_output_contents[0]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(sum, expected);

    // What a client learns of it: the first step's inputs, the last step's outputs, and its
    // steps as Triton describes an ensemble's.
    let (status, metadata) = server.get("/v2/models/added").await;
    assert_eq!(status, 200, "{metadata}");
    assert_eq!(metadata["platform"], "ensemble");
    assert_eq!(metadata["inputs"][1]["name"], "b");
    assert_eq!(metadata["outputs"][0]["name"], "sum");
    let (status, config) = server.get("/v2/models/added/config").await;
    assert_eq!(status, 200, "{config}");
    let steps = &config["ensemble_scheduling"]["step"];
    assert_eq!(steps[1]["model_name"], "two_inputs");
    assert_eq!(
        steps[1]["input_map"],
        json!({"a": "two_inputs.sum", "b": "b"})
    );
    assert_eq!(config["max_batch_size"], 1024);
    let (_, listing) = server.get("/api/v1/ml/models").await;
    let listed = listing["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "added")
        .unwrap()
        .clone();
    assert_eq!(listed["state"], "ready", "{listed}");
    assert_eq!(listed["engine"], Value::Null);
    let notes = listed["versions"][0]["notes"].to_string();
    assert!(notes.contains("two_inputs v1 -> two_inputs v1"), "{listed}");

    // Each step counts in its model's statistics; the chain in its own.
    let (_, stats) = server.get("/v2/models/added/stats").await;
    assert_eq!(
        stats["model_stats"][0]["inference_stats"]["success"]["count"],
        2
    );
    let (_, stats) = server.get("/v2/models/two_inputs/stats").await;
    // By hand twice, `added` twice (REST and gRPC) with two steps each, `echoed` once.
    assert_eq!(
        stats["model_stats"][0]["inference_stats"]["success"]["count"],
        7
    );

    // A request that does not fit the chain's inputs is refused as the first step would be.
    let (status, body) = server
        .post(
            "/v2/models/added/infer",
            &json!({"inputs": [{"name": "a", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("takes 2 input(s)"),
        "{body}"
    );
}

#[tokio::test]
async fn chains_whose_steps_do_not_fit_are_refused_at_load_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    fixtures::two_inputs(dir.path());
    fixtures::echoes(dir.path());
    aicp_testkit::install(dir.path(), "mnist", "mnist", 1);
    chain(dir.path(), "added", ADDED);
    let step = |model: &str, inputs: &str| format!("[[steps]]\nmodel = \"{model}\"\n{inputs}\n");
    let cases = [
        (
            "typo",
            step("two_inputs", "") + &step("echo_fp32", "inputs = { x = \"two_inputs.product\" }"),
            vec![
                "\"two_inputs.product\"",
                "\"two_inputs.sum\", \"two_inputs.diff\"",
            ],
        ),
        (
            "unmapped",
            step("two_inputs", "") + &step("echo_fp32", ""),
            vec!["input \"x\"", "inputs = { \"x\" = \"<model>.<output>\" }"],
        ),
        (
            "unknown_input",
            step("two_inputs", "inputs = { c = \"a\" }"),
            vec!["maps input \"c\"", "its inputs: \"a\", \"b\""],
        ),
        (
            "mistyped",
            step("two_inputs", "") + &step("echo_int64", "inputs = { x = \"two_inputs.sum\" }"),
            vec!["takes INT64, but \"two_inputs.sum\" is FP32"],
        ),
        (
            "misshapen",
            step("two_inputs", "") + &step("mnist", "inputs = { input = \"two_inputs.sum\" }"),
            vec!["takes samples of 784 values ([-1, 1, 28, 28]), but \"two_inputs.sum\" has 3"],
        ),
        (
            "missing",
            step("nowhere", ""),
            vec!["step 1 (model \"nowhere\")", "not found"],
        ),
        ("nested", step("added", ""), vec!["is itself a chain"]),
        (
            "empty_version",
            step("two_inputs", "version = 7"),
            vec!["no version 7"],
        ),
    ];
    for (name, toml, _) in &cases {
        chain(dir.path(), name, toml);
    }
    // A chain is a directory without versions of its own.
    chain(dir.path(), "with_versions", &step("two_inputs", ""));
    fixtures::two_inputs(&dir.path().join("with_versions/1"));
    std::fs::rename(
        dir.path().join("with_versions/1/two_inputs.onnx"),
        dir.path().join("with_versions/1/model.onnx"),
    )
    .unwrap();
    let server = Server::start(dir.path(), Options::default()).await;

    for (name, _, says) in &cases {
        let reason = server.failure_reason(name).await;
        for said in says {
            assert!(reason.contains(said), "{name}: {reason:?} lacks {said:?}");
        }
        let (status, body) = server.get(&format!("/v2/models/{name}/ready")).await;
        assert_eq!(status, 503, "{name}: {body}");
    }
    let reason = server.failure_reason("with_versions").await;
    assert!(reason.contains("1/model.onnx"), "{reason}");
    // The chain that fits serves beside them.
    let added = infer(&server, "added", &[("a", &A), ("b", &B)]).await;
    assert_eq!(added["diff"].as_array().unwrap().len(), 6);
}

#[tokio::test]
async fn a_step_that_is_unloaded_makes_the_chain_not_ready_until_it_is_loaded_again() {
    let (_dir, server) = server(ControlMode::Explicit).await;
    infer(&server, "echoed", &[("a", &A), ("b", &B)]).await;

    // What POST /v2/repository/models/echo_fp32/unload does (with the admin token).
    server.control.unload("echo_fp32").unwrap();
    let (status, _) = server.get("/v2/models/echoed/ready").await;
    assert_eq!(status, 503);
    let why = server.failure_reason("echoed").await;
    assert!(
        why.contains("step 2 (model \"echo_fp32\")") && why.contains("unloaded"),
        "{why}"
    );
    let (status, body) = server
        .post(
            "/v2/models/echoed/infer",
            &json!({"inputs": [
                {"name": "a", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]},
                {"name": "b", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("echo_fp32"),
        "{body}"
    );
    // The other chain, whose steps all serve, is untouched.
    infer(&server, "added", &[("a", &A), ("b", &B)]).await;

    server.control.load("echo_fp32").unwrap();
    let (status, _) = server.get("/v2/models/echoed/ready").await;
    assert_eq!(status, 200);
    infer(&server, "echoed", &[("a", &A), ("b", &B)]).await;
    // Ready again, it starts its statistics afresh, as a model version loaded again does.
    let (_, stats) = server.get("/v2/models/echoed/stats").await;
    assert_eq!(
        stats["model_stats"][0]["inference_stats"]["success"]["count"],
        1
    );
}

/// The success count of `model`'s default version.
async fn successes(server: &Server, model: &str) -> u64 {
    let (_, stats) = server.get(&format!("/v2/models/{model}/stats")).await;
    stats["model_stats"][0]["inference_stats"]["success"]["count"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn a_step_whose_file_changes_is_run_in_its_new_load_and_the_chain_keeps_its_counts() {
    let (dir, server) = server(ControlMode::Poll).await;
    infer(&server, "echoed", &[("a", &A), ("b", &B)]).await;
    assert_eq!(successes(&server, "echo_fp32").await, 1);

    // The step's file is rewritten (the same bytes, later): the watcher loads it again.
    let file = std::fs::File::options()
        .append(true)
        .open(dir.path().join("echo_fp32.onnx"))
        .unwrap();
    file.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
    for _ in 0..2 {
        let control = server.control.clone();
        tokio::task::spawn_blocking(move || control.poll())
            .await
            .unwrap()
            .unwrap();
    }
    // The new load starts its statistics afresh...
    assert_eq!(successes(&server, "echo_fp32").await, 0);
    infer(&server, "echoed", &[("a", &A), ("b", &B)]).await;
    // ...and the chain ran on it, its own counts carried over.
    assert_eq!(successes(&server, "echo_fp32").await, 1);
    assert_eq!(successes(&server, "echoed").await, 2);
}
