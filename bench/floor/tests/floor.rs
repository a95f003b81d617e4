//! The floor does the work it stands for: it parses each request, refuses a wrong one, and
//! answers in the shape `aicp bench` reads, over HTTP and gRPC.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

mod proto {
    tonic::include_proto!("inference");
}

/// The floor on free ports; killed when dropped.
struct Floor {
    child: Child,
    http: String,
    grpc: String,
}

impl Floor {
    fn start() -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_aicp-floor"))
            .args(["--http-port", "0", "--grpc-port", "0"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // "floor: http on ADDR, grpc on ADDR"
        let words: Vec<&str> = line.split_whitespace().collect();
        Self {
            child,
            http: format!("http://{}", words[3].trim_end_matches(',')),
            grpc: format!("http://{}", words[6]),
        }
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_floor_parses_refuses_and_answers_like_a_server() {
    let floor = Floor::start();
    let client = reqwest::blocking::Client::new();
    let classify = |values: usize| {
        let body =
            serde_json::json!({"model_name": "mnist", "image_data": vec![0.5; values], "top_k": 1});
        client
            .post(format!("{}/api/v1/ml/classify", floor.http))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap()
    };
    let answer = classify(784);
    assert_eq!(answer.status(), 200);
    let answer: serde_json::Value = serde_json::from_slice(&answer.bytes().unwrap()).unwrap();
    assert_eq!(answer["predictions"][0]["class"], 5, "{answer}");
    assert_eq!(classify(783).status(), 400);

    // V2 with binary tensors: the JSON header, then the bytes it announces.
    let infer = |bytes: usize| {
        let header = serde_json::json!({
            "inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32",
                        "parameters": {"binary_data_size": bytes}}],
            "parameters": {"binary_data_output": true},
        })
        .to_string();
        let mut body = header.clone().into_bytes();
        body.extend(vec![0u8; bytes]);
        client
            .post(format!("{}/v2/models/mnist/infer", floor.http))
            .header("inference-header-content-length", header.len())
            .body(body)
            .send()
            .unwrap()
    };
    let answer = infer(784 * 4);
    assert_eq!(answer.status(), 200);
    let json_length: usize = answer.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = answer.bytes().unwrap();
    assert_eq!(body.len(), json_length + 40);
    assert_eq!(infer(783 * 4).status(), 400);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut grpc = proto::grpc_inference_service_client::GrpcInferenceServiceClient::connect(
            floor.grpc.clone(),
        )
        .await
        .unwrap();
        let request = |values: usize| proto::ModelInferRequest {
            model_name: "mnist".into(),
            inputs: vec![proto::model_infer_request::InferInputTensor {
                name: "input".into(),
                datatype: "FP32".into(),
                shape: vec![1, 784],
                ..Default::default()
            }],
            raw_input_contents: vec![vec![0; values * 4]],
            ..Default::default()
        };
        let answer = grpc.model_infer(request(784)).await.unwrap().into_inner();
        assert_eq!(answer.raw_output_contents[0].len(), 40);
        let refused = grpc.model_infer(request(783)).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    });
}
