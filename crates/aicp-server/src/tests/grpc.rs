//! The Open Inference Protocol over gRPC, spoken by a tonic client generated from our own
//! `proto/` over an in-memory connection: typed, raw and streamed inference, classification,
//! metadata, configuration, statistics, the repository index, the protocol's error codes, the
//! message size limit, and the standard health and reflection services beside it.

use crate::grpc::proto::{
    InferParameter, InferTensorContents, ModelConfigRequest, ModelInferRequest,
    ModelMetadataRequest, ModelReadyRequest, ModelStatisticsRequest, RepositoryIndexRequest,
    ServerLiveRequest, infer_parameter::ParameterChoice, model_infer_request,
};
use aicp_testkit::digits;
use tonic::Code;

use crate::tests::support::{Server, assert_close, engine_logits, floats};

pub fn input(name: &str, datatype: &str, shape: &[i64]) -> model_infer_request::InferInputTensor {
    model_infer_request::InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
        ..Default::default()
    }
}

/// An inference request for `model`'s input `input` as raw bytes (or for `x`, the slow
/// model's).
pub fn request(model: &str, datatype: &str, shape: &[i64], raw: Vec<u8>) -> ModelInferRequest {
    let name = if model == "slow" { "x" } else { "input" };
    ModelInferRequest {
        model_name: model.into(),
        inputs: vec![input(name, datatype, shape)],
        raw_input_contents: vec![raw],
        ..Default::default()
    }
}

#[tokio::test]
async fn a_tonic_client_runs_typed_raw_and_streamed_inference() {
    let server = Server::bundled().await;
    let images: Vec<Vec<f32>> = digits(4).into_iter().map(|(p, _)| p).collect();
    let want = engine_logits(&images);
    let flat = images.concat();
    let mut client = server.grpc().await;
    let live = client.server_live(ServerLiveRequest {}).await.unwrap();
    assert!(live.into_inner().live);
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
            ..input("input", "FP32", &[4, 1, 28, 28])
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
    let raw = flat.iter().flat_map(|v| v.to_le_bytes()).collect();
    let response = client
        .model_infer(request("mnist", "FP32", &[4, 784], raw))
        .await
        .unwrap()
        .into_inner();
    assert_close(&floats(&response.raw_output_contents[0]), &want);

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
    // A request in another type than the model's is refused with both named (as Triton does):
    // nothing is converted on the way.
    let mut integers = typed.clone();
    integers.inputs[0].datatype = "INT64".into();
    integers.inputs[0].contents = Some(InferTensorContents {
        int64_contents: vec![1; 4 * 784],
        ..Default::default()
    });
    let status = client.model_infer(integers).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .contains("model \"mnist\" takes FP32, got INT64"),
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
    let huge = request("mnist", "FP32", &[2048, 784], vec![0; 2048 * 784 * 4]);
    let status = client.model_infer(huge).await.unwrap_err();
    // tonic's code for a message over the limit (gRPC's C core says RESOURCE_EXHAUSTED).
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains("the limit is: 4194304 bytes"),
        "{status:?}"
    );
}

#[tokio::test]
async fn the_health_and_reflection_services_answer_beside_inference() {
    let server = Server::bundled().await;
    let channel = server.channel().await;
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
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let MessageResponse::ListServicesResponse(list) =
        crate::tests::support::reflect(&channel, MessageRequest::ListServices(String::new())).await
    else {
        panic!("reflection did not list services");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for wanted in ["inference.GRPCInferenceService", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == wanted), "{names:?}");
    }
}
