//! Typed tensors from the wire to the engine and back: every datatype the protocols carry
//! through an echo model (`y = Identity(x)`), over V2 REST JSON and binary and gRPC typed and
//! raw contents, exactly as it went in; a request in another type than the model's refused with
//! both named; BYTES with lying length prefixes refused; scalars, a model without inputs and a
//! model of open rank; NaN and infinity passed through.

use std::sync::Arc;

use crate::grpc::proto::model_infer_request::InferInputTensor;
use crate::grpc::proto::{InferTensorContents, ModelInferRequest};
use aicp_core::{DataType, TensorData};
use aicp_runtime::Batching;
use aicp_testkit::fixtures;
use half::{bf16, f16};
use http_body_util::BodyExt;
use serde_json::{Value, json};

use crate::tests::support::{Options, Server, binary_request};

/// Two rows of three values of `datatype`, reaching for its edges.
fn sample(datatype: DataType) -> TensorData {
    match datatype {
        DataType::Bool => TensorData::Bool(vec![true, false, true, false, false, true]),
        DataType::U8 => TensorData::U8(vec![0, 1, 7, 128, 254, 255]),
        DataType::U16 => TensorData::U16(vec![0, 1, 300, 40_000, 65_534, 65_535]),
        DataType::U32 => TensorData::U32(vec![0, 1, 70_000, 1 << 31, u32::MAX - 1, u32::MAX]),
        DataType::U64 => TensorData::U64(vec![0, 1, 1 << 40, 1 << 63, u64::MAX - 1, u64::MAX]),
        DataType::I8 => TensorData::I8(vec![i8::MIN, -1, 0, 1, 100, i8::MAX]),
        DataType::I16 => TensorData::I16(vec![i16::MIN, -300, 0, 1, 300, i16::MAX]),
        DataType::I32 => TensorData::I32(vec![i32::MIN, -70_000, 0, 1, 1 << 30, i32::MAX]),
        DataType::I64 => TensorData::I64(vec![i64::MIN, -(1 << 40), 0, 1, 1 << 53, i64::MAX]),
        DataType::F16 => [0.5, -2.0, 0.0, 65504.0, -0.125, 3.0]
            .into_iter()
            .map(f16::from_f32)
            .collect(),
        DataType::BF16 => [0.5, -2.0, 0.0, 1e30, -0.125, 3.0]
            .into_iter()
            .map(bf16::from_f32)
            .collect(),
        DataType::F32 => TensorData::F32(vec![0.1, -2.5, 0.0, 3.4e38, -1e-30, 7.0]),
        DataType::F64 => TensorData::F64(vec![0.1, -2.5, 0.0, 1e300, -1e-300, 7.0]),
        DataType::Bytes => ["a", "", "héllo", "with space", "\n", "last"]
            .into_iter()
            .map(|s| s.as_bytes().to_vec())
            .collect(),
        DataType::Other => unreachable!("no sample of an unnamed type"),
    }
}

fn echo_name(datatype: DataType) -> String {
    format!("echo_{}", datatype.name().to_lowercase())
}

/// The datatypes tract runs: every one but BF16, which it lacks.
fn tract_types() -> impl Iterator<Item = DataType> {
    fixtures::TYPES
        .iter()
        .map(|(_, name)| DataType::parse(name).unwrap())
        .filter(|t| *t != DataType::BF16)
}

async fn echoes() -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    fixtures::echoes(dir.path());
    (Server::start(dir.path(), Options::default()).await, dir)
}

#[tokio::test]
async fn every_datatype_goes_through_json_and_binary_rest_as_it_came() {
    let (server, _dir) = echoes().await;
    for datatype in tract_types() {
        let model = echo_name(datatype);
        let data = sample(datatype);
        let path = format!("/v2/models/{model}/infer");
        // JSON in, JSON out: numbers, true/false, strings.
        let body = json!({"inputs": [
            {"name": "x", "shape": [2, 3], "datatype": datatype.name(), "data": data}
        ]});
        let (status, answer) = server.post(&path, &body).await;
        assert_eq!(status, 200, "{datatype}: {answer}");
        let output = &answer["outputs"][0];
        assert_eq!(output["datatype"], datatype.name(), "{answer}");
        assert_eq!(output["shape"], json!([2, 3]));
        let (echoed, _) = TensorData::from_json(datatype, &output["data"].to_string()).unwrap();
        assert_eq!(echoed, data, "{datatype}");

        // Binary in, binary out: the same bytes back.
        let raw = data.to_le_bytes();
        let header = json!({
            "inputs": [{"name": "x", "shape": [2, 3], "datatype": datatype.name(),
                        "parameters": {"binary_data_size": raw.len()}}],
            "outputs": [{"name": "y", "parameters": {"binary_data": true}}],
        });
        let response = server
            .call(binary_request(&path, &header, &raw, None))
            .await;
        assert_eq!(response.status(), 200, "{datatype}");
        let length: usize = response.headers()["inference-header-content-length"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let described: Value = serde_json::from_slice(&body[..length]).unwrap();
        assert_eq!(described["outputs"][0]["datatype"], datatype.name());
        assert_eq!(&body[length..], raw.as_slice(), "{datatype}");
    }
}

#[tokio::test]
async fn every_datatype_goes_through_grpc_typed_and_raw_as_it_came() {
    let (server, _dir) = echoes().await;
    let mut client = server.grpc().await;
    for datatype in tract_types() {
        let data = sample(datatype);
        let input = InferInputTensor {
            name: "x".into(),
            datatype: datatype.name().into(),
            shape: vec![2, 3],
            ..Default::default()
        };
        // Raw in, raw out.
        let raw = ModelInferRequest {
            model_name: echo_name(datatype),
            inputs: vec![input.clone()],
            raw_input_contents: vec![data.to_le_bytes()],
            ..Default::default()
        };
        let response = client.model_infer(raw).await.unwrap().into_inner();
        assert_eq!(response.outputs[0].datatype, datatype.name());
        assert_eq!(response.outputs[0].shape, vec![2, 3]);
        assert_eq!(
            TensorData::from_le_bytes(datatype, &response.raw_output_contents[0]).unwrap(),
            data,
            "{datatype} raw"
        );
        // Typed in, typed out (FP16 has no typed field: it is refused in, and answered raw).
        let Some(contents) = typed(&data) else {
            continue;
        };
        let request = ModelInferRequest {
            model_name: echo_name(datatype),
            inputs: vec![InferInputTensor {
                contents: Some(contents.clone()),
                ..input
            }],
            ..Default::default()
        };
        let response = client.model_infer(request).await.unwrap().into_inner();
        assert!(response.raw_output_contents.is_empty(), "{datatype}");
        assert_eq!(
            response.outputs[0].contents.as_ref(),
            Some(&contents),
            "{datatype} typed"
        );
    }
}

/// The typed contents of `data`, in the field the protocol gives its type (narrower integers
/// widened); `None` for the half-precision floats, which have no field.
fn typed(data: &TensorData) -> Option<InferTensorContents> {
    let mut c = InferTensorContents::default();
    match data.clone() {
        TensorData::Bool(v) => c.bool_contents = v,
        TensorData::U8(v) => c.uint_contents = v.into_iter().map(u32::from).collect(),
        TensorData::U16(v) => c.uint_contents = v.into_iter().map(u32::from).collect(),
        TensorData::U32(v) => c.uint_contents = v,
        TensorData::U64(v) => c.uint64_contents = v,
        TensorData::I8(v) => c.int_contents = v.into_iter().map(i32::from).collect(),
        TensorData::I16(v) => c.int_contents = v.into_iter().map(i32::from).collect(),
        TensorData::I32(v) => c.int_contents = v,
        TensorData::I64(v) => c.int64_contents = v,
        TensorData::F32(v) => c.fp32_contents = v,
        TensorData::F64(v) => c.fp64_contents = v,
        TensorData::Bytes(v) => c.bytes_contents = v,
        TensorData::F16(_) | TensorData::BF16(_) => return None,
    }
    Some(c)
}

#[tokio::test]
async fn wrong_types_and_lying_bytes_are_refused_with_what_was_expected() {
    let (server, _dir) = echoes().await;
    let check = async |path: &str, body: Value, needle: &str| {
        let (status, answer) = server.post(path, &body).await;
        assert_eq!(status, 400, "{answer}");
        let message = answer["error"].as_str().unwrap();
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    };
    check(
        "/v2/models/echo_int64/infer",
        json!({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "INT32", "data": [1, 2, 3]}]}),
        "input \"x\": model \"echo_int64\" takes INT64, got INT32",
    )
    .await;
    check(
        "/v2/models/echo_bytes/infer",
        json!({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "BYTES", "data": [1, 2, 3]}]}),
        "does not fit BYTES",
    )
    .await;
    // A length prefix that runs past the data, and one with no data at all after it.
    for (raw, needle) in [
        (
            vec![9, 0, 0, 0, b'a'],
            "says it has 9 bytes, but only 1 follow",
        ),
        (
            vec![1, 0, 0, 0, b'a', 7, 0],
            "2 bytes left, too few for its 4-byte length",
        ),
    ] {
        let header = json!({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "BYTES",
                                        "parameters": {"binary_data_size": raw.len()}}]});
        let request = binary_request("/v2/models/echo_bytes/infer", &header, &raw, None);
        let (status, _, answer) = server.send(request).await;
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(needle),
            "{answer}"
        );
    }
    // Three elements announced, a million empty strings sent: the count is checked against the
    // shape before anything runs.
    let raw = vec![0u8; 4_000_000];
    let header = json!({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "BYTES",
                                    "parameters": {"binary_data_size": raw.len()}}]});
    let request = binary_request("/v2/models/echo_bytes/infer", &header, &raw, None);
    let (status, _, answer) = server.send(request).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("needs 3 values, got 1000000"),
        "{answer}"
    );

    // The same over gRPC: INVALID_ARGUMENT, with both types named, or the lie found.
    let mut client = server.grpc().await;
    let request = |model: &str, datatype: &str, contents: InferTensorContents, raw: Vec<u8>| {
        ModelInferRequest {
            model_name: model.into(),
            inputs: vec![InferInputTensor {
                name: "x".into(),
                datatype: datatype.into(),
                shape: vec![1, 3],
                contents: raw.is_empty().then_some(contents),
                ..Default::default()
            }],
            raw_input_contents: if raw.is_empty() { vec![] } else { vec![raw] },
            ..Default::default()
        }
    };
    let ints = InferTensorContents {
        int_contents: vec![1, 2, 3],
        ..Default::default()
    };
    for (request, needle) in [
        (
            request("echo_int64", "INT32", ints, vec![]),
            "input \"x\": model \"echo_int64\" takes INT64, got INT32",
        ),
        (
            request(
                "echo_bytes",
                "BYTES",
                InferTensorContents::default(),
                vec![9, 0, 0, 0, b'a'],
            ),
            "says it has 9 bytes, but only 1 follow",
        ),
    ] {
        let status = client.model_infer(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(needle), "{status:?}");
    }
}

#[tokio::test]
async fn scalars_empty_batches_models_without_inputs_and_open_ranks_are_served() {
    let (server, _dir) = echoes().await;
    // A scalar: shape [], one value; listed as such, and not batched.
    let (status, answer) = server
        .post(
            "/v2/models/scalar/infer",
            &json!({"inputs": [{"name": "x", "shape": [], "datatype": "INT64", "data": [42]}]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outputs"][0]["shape"], json!([]));
    assert_eq!(answer["outputs"][0]["data"], json!([42]));
    let (_, metadata) = server.get("/v2/models/scalar").await;
    assert_eq!(metadata["inputs"][0]["shape"], json!([]), "{metadata}");
    let (_, config) = server.get("/v2/models/scalar/config").await;
    assert_eq!(config["max_batch_size"], 0, "{config}");

    // No inputs at all.
    let (status, answer) = server
        .post("/v2/models/constant/infer", &json!({"inputs": []}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outputs"][0]["data"], json!([1.5, -2.0]));
    // Over gRPC, answered raw, as Triton answers a request without inputs.
    let mut client = server.grpc().await;
    let request = ModelInferRequest {
        model_name: "constant".into(),
        ..Default::default()
    };
    let response = client.model_infer(request).await.unwrap().into_inner();
    assert_eq!(
        TensorData::from_le_bytes(DataType::F32, &response.raw_output_contents[0]).unwrap(),
        TensorData::F32(vec![1.5, -2.0])
    );

    // An empty batch is a valid request to a batched model: outputs of no rows.
    let (status, answer) = server
        .post(
            "/v2/models/echo_fp32/infer",
            &json!({"inputs": [{"name": "x", "shape": [0, 3], "datatype": "FP32", "data": []}]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outputs"][0]["shape"], json!([0, 3]));

    // A model that leaves its rank open takes any shape.
    let (status, answer) = server
        .post(
            "/v2/models/open_rank/infer",
            &json!({"inputs": [{"name": "x", "shape": [2, 1, 2], "datatype": "FP32",
                                "data": [1, 2, 3, 4]}]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outputs"][0]["shape"], json!([2, 1, 2]));
    let (_, metadata) = server.get("/v2/models/open_rank").await;
    assert_eq!(metadata["inputs"][0]["shape"], json!([-1]), "{metadata}");
}

#[tokio::test]
async fn nan_and_infinity_pass_through_unless_a_range_is_declared() {
    let (server, _dir) = echoes().await;
    let values = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let header = json!({
        "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32",
                    "parameters": {"binary_data_size": raw.len()}}],
        "outputs": [{"name": "y", "parameters": {"binary_data": true}}],
    });
    let response = server
        .call(binary_request(
            "/v2/models/echo_fp32/infer",
            &header,
            &raw,
            None,
        ))
        .await;
    assert_eq!(response.status(), 200);
    let length: usize = response.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[length..], raw.as_slice());

    // The bundled model declares its input range: there, they are refused.
    let server = Server::bundled().await;
    let mut pixels = vec![0.0f32; 784];
    pixels[3] = f32::NAN;
    let raw: Vec<u8> = pixels.iter().flat_map(|v| v.to_le_bytes()).collect();
    let header = json!({"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32",
                                    "parameters": {"binary_data_size": raw.len()}}]});
    let request = binary_request("/v2/models/mnist/infer", &header, &raw, None);
    let (status, _, answer) = server.send(request).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("must be in [0, 1]"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_of_any_type_are_batched_and_each_gets_its_own_rows() {
    let dir = tempfile::tempdir().unwrap();
    fixtures::echoes(dir.path());
    let options = Options {
        batching: Batching {
            instances: Some(1),
            max_queue_delay_us: Some(20_000),
            ..Batching::default()
        },
        ..Options::default()
    };
    let server = Arc::new(Server::start(dir.path(), options).await);
    for model in ["echo_int64", "echo_bytes", "echo_bool"] {
        let clients: Vec<_> = (0..8i64)
            .map(|i| {
                let server = server.clone();
                tokio::spawn(async move {
                    let data = match model {
                        "echo_int64" => json!([i, i * 10, -i]),
                        "echo_bytes" => json!([format!("{i}"), "x", format!("{i}{i}")]),
                        _ => json!([i % 2 == 0, true, false]),
                    };
                    let datatype = match model {
                        "echo_int64" => "INT64",
                        "echo_bytes" => "BYTES",
                        _ => "BOOL",
                    };
                    let body = json!({"inputs": [
                        {"name": "x", "shape": [1, 3], "datatype": datatype, "data": data}
                    ]});
                    let (status, answer) = server
                        .post(&format!("/v2/models/{model}/infer"), &body)
                        .await;
                    assert_eq!(status, 200, "{answer}");
                    assert_eq!(answer["outputs"][0]["data"], data, "{model} request {i}");
                })
            })
            .collect();
        for client in clients {
            client.await.unwrap();
        }
        let (samples, runs) = server.counts(model);
        assert_eq!(samples, 8, "{model}");
        assert!(runs < 8, "{model}: no request was batched ({runs} runs)");
    }
}

#[tokio::test]
async fn a_type_an_engine_lacks_leaves_the_model_unavailable_with_the_type_named() {
    let (server, _dir) = echoes().await;
    let (status, index) = server.post("/v2/repository/index", &json!({})).await;
    assert_eq!(status, 200);
    let entry = index
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "echo_bf16")
        .unwrap()
        .clone();
    assert_eq!(entry["state"], "UNAVAILABLE", "{entry}");
    let reason = entry["reason"].as_str().unwrap().to_lowercase();
    assert!(
        reason.contains("bf16") || reason.contains("bfloat16"),
        "{entry}"
    );
}

/// The value of the metric line that starts with `prefix` in `/metrics`, if any.
async fn metric(server: &Server, prefix: &str) -> Option<f64> {
    let response = server.call(crate::tests::support::get("/metrics")).await;
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(body.to_vec()).unwrap();
    text.lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn declared_warmup_samples_run_at_load_and_one_that_does_not_fit_fails_the_load() {
    let dir = tempfile::tempdir().unwrap();
    fixtures::echoes(dir.path());
    // tract cannot analyse a model of open rank: it plans each shape, the warm-up's first.
    std::fs::copy(
        dir.path().join("open_rank.onnx"),
        dir.path().join("shapes.onnx"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("shapes.toml"),
        r#"
plan_cache_size = 2
[[warmup]]
name = "a square"
[warmup.inputs.x]
datatype = "FP32"
shape = [2, 2]
data = "random"
"#,
    )
    .unwrap();
    let ids: Vec<u8> = [5i64, 6, 7].iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(dir.path().join("ids.bin"), ids).unwrap();
    std::fs::write(
        dir.path().join("echo_int64.toml"),
        r#"
[[warmup]]
name = "from a file"
[warmup.inputs.x]
datatype = "INT64"
shape = [1, 3]
file = "ids.bin"
"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("scalar.toml"),
        r#"
[[warmup]]
name = "the wrong type"
[warmup.inputs.x]
datatype = "FP32"
shape = []
"#,
    )
    .unwrap();
    let server = Server::start(dir.path(), Options::default()).await;

    let (_, index) = server.post("/v2/repository/index", &json!({})).await;
    let entry = |name: &str| {
        let entries = index.as_array().unwrap().iter();
        entries.clone().find(|e| e["name"] == name).unwrap().clone()
    };
    assert_eq!(entry("echo_int64")["state"], "READY");
    let scalar = entry("scalar");
    assert_eq!(scalar["state"], "UNAVAILABLE", "{scalar}");
    assert_eq!(
        scalar["reason"],
        "warm-up sample \"the wrong type\": input \"x\": the model takes INT64, the sample gives FP32"
    );

    // The warm-up made the plan of its shape; a new shape makes another, and the cache keeps two.
    let builds = r#"aicp_tract_plan_builds_total{model="shapes"}"#;
    let cached = r#"aicp_tract_plans_cached{model="shapes"}"#;
    assert_eq!(metric(&server, builds).await, Some(1.0));
    for shape in [[2, 2], [1, 3], [3, 1], [2, 2]] {
        let data = &[1, 2, 3, 4][..shape[0] * shape[1]];
        let (status, answer) = server
            .post(
                "/v2/models/shapes/infer",
                &json!({"inputs": [{"name": "x", "shape": shape, "datatype": "FP32",
                                    "data": data}]}),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["outputs"][0]["shape"], json!(shape));
    }
    assert_eq!(metric(&server, builds).await, Some(4.0));
    assert_eq!(metric(&server, cached).await, Some(2.0));
}
