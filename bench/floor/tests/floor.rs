//! The floor does the work it stands for: it parses each request, refuses a wrong one, and
//! answers in the shape `aicp bench` reads, over HTTP and gRPC; with `--model`, it answers what
//! ONNX Runtime computes for the images sent.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
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
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_aicp-floor"))
            .args(["--http-port", "0", "--grpc-port", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // "floor: http on ADDR, grpc on ADDR, ..."
        let words: Vec<&str> = line.split_whitespace().collect();
        Self {
            child,
            http: format!("http://{}", words[3].trim_end_matches(',')),
            grpc: format!("http://{}", words[6].trim_end_matches(',')),
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
    let floor = Floor::start(&[]);
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

/// The bundled MNIST MLP.
fn mnist_model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/mnist/1/model.onnx")
}

/// Two images, neither blank nor alike.
fn images() -> Vec<f32> {
    (0..2 * 784)
        .map(|i| ((i * 37 + i / 784 * 101) % 256) as f32 / 255.0)
        .collect()
}

/// ONNX Runtime's library in the test virtualenv (`AICP_TEST_PYTHON`, which scripts/test.sh
/// sets), and the logits its Python package computes for [`images`].
fn onnxruntime_reference() -> (String, Vec<f32>) {
    let python = std::env::var("AICP_TEST_PYTHON")
        .expect("AICP_TEST_PYTHON names the test virtualenv's python (scripts/test.sh sets it)");
    let script = r#"
import glob, json, os, sys
import numpy as np, onnxruntime as ort
images = np.array(json.loads(sys.stdin.read()), dtype=np.float32).reshape(2, 1, 28, 28)
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
logits = session.run(None, {session.get_inputs()[0].name: images})[0]
library = sorted(glob.glob(os.path.join(os.path.dirname(ort.__file__), "capi", "libonnxruntime.so.1*")))[-1]
print(json.dumps({"library": library, "logits": logits.reshape(-1).tolist()}))
"#;
    let mut child = Command::new(python)
        .args(["-c", script])
        .arg(mnist_model())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    serde_json::to_writer(child.stdin.take().unwrap(), &images()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let logits = answer["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    (answer["library"].as_str().unwrap().to_string(), logits)
}

fn assert_close(got: &[f32], expected: &[f32]) {
    assert_eq!(got.len(), expected.len());
    for (g, e) in got.iter().zip(expected) {
        assert!((g - e).abs() < 1e-4, "got {got:?}, expected {expected:?}");
    }
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

#[test]
fn with_a_model_the_floor_answers_what_onnx_runtime_computes() {
    let (library, expected) = onnxruntime_reference();
    let model = mnist_model();
    let floor = Floor::start(&["--model", model.to_str().unwrap(), "--ort-lib", &library]);
    let images = images();
    let client = reqwest::blocking::Client::new();

    // classify: the top class of the first image, with its softmax probability.
    let body = serde_json::json!({"model_name": "mnist", "image_data": &images[..784]});
    let post = |path: &str, body: serde_json::Value| -> serde_json::Value {
        let answer = client
            .post(format!("{}{path}", floor.http))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap();
        assert_eq!(answer.status(), 200);
        serde_json::from_slice(&answer.bytes().unwrap()).unwrap()
    };
    let answer = post("/api/v1/ml/classify", body);
    let first = &expected[..10];
    let best = (0..10)
        .max_by(|&a, &b| first[a].total_cmp(&first[b]))
        .unwrap();
    let probability = 1.0 / first.iter().map(|v| (v - first[best]).exp()).sum::<f32>();
    assert_eq!(answer["predictions"][0]["class"], best, "{answer}");
    let confidence = answer["predictions"][0]["confidence"].as_f64().unwrap() as f32;
    assert!((confidence - probability).abs() < 1e-4, "{answer}");

    // V2 JSON, both images in one request.
    let body = serde_json::json!({
        "inputs": [{"name": "input", "shape": [2, 1, 28, 28], "datatype": "FP32", "data": &images}],
    });
    let answer = post("/v2/models/mnist/infer", body);
    let data: Vec<f32> = serde_json::from_value(answer["outputs"][0]["data"].clone()).unwrap();
    assert_close(&data, &expected);

    // V2 binary, both images.
    let bytes: Vec<u8> = images.iter().flat_map(|v| v.to_le_bytes()).collect();
    let header = serde_json::json!({
        "inputs": [{"name": "input", "shape": [2, 1, 28, 28], "datatype": "FP32",
                    "parameters": {"binary_data_size": bytes.len()}}],
        "parameters": {"binary_data_output": true},
    })
    .to_string();
    let answer = client
        .post(format!("{}/v2/models/mnist/infer", floor.http))
        .header("inference-header-content-length", header.len())
        .body([header.as_bytes(), &bytes].concat())
        .send()
        .unwrap();
    let json_length: usize = answer.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_close(&floats(&answer.bytes().unwrap()[json_length..]), &expected);

    // gRPC, raw contents, the second image.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let raw = runtime.block_on(async {
        let mut grpc = proto::grpc_inference_service_client::GrpcInferenceServiceClient::connect(
            floor.grpc.clone(),
        )
        .await
        .unwrap();
        let request = proto::ModelInferRequest {
            model_name: "mnist".into(),
            inputs: vec![proto::model_infer_request::InferInputTensor {
                name: "input".into(),
                datatype: "FP32".into(),
                shape: vec![1, 1, 28, 28],
                ..Default::default()
            }],
            raw_input_contents: vec![bytes[784 * 4..].to_vec()],
            ..Default::default()
        };
        grpc.model_infer(request).await.unwrap().into_inner()
    });
    assert_close(&floats(&raw.raw_output_contents[0]), &expected[10..]);
}
