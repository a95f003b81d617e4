//! The Open Inference Protocol over REST: JSON and binary tensors agreeing with the engine,
//! UINT8 pixels normalised into a model's declared range, named inputs and fixed shapes, and
//! every malformed request refused with the protocol's error shape.

use aicp_testkit::{digits, fixtures};
use http_body_util::BodyExt;
use serde_json::{Value, json};

use crate::tests::support::{
    Options, Server, assert_close, binary_request, engine_logits, floats, post,
};

#[tokio::test]
async fn json_and_binary_tensors_agree_with_the_engine() {
    let server = Server::bundled().await;
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
    let (status, answer) = server
        .post("/v2/models/mnist/versions/1/infer", &body)
        .await;
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
    let response = server
        .call(binary_request(
            "/v2/models/mnist/infer",
            &header,
            &raw,
            None,
        ))
        .await;
    assert_eq!(response.status(), 200);
    let json_length: usize = response.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let described: Value = serde_json::from_slice(&body[..json_length]).unwrap();
    assert_eq!(
        described["outputs"][0]["parameters"]["binary_data_size"],
        80
    );
    assert!(described["outputs"][0].get("data").is_none());
    assert_close(&floats(&body[json_length..]), &want);
}

/// UINT8 pixels to a model whose model.toml declares its input range (the bundled model: [0,
/// 1]) are normalised into that range by the engine: the answers are the float path's for
/// pixel / 255, over REST JSON, REST binary and gRPC raw bytes.
#[tokio::test]
async fn uint8_pixels_are_normalised_into_the_declared_range() {
    let server = Server::bundled().await;
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
    let (status, answer) = server.post("/v2/models/mnist/infer", &body).await;
    assert_eq!(status, 200, "{answer}");
    let data: Vec<f32> = serde_json::from_value(answer["outputs"][0]["data"].clone()).unwrap();
    assert_close(&data, &want);

    let header = json!({"inputs": [{"name": "input", "shape": [3, 784], "datatype": "UINT8",
                                    "parameters": {"binary_data_size": pixels.len()}}]});
    let (status, _, answer) = server
        .send(binary_request(
            "/v2/models/mnist/infer",
            &header,
            &pixels,
            None,
        ))
        .await;
    assert_eq!(status, 200, "{answer}");
    let data: Vec<f32> = serde_json::from_value(answer["outputs"][0]["data"].clone()).unwrap();
    assert_close(&data, &want);

    let mut client = server.grpc().await;
    let request = crate::tests::grpc::request("mnist", "UINT8", &[3, 1, 28, 28], pixels.clone());
    let response = client.model_infer(request).await.unwrap().into_inner();
    assert_close(&floats(&response.raw_output_contents[0]), &want);

    // A sample of the wrong size is refused as for floats.
    let short = crate::tests::grpc::request("mnist", "UINT8", &[1, 783], vec![0; 783]);
    let status = client.model_infer(short).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("784 values per sample"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn bad_input_is_refused_with_the_protocols_errors() {
    let options = Options {
        max_body_bytes: 100_000,
        ..Options::default()
    };
    let server = Server::start(&aicp_testkit::bundled_models(), options).await;
    let zeros = vec![0.0f32; 784];
    let input = |datatype: &str, shape: Value, data: Value| json!({"inputs": [{"name": "input", "shape": shape, "datatype": datatype, "data": data}]});
    let check = async |path: &str, body: &Value, status: u16, needle: &str| {
        let (got, answer) = server.post(path, body).await;
        assert_eq!(got, status, "{path} {answer}");
        // The protocol's error shape: a string under "error".
        let message = answer["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{answer}"));
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    };
    let infer = "/v2/models/mnist/infer";
    let row = || input("FP32", json!([1, 784]), json!(zeros));
    check(
        "/v2/models/nope/infer",
        &row(),
        404,
        "model \"nope\" not found",
    )
    .await;
    check(
        "/v2/models/mnist/versions/9/infer",
        &row(),
        404,
        "no version 9",
    )
    .await;
    check(
        "/v2/models/mnist/versions/latest/infer",
        &row(),
        400,
        "not a version number",
    )
    .await;
    let cases = [
        (
            input("FLOAT", json!([1, 784]), json!(zeros)),
            "unknown datatype \"FLOAT\"",
        ),
        (
            input("BYTES", json!([1, 1]), json!(["a"])),
            "model \"mnist\" takes FP32, got BYTES",
        ),
        (
            input("FP64", json!([1, 784]), json!(zeros)),
            "model \"mnist\" takes FP32, got FP64",
        ),
        (
            input("INT8", json!([1, 784]), json!([300])),
            "value 300 at index 0 does not fit INT8",
        ),
        (
            input("FP32", json!([1, 784]), json!(zeros[..783])),
            "needs 784 values, got 783",
        ),
        (
            input("FP32", json!([1, 783]), json!(zeros[..783])),
            "expected 784 values per sample",
        ),
        (
            input("FP32", json!([1, 784]), json!([[1, 2], [3]])),
            "not rectangular",
        ),
        (
            input("FP32", json!([1, -784]), json!(zeros)),
            "inputs[0].shape",
        ),
        (
            json!({"inputs": [{"name": "x", "shape": [1, 784], "datatype": "FP32", "data": zeros}]}),
            "no input \"x\"",
        ),
        (
            json!({"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32"}]}),
            "has no data",
        ),
        (json!({"inputs": []}), "takes 1 input(s)"),
        (
            json!({"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32", "data": zeros}],
                   "outputs": [{"name": "probs"}]}),
            "no output \"probs\"",
        ),
        (
            json!({"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32", "data": zeros}],
                   "outputs": [{"name": "logits", "parameters": {"classification": 0}}]}),
            "classification must be at least 1",
        ),
    ];
    for (body, needle) in &cases {
        check(infer, body, 400, needle).await;
    }

    let (status, answer) = server.post_raw(infer, "{\"inputs\": [").await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("malformed JSON"),
        "{answer}"
    );
    let (status, headers, answer) = server
        .send(post(infer, "application/json", vec![b' '; 200_000]))
        .await;
    assert_eq!(status, 413);
    // The rest of the body was never read: the connection must not carry another request.
    assert_eq!(headers["connection"], "close");
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
        let (status, _, answer) = server
            .send(binary_request(infer, &json, bytes, length))
            .await;
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(needle),
            "{answer} lacks {needle:?}"
        );
    }

    // Model routes: unknown models are 404; readiness answers.
    let (status, answer) = server.get("/v2/models/nope").await;
    assert_eq!((status, answer["error"].is_string()), (404, true));
    let (status, answer) = server.get("/v2/no/such/route").await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (404, Some("no route for /v2/no/such/route"))
    );
    assert_eq!(server.get("/v2/models/nope/ready").await.0, 404);
    assert_eq!(server.get("/v2/models/mnist/ready").await.0, 200);
    assert_eq!(server.get("/v2/health/ready").await.0, 200);

    // After all that, the server still answers.
    let (status, answer) = server.post(infer, &row()).await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test]
async fn named_inputs_feed_models_with_several_inputs_and_fixed_shapes() {
    let models = tempfile::tempdir().unwrap();
    fixtures::two_inputs(models.path());
    let server = Server::start(models.path(), Options::default()).await;
    let infer = "/v2/models/two_inputs/infer";
    let a = json!([[1, 2, 3], [4, 5, 6]]);
    let b = json!([[0.5, 0.5, 0.5], [1, 1, 1]]);
    let input = |name: &str, datatype: &str, data: &Value| json!({"name": name, "shape": [2, 3], "datatype": datatype, "data": data});

    // Inputs match by name, in any order; outputs are chosen.
    let body = json!({
        "inputs": [input("b", "FP32", &b), input("a", "FP32", &a)],
        "outputs": [{"name": "diff"}, {"name": "sum"}],
    });
    let (status, answer) = server.post(infer, &body).await;
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

    let check = async |path: &str, body: &Value, needle: &str| {
        let (status, answer) = server.post(path, body).await;
        assert_eq!(status, 400, "{answer}");
        let message = answer["error"].as_str().unwrap();
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    };
    check(
        infer,
        &json!({"inputs": [input("a", "FP32", &a)]}),
        "takes 2 input(s) (\"a\", \"b\"), got 1",
    )
    .await;
    // Each input in the model's own type: nothing is converted on the way.
    check(
        infer,
        &json!({"inputs": [input("b", "FP64", &b), input("a", "INT32", &a)]}),
        "input \"a\": model \"two_inputs\" takes FP32, got INT32",
    )
    .await;
    check(
        infer,
        &json!({"inputs": [input("a", "FP32", &a), input("a", "FP32", &a)]}),
        "input \"a\" is given more than once",
    )
    .await;
    check(
        infer,
        &json!({"inputs": [input("a", "FP32", &a), input("c", "FP32", &b)]}),
        "no input \"c\"",
    )
    .await;
    let one_row = json!({"name": "b", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]});
    check(
        infer,
        &json!({"inputs": [input("a", "FP32", &a), one_row]}),
        "inputs disagree on the batch size: 2 and 1",
    )
    .await;

    // A fixed first dimension: not batched, fed exactly as declared.
    let (_, config) = server.get("/v2/models/fixed/config").await;
    assert_eq!(config["max_batch_size"], 0);
    assert_eq!(config["input"][0]["dims"], json!([1, 3]));
    let x = |rows: usize| json!({"inputs": [{"name": "x", "shape": [rows, 3], "datatype": "FP32", "data": vec![1.0; rows * 3]}]});
    let (status, answer) = server.post("/v2/models/fixed/infer", &x(1)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outputs"][0]["data"], json!([2.0, 2.0, 2.0]));
    check(
        "/v2/models/fixed/infer",
        &x(2),
        "a first dimension of exactly 1",
    )
    .await;

    // A batched model refuses more than max_batch_size samples in one request.
    let (_, config) = server.get("/v2/models/two_inputs/config").await;
    assert_eq!(config["max_batch_size"], 1024);
    let rows = |name: &str, n: usize| json!({"name": name, "shape": [n, 3], "datatype": "FP32", "data": vec![0.0; n * 3]});
    let big = json!({"inputs": [rows("a", 1025), rows("b", 1025)]});
    check(
        infer,
        &big,
        "a batch of 1025 is more than model \"two_inputs\" takes in one request (max_batch_size 1024",
    )
    .await;
}
