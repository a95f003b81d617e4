//! The Open Inference Protocol (KServe V2) as third-party clients speak it to the real `aicp
//! serve`: Triton's and KServe's Python clients over REST and gRPC, Triton's perf_analyzer, a
//! tonic client built from our `.proto`, and raw HTTP for the malformed requests no client
//! library sends.
//! Values are checked against the engine's own output on the same inputs.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use aicp_engine::{Engine, onnx, tract::TractEngine};
use aicp_server::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use aicp_server::grpc::proto::{
    InferParameter, InferTensorContents, ModelConfigRequest, ModelInferRequest,
    ModelMetadataRequest, ModelReadyRequest, ModelStatisticsRequest, RepositoryIndexRequest,
    ServerLiveRequest, infer_parameter::ParameterChoice, model_infer_request,
};
use common::{Server, digits, python, repo_root, run_bounded};
use serde_json::{Value, json};
use tonic::Code;

fn bundled_model() -> PathBuf {
    repo_root().join("models/mnist/1/model.onnx")
}

/// Logits of the bundled model from tract in this process: what every answer must match.
fn engine_logits(images: &[Vec<f32>]) -> Vec<f32> {
    let info = onnx::inspect(&bundled_model()).unwrap();
    let mut model = TractEngine
        .load(&bundled_model(), &info.signature, &Default::default())
        .unwrap();
    let input = aicp_core::Tensor::new(vec![images.len(), 1, 28, 28], images.concat()).unwrap();
    model.run(vec![input.into()]).unwrap().remove(0).data
}

fn assert_close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    let worst = aicp_core::max_difference(got, want);
    assert!(worst < 1e-4, "max difference {worst}");
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn tritons_python_clients_work_over_rest_and_grpc() {
    let server = Server::start(&repo_root().join("models"), &[]);
    common::conformance(common::Clients::Triton, &server, &[]);
}

#[test]
fn kserves_python_clients_work_over_rest_and_grpc() {
    let server = Server::start(&repo_root().join("models"), &[]);
    common::conformance(common::Clients::KServe, &server, &[]);
}

/// perf_analyzer, installed into the test virtualenv by scripts/test.sh.
fn perf_analyzer() -> PathBuf {
    std::env::var_os("AICP_PERF_ANALYZER")
        .map(Into::into)
        .unwrap_or_else(|| repo_root().join(".venv/bin/perf_analyzer"))
}

#[test]
fn perf_analyzer_loads_the_server_over_rest_and_grpc() {
    let server = Server::start(&repo_root().join("models"), &[]);
    let http = server.base.trim_start_matches("http://").to_string();
    for (protocol, url) in [("http", http.as_str()), ("grpc", server.grpc.as_str())] {
        let out = run_bounded(
            Command::new(perf_analyzer()).args([
                "-m",
                "mnist",
                "-u",
                url,
                "-i",
                protocol,
                // Random bytes are not valid pixels (NaN, out of range); zeros are.
                "--input-data",
                "zero",
                "--concurrency-range",
                "2",
                "--measurement-interval",
                "1000",
                // The test checks that it runs and reads the counters, not the figures: other
                // tests load the machine meanwhile, so stability is asked loosely.
                "--max-trials",
                "10",
                "--stability-percentage",
                "500",
            ]),
            Duration::from_secs(60),
        );
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{protocol}: {stdout}\n{stderr}");
        // It read the server-side counters through the statistics extension.
        assert!(
            stdout.contains("Concurrency: 2, throughput:") && stdout.contains("Execution count:"),
            "{protocol}: {stdout}"
        );
    }
}

fn infer_input(name: &str, datatype: &str, shape: &[i64]) -> model_infer_request::InferInputTensor {
    model_infer_request::InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
        ..Default::default()
    }
}

#[test]
fn a_tonic_client_from_our_proto_runs_typed_raw_and_streamed_inference() {
    let server = Server::start(&repo_root().join("models"), &[]);
    let images: Vec<Vec<f32>> = digits(4).into_iter().map(|(p, _)| p).collect();
    let want = engine_logits(&images);
    let flat = images.concat();
    let endpoint = format!("http://{}", server.grpc);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut client = GrpcInferenceServiceClient::connect(endpoint.clone())
            .await
            .unwrap();
        assert!(
            client
                .server_live(ServerLiveRequest {})
                .await
                .unwrap()
                .into_inner()
                .live
        );
        let ready = client
            .model_ready(ModelReadyRequest {
                name: "mnist".into(),
                version: "1".into(),
            })
            .await
            .unwrap();
        assert!(ready.into_inner().ready);

        // Typed contents in, typed contents out.
        let typed = ModelInferRequest {
            model_name: "mnist".into(),
            id: "typed".into(),
            inputs: vec![model_infer_request::InferInputTensor {
                contents: Some(InferTensorContents {
                    fp32_contents: flat.clone(),
                    ..Default::default()
                }),
                ..infer_input("input", "FP32", &[4, 1, 28, 28])
            }],
            ..Default::default()
        };
        let response = client
            .model_infer(typed.clone())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.id, "typed");
        assert_eq!(response.outputs[0].shape, vec![4, 10]);
        let contents = response.outputs[0].contents.clone().unwrap();
        assert_close(&contents.fp32_contents, &want);

        // Raw little-endian bytes in, raw out; a [4, 784] shape feeds the [N, 1, 28, 28] input.
        let raw = ModelInferRequest {
            model_name: "mnist".into(),
            inputs: vec![infer_input("input", "FP32", &[4, 784])],
            raw_input_contents: vec![flat.iter().flat_map(|v| v.to_le_bytes()).collect()],
            ..Default::default()
        };
        let response = client.model_infer(raw).await.unwrap().into_inner();
        let logits: Vec<f32> = response.raw_output_contents[0]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_close(&logits, &want);

        // Classification: the top 2 of each sample as "value:index:label".
        let mut classify = typed.clone();
        classify.outputs = vec![model_infer_request::InferRequestedOutputTensor {
            name: "logits".into(),
            parameters: [(
                "classification".to_string(),
                InferParameter {
                    parameter_choice: Some(ParameterChoice::Int64Param(2)),
                },
            )]
            .into(),
        }];
        let response = client.model_infer(classify).await.unwrap().into_inner();
        assert_eq!(response.outputs[0].datatype, "BYTES");
        assert_eq!(response.outputs[0].shape, vec![4, 2]);
        let strings = &response.outputs[0]
            .contents
            .as_ref()
            .unwrap()
            .bytes_contents;
        for (sample, s) in strings.chunks(2).zip(0..) {
            let row = &want[s * 10..(s + 1) * 10];
            let best = (0..10).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
            let first = String::from_utf8(sample[0].clone()).unwrap();
            let parts: Vec<&str> = first.split(':').collect();
            assert_eq!(parts[1..], [best.to_string(), best.to_string()], "{first}");
            assert!((parts[0].parse::<f32>().unwrap() - row[best]).abs() < 1e-3);
        }

        // A stream answers each request in order, errors included, and goes on.
        let mut bad = typed.clone();
        bad.model_name = "no_such_model".into();
        let requests = tokio_stream::iter(vec![typed.clone(), bad, typed.clone()]);
        let mut answers = client
            .model_stream_infer(requests)
            .await
            .unwrap()
            .into_inner();
        let mut got = Vec::new();
        while let Some(answer) = answers.message().await.unwrap() {
            got.push(answer);
        }
        assert_eq!(got.len(), 3);
        assert!(got[1].error_message.contains("not found"), "{:?}", got[1]);
        for answer in [&got[0], &got[2]] {
            let out = answer.infer_response.as_ref().unwrap();
            assert_close(
                &out.outputs[0].contents.as_ref().unwrap().fp32_contents,
                &want,
            );
        }

        // Metadata, configuration, statistics, repository index.
        let meta = client
            .model_metadata(ModelMetadataRequest {
                name: "mnist".into(),
                version: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(meta.platform, "onnx_onnxv1");
        assert_eq!(meta.inputs[0].shape, vec![-1, 1, 28, 28]);
        let config = client
            .model_config(ModelConfigRequest {
                name: "mnist".into(),
                version: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .config
            .unwrap();
        assert_eq!(config.max_batch_size, 1024);
        assert_eq!(config.input[0].dims, vec![1, 28, 28]);
        let stats = client
            .model_statistics(ModelStatisticsRequest {
                name: "mnist".into(),
                version: "1".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let stats = &stats.model_stats[0];
        // typed, raw, classify, and two streamed: 5 runs of 4 samples.
        assert_eq!((stats.inference_count, stats.execution_count), (20, 5));
        assert_eq!(stats.batch_stats.len(), 1);
        assert_eq!(stats.batch_stats[0].batch_size, 4);
        assert_eq!(stats.batch_stats[0].compute_infer.unwrap().count, 5);
        let index = client
            .repository_index(RepositoryIndexRequest {
                ready: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            index
                .models
                .iter()
                .any(|m| m.name == "mnist" && m.state == "READY")
        );

        // Errors carry the protocol's codes.
        let mut unknown = typed.clone();
        unknown.model_version = "7".into();
        let status = client.model_infer(unknown).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        let mut too_big = typed.clone();
        too_big.inputs[0].datatype = "INT64".into();
        too_big.inputs[0].contents = Some(InferTensorContents {
            int64_contents: vec![1 << 40; 4 * 784],
            ..Default::default()
        });
        let status = client.model_infer(too_big).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status
                .message()
                .contains("cannot be converted to FP32 exactly"),
            "{status:?}"
        );
        let mut strings = typed.clone();
        strings.inputs[0].datatype = "BYTES".into();
        let status = client.model_infer(strings).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().contains("BYTES tensors are not supported"),
            "{status:?}"
        );
        let mut mismatch = typed.clone();
        mismatch.inputs[0].shape = vec![5, 1, 28, 28];
        let status = client.model_infer(mismatch).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().contains("needs 3920 values, got 3136"),
            "{status:?}"
        );
        let huge = ModelInferRequest {
            model_name: "mnist".into(),
            inputs: vec![infer_input("input", "FP32", &[2048, 784])],
            raw_input_contents: vec![vec![0; 2048 * 784 * 4]],
            ..Default::default()
        };
        let status = client.model_infer(huge).await.unwrap_err();
        // tonic's code for a message over the limit (gRPC's C core says RESOURCE_EXHAUSTED).
        assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
        assert!(
            status.message().contains("the limit is: 4194304 bytes"),
            "{status:?}"
        );

        // The standard health service and server reflection.
        let channel = tonic::transport::Endpoint::new(endpoint)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        for service in ["", "inference.GRPCInferenceService"] {
            let answer = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(
                answer.status,
                tonic_health::pb::health_check_response::ServingStatus::Serving as i32
            );
        }
        use tonic_reflection::pb::v1::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let mut reflection = ServerReflectionClient::new(channel);
        let ask = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = reflection
            .server_reflection_info(tokio_stream::iter(vec![ask]))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) =
            answers.message().await.unwrap().unwrap().message_response
        else {
            panic!("reflection did not list services");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for wanted in ["inference.GRPCInferenceService", "grpc.health.v1.Health"] {
            assert!(names.iter().any(|n| n == wanted), "{names:?}");
        }
    });
}

/// Posts an infer request with a JSON part and raw bytes after it.
fn post_binary(
    server: &Server,
    path: &str,
    header: &Value,
    raw: &[u8],
    declared_length: Option<usize>,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let json = header.to_string().into_bytes();
    let length = declared_length.unwrap_or(json.len());
    let response = server
        .client
        .post(format!("{}{path}", server.base))
        .header("content-type", "application/octet-stream")
        .header("inference-header-content-length", length.to_string())
        .body([json, raw.to_vec()].concat())
        .send()
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.bytes().unwrap().to_vec())
}

#[test]
fn v2_rest_json_and_binary_agree_with_the_engine() {
    let server = Server::start(&repo_root().join("models"), &[]);
    let images: Vec<Vec<f32>> = digits(2).into_iter().map(|(p, _)| p).collect();
    let want = engine_logits(&images);

    // Nested JSON data, every output when none is named, the id echoed.
    let nested: Vec<Vec<Vec<Vec<f32>>>> = images
        .iter()
        .map(|p| vec![p.chunks(28).map(<[f32]>::to_vec).collect()])
        .collect();
    let body = json!({"id": "n1", "inputs": [
        {"name": "input", "shape": [2, 1, 28, 28], "datatype": "FP32", "data": nested}
    ]});
    let (status, answer) = server.post("/v2/models/mnist/versions/1/infer", &body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["id"], "n1");
    assert_eq!(answer["model_version"], "1");
    let output = &answer["outputs"][0];
    assert_eq!(
        (output["name"].as_str(), output["datatype"].as_str()),
        (Some("logits"), Some("FP32"))
    );
    assert_eq!(output["shape"], json!([2, 10]));
    let data: Vec<f32> = serde_json::from_value(output["data"].clone()).unwrap();
    assert_close(&data, &want);

    // Binary in and out.
    let raw: Vec<u8> = images
        .concat()
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let header = json!({
        "inputs": [{"name": "input", "shape": [2, 784], "datatype": "FP32",
                    "parameters": {"binary_data_size": raw.len()}}],
        "outputs": [{"name": "logits", "parameters": {"binary_data": true}}],
    });
    let (status, headers, body) =
        post_binary(&server, "/v2/models/mnist/infer", &header, &raw, None);
    assert_eq!(status, 200, "{}", text(&body));
    let json_length: usize = headers["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let described: Value = serde_json::from_slice(&body[..json_length]).unwrap();
    assert_eq!(
        described["outputs"][0]["parameters"]["binary_data_size"],
        80
    );
    assert!(described["outputs"][0].get("data").is_none());
    let logits: Vec<f32> = body[json_length..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_close(&logits, &want);
}

/// UINT8 pixels to a model whose model.toml declares its input range (the bundled model: [0,
/// 1]) are normalised into that range by the engine: the answers are the float path's for
/// pixel / 255, over REST JSON, REST binary and gRPC raw bytes.
#[test]
fn uint8_pixels_are_normalised_into_the_declared_range() {
    let server = Server::start(&repo_root().join("models"), &[]);
    let pixels: Vec<u8> = digits(3)
        .into_iter()
        .flat_map(|(p, _)| p)
        .map(|v| (v * 255.0).round() as u8)
        .collect();
    let normalised: Vec<Vec<f32>> = pixels
        .chunks(784)
        .map(|sample| sample.iter().map(|&p| f32::from(p) / 255.0).collect())
        .collect();
    let want = engine_logits(&normalised);

    let body = json!({"inputs": [
        {"name": "input", "shape": [3, 1, 28, 28], "datatype": "UINT8", "data": pixels}
    ]});
    let (status, answer) = server.post("/v2/models/mnist/infer", &body);
    assert_eq!(status, 200, "{answer}");
    let data: Vec<f32> = serde_json::from_value(answer["outputs"][0]["data"].clone()).unwrap();
    assert_close(&data, &want);

    let header = json!({"inputs": [{"name": "input", "shape": [3, 784], "datatype": "UINT8",
                                    "parameters": {"binary_data_size": pixels.len()}}]});
    let (status, _, body) = post_binary(&server, "/v2/models/mnist/infer", &header, &pixels, None);
    assert_eq!(status, 200, "{}", text(&body));
    let answer: Value = serde_json::from_slice(&body).unwrap();
    let data: Vec<f32> = serde_json::from_value(answer["outputs"][0]["data"].clone()).unwrap();
    assert_close(&data, &want);

    let endpoint = format!("http://{}", server.grpc);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut client = GrpcInferenceServiceClient::connect(endpoint).await.unwrap();
        let request = ModelInferRequest {
            model_name: "mnist".into(),
            inputs: vec![infer_input("input", "UINT8", &[3, 1, 28, 28])],
            raw_input_contents: vec![pixels.clone()],
            ..Default::default()
        };
        let response = client.model_infer(request).await.unwrap().into_inner();
        let logits: Vec<f32> = response.raw_output_contents[0]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_close(&logits, &want);

        // A sample of the wrong size is refused as for floats.
        let short = ModelInferRequest {
            model_name: "mnist".into(),
            inputs: vec![infer_input("input", "UINT8", &[1, 783])],
            raw_input_contents: vec![vec![0; 783]],
            ..Default::default()
        };
        let status = client.model_infer(short).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().contains("784 values per sample"),
            "{}",
            status.message()
        );
    });
}

#[test]
fn v2_rest_rejects_bad_input_with_the_protocols_errors() {
    let server = Server::start(&repo_root().join("models"), &["--max-body-bytes", "100000"]);
    let zeros = vec![0.0f32; 784];
    let input = |datatype: &str, shape: Value, data: Value| json!({"inputs": [{"name": "input", "shape": shape, "datatype": datatype, "data": data}]});
    let check = |path: &str, body: &Value, status: u16, needle: &str| {
        let (got, answer) = server.post(path, body);
        assert_eq!(got, status, "{path} {answer}");
        // The protocol's error shape: a string under "error".
        let message = answer["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{answer}"));
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    };
    let infer = "/v2/models/mnist/infer";
    check(
        "/v2/models/nope/infer",
        &input("FP32", json!([1, 784]), json!(zeros)),
        404,
        "model \"nope\" not found",
    );
    check(
        "/v2/models/mnist/versions/9/infer",
        &input("FP32", json!([1, 784]), json!(zeros)),
        404,
        "no version 9",
    );
    check(
        "/v2/models/mnist/versions/latest/infer",
        &input("FP32", json!([1, 784]), json!(zeros)),
        400,
        "not a version number",
    );
    check(
        infer,
        &input("FLOAT", json!([1, 784]), json!(zeros)),
        400,
        "unknown datatype \"FLOAT\"",
    );
    check(
        infer,
        &input("BYTES", json!([1, 1]), json!(["a"])),
        400,
        "BYTES tensors are not supported",
    );
    check(
        infer,
        &input("INT8", json!([1, 784]), json!([300])),
        400,
        "value 300 at index 0 does not fit INT8",
    );
    check(
        infer,
        &input("FP32", json!([1, 784]), json!(zeros[..783])),
        400,
        "needs 784 values, got 783",
    );
    check(
        infer,
        &input("FP32", json!([1, 783]), json!(zeros[..783])),
        400,
        "expected 784 values per sample",
    );
    check(
        infer,
        &input("FP32", json!([1, 784]), json!([[1, 2], [3]])),
        400,
        "not rectangular",
    );
    check(
        infer,
        &input("FP32", json!([1, -784]), json!(zeros)),
        400,
        "inputs[0].shape",
    );
    check(
        infer,
        &json!({"inputs": [{"name": "x", "shape": [1, 784], "datatype": "FP32", "data": zeros}]}),
        400,
        "no input \"x\"",
    );
    check(
        infer,
        &json!({"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32"}]}),
        400,
        "has no data",
    );
    check(infer, &json!({"inputs": []}), 400, "takes 1 input(s)");
    let wrong_output = json!({"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32", "data": zeros}],
                              "outputs": [{"name": "probs"}]});
    check(infer, &wrong_output, 400, "no output \"probs\"");
    let zero_classes = json!({"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32", "data": zeros}],
                              "outputs": [{"name": "logits", "parameters": {"classification": 0}}]});
    check(
        infer,
        &zero_classes,
        400,
        "classification must be at least 1",
    );

    let (status, answer) = server.post_raw(infer, "{\"inputs\": [");
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("malformed JSON"),
        "{answer}"
    );
    let response = server
        .client
        .post(format!("{}{infer}", server.base))
        .body(vec![b' '; 200_000])
        .send()
        .unwrap();
    assert_eq!(response.status(), 413);
    // The rest of the body was never read: the connection must not carry another request.
    assert_eq!(response.headers()["connection"], "close");
    let answer: Value = serde_json::from_slice(&response.bytes().unwrap()).unwrap();
    assert!(answer["error"].is_string(), "{answer}");

    // The binary extension: a payload shorter than declared, a header longer than the body,
    // bytes left over, a size that is not whole elements.
    let header = |size: usize| {
        json!({"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32",
                           "parameters": {"binary_data_size": size}}]})
    };
    let raw = vec![0u8; 3136];
    let cases: [(Value, &[u8], Option<usize>, &str); 4] = [
        (
            header(3136),
            &raw[..3000],
            None,
            "binary_data_size is 3136 but only 3000 bytes",
        ),
        (
            header(3136),
            &raw,
            Some(1_000_000),
            "Inference-Header-Content-Length is 1000000",
        ),
        (header(3132), &raw, None, "4 bytes of binary data follow"),
        (
            header(3135),
            &raw[..3135],
            None,
            "not a whole number of 4-byte elements",
        ),
    ];
    for (json, bytes, length, needle) in cases {
        let (status, _, body) = post_binary(&server, infer, &json, bytes, length);
        let answer: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(needle),
            "{answer} lacks {needle:?}"
        );
    }

    // Model routes: unknown models are 404; readiness answers.
    let (status, answer) = server.get("/v2/models/nope");
    assert_eq!((status, answer["error"].is_string()), (404, true));
    let (status, answer) = server.get("/v2/no/such/route");
    assert_eq!(
        (status, answer["error"].as_str()),
        (404, Some("no route for /v2/no/such/route"))
    );
    let response = server
        .client
        .get(format!("{}/v2/models/nope/ready", server.base))
        .send()
        .unwrap();
    assert_eq!(response.status(), 404);
    let (status, _) = server.get("/v2/models/mnist/ready");
    assert_eq!(status, 200);
    let (status, _) = server.get("/v2/health/ready");
    assert_eq!(status, 200);

    // After all that, the server still answers.
    let (status, answer) = server.post(infer, &input("FP32", json!([1, 784]), json!(zeros)));
    assert_eq!(status, 200, "{answer}");
}

#[test]
fn named_inputs_feed_models_with_several_inputs_and_fixed_shapes() {
    let models = tempfile::tempdir().unwrap();
    let status = Command::new(python())
        .arg(common::manifest_dir().join("tests/fixtures/two_inputs.py"))
        .arg(models.path())
        .status()
        .expect("scripts/test.sh creates the .venv this test needs");
    assert!(status.success());
    let server = Server::start(models.path(), &[]);
    let infer = "/v2/models/two_inputs/infer";
    let a = json!([[1, 2, 3], [4, 5, 6]]);
    let b = json!([[0.5, 0.5, 0.5], [1, 1, 1]]);
    let input = |name: &str, datatype: &str, data: &Value| json!({"name": name, "shape": [2, 3], "datatype": datatype, "data": data});

    // Inputs match by name, in any order; other datatypes are converted; outputs are chosen.
    let body = json!({
        "inputs": [input("b", "FP64", &b), input("a", "INT32", &a)],
        "outputs": [{"name": "diff"}, {"name": "sum"}],
    });
    let (status, answer) = server.post(infer, &body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outputs"][0]["name"], "diff");
    assert_eq!(
        answer["outputs"][0]["data"],
        json!([0.5, 1.5, 2.5, 3.0, 4.0, 5.0])
    );
    assert_eq!(answer["outputs"][1]["name"], "sum");
    assert_eq!(
        answer["outputs"][1]["data"],
        json!([2.0, 3.0, 4.0, 6.0, 7.0, 8.0])
    );

    let check = |path: &str, body: &Value, needle: &str| {
        let (status, answer) = server.post(path, body);
        assert_eq!(status, 400, "{answer}");
        let message = answer["error"].as_str().unwrap();
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    };
    check(
        infer,
        &json!({"inputs": [input("a", "FP32", &a)]}),
        "takes 2 input(s) (\"a\", \"b\"), got 1",
    );
    check(
        infer,
        &json!({"inputs": [input("a", "FP32", &a), input("a", "FP32", &a)]}),
        "input \"a\" is given more than once",
    );
    check(
        infer,
        &json!({"inputs": [input("a", "FP32", &a), input("c", "FP32", &b)]}),
        "no input \"c\"",
    );
    let one_row = json!({"name": "b", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]});
    check(
        infer,
        &json!({"inputs": [input("a", "FP32", &a), one_row]}),
        "inputs disagree on the batch size: 2 and 1",
    );

    // A fixed first dimension: not batched, fed exactly as declared.
    let (_, config) = server.get("/v2/models/fixed/config");
    assert_eq!(config["max_batch_size"], 0);
    assert_eq!(config["input"][0]["dims"], json!([1, 3]));
    let x = |rows: usize| json!({"inputs": [{"name": "x", "shape": [rows, 3], "datatype": "FP32", "data": vec![1.0; rows * 3]}]});
    let (status, answer) = server.post("/v2/models/fixed/infer", &x(1));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outputs"][0]["data"], json!([2.0, 2.0, 2.0]));
    check(
        "/v2/models/fixed/infer",
        &x(2),
        "a first dimension of exactly 1",
    );

    // A batched model refuses more than max_batch_size samples in one request.
    let (_, config) = server.get("/v2/models/two_inputs/config");
    assert_eq!(config["max_batch_size"], 1024);
    let rows = |n: usize| json!({"name": "a", "shape": [n, 3], "datatype": "FP32", "data": vec![0.0; n * 3]});
    let big = json!({"inputs": [rows(1025), {"name": "b", "shape": [1025, 3], "datatype": "FP32", "data": vec![0.0; 1025 * 3]}]});
    check(
        infer,
        &big,
        "a batch of 1025 is more than model \"two_inputs\" takes in one request (max_batch_size 1024",
    );
}
