//! The OpenAPI document a real `aicp serve` serves, checked by the Python ecosystem's own
//! validators: valid OpenAPI (`openapi-spec-validator`), and real responses of both APIs valid
//! against their documented schemas (`jsonschema`). (That the document covers every route and
//! describes every field: `aicp-server`'s in-process tests.)

use std::collections::BTreeSet;

use crate::common::{self, Server, digits, repo_root, run_python};
use serde_json::{Value, json};

fn document(server: &Server) -> Value {
    let (status, spec) = server.get("/openapi.json");
    assert_eq!(status, 200);
    spec
}

#[test]
fn the_document_is_valid_openapi() {
    let server = Server::start(&repo_root().join("models"), &[]);
    let spec = document(&server);
    let output = run_python(
        "import sys, json\n\
         from openapi_spec_validator import validate\n\
         validate(json.load(sys.stdin))",
        spec.to_string().as_bytes(),
    );
    assert!(
        output.status.success(),
        "not valid OpenAPI: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
}

/// A real response, and where the document says what it holds.
struct Answer {
    method: &'static str,
    path: &'static str,
    status: u16,
    body: Value,
}

#[test]
fn real_responses_match_their_documented_schemas() {
    let server = Server::start(&repo_root().join("models"), &[]);
    let spec = document(&server);
    let (pixels, _) = digits(2).remove(0);
    let batch: Vec<Vec<f32>> = digits(2).into_iter().map(|(p, _)| p).collect();
    let mut answers = Vec::new();
    let mut answer = |method, path: &'static str, (status, body): (u16, Value)| {
        answers.push(Answer {
            method,
            path,
            status,
            body,
        })
    };
    let post = |path: &str, body: Value| server.post(path, &body);
    answer("get", "/healthz", server.get("/healthz"));
    answer("get", "/readyz", server.get("/readyz"));
    answer("get", "/api/v1/ml/models", server.get("/api/v1/ml/models"));
    answer(
        "get",
        "/api/v1/ml/models/{name}",
        server.get("/api/v1/ml/models/mnist"),
    );
    answer(
        "get",
        "/api/v1/ml/models/{name}",
        server.get("/api/v1/ml/models/nothing"),
    );
    let classify = "/api/v1/ml/classify";
    answer(
        "post",
        classify,
        post(classify, json!({"image_data": pixels})),
    );
    answer(
        "post",
        classify,
        post(classify, json!({"image_data": batch, "top_k": 2})),
    );
    answer(
        "post",
        classify,
        post(classify, json!({"image_data": [0.5]})),
    );
    answer("post", classify, server.post_raw(classify, "{not json"));
    let inference = "/api/v1/ml/inference";
    let raw = json!({"input_data": pixels, "apply_softmax": true, "top_k": 3});
    answer("post", inference, post(inference, raw));
    answer(
        "post",
        inference,
        post(inference, json!({"input_data": pixels})),
    );
    answer("get", "/v2", server.get("/v2"));
    answer("get", "/v2/health/live", server.get("/v2/health/live"));
    answer("get", "/v2/health/ready", server.get("/v2/health/ready"));
    answer(
        "get",
        "/v2/models/{name}/ready",
        server.get("/v2/models/mnist/ready"),
    );
    let version_ready = "/v2/models/{name}/versions/{version}/ready";
    answer(
        "get",
        version_ready,
        server.get("/v2/models/mnist/versions/1/ready"),
    );
    answer("get", "/v2/models/{name}", server.get("/v2/models/mnist"));
    answer("get", "/v2/models/{name}", server.get("/v2/models/nothing"));
    let version = "/v2/models/{name}/versions/{version}";
    answer("get", version, server.get("/v2/models/mnist/versions/x"));
    answer(
        "get",
        "/v2/models/{name}/config",
        server.get("/v2/models/mnist/config"),
    );
    answer(
        "get",
        "/v2/models/{name}/stats",
        server.get("/v2/models/mnist/stats"),
    );
    answer("get", "/v2/models/stats", server.get("/v2/models/stats"));
    answer(
        "post",
        "/v2/repository/index",
        post("/v2/repository/index", json!({})),
    );
    let infer = "/v2/models/{name}/infer";
    let v2 = |parameters: Value, outputs: Value| {
        json!({"id": "7", "inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32",
            "data": pixels}], "outputs": outputs, "parameters": parameters})
    };
    answer(
        "post",
        infer,
        post("/v2/models/mnist/infer", v2(json!({}), json!([]))),
    );
    let classes = json!([{"name": "logits", "parameters": {"classification": 3}}]);
    answer(
        "post",
        infer,
        post("/v2/models/mnist/infer", v2(json!({}), classes)),
    );
    let bad = json!({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32",
        "data": [1, 2, 3]}]});
    answer("post", infer, post("/v2/models/mnist/infer", bad));
    let ink = |x: u32, y: u32| image::Luma([(pixels[(y * 28 + x) as usize] * 255.0) as u8]);
    let mut png = Vec::new();
    image::GrayImage::from_fn(28, 28, ink)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let picture = server
        .client
        .post(format!(
            "{}/api/v1/ml/classify/image?debug=true",
            server.base
        ))
        .header("content-type", "image/png")
        .body(png)
        .send()
        .unwrap();
    answer(
        "post",
        "/api/v1/ml/classify/image",
        common::json_of(picture),
    );

    // Each body against its documented schema, in which every object is closed: a field the
    // document does not name fails as surely as a missing or mistyped one.
    let cases: Vec<Value> = answers
        .iter()
        .map(|a| json!({"method": a.method, "path": a.path, "status": a.status, "body": a.body}))
        .collect();
    let input = json!({"spec": spec, "cases": cases}).to_string();
    let output = run_python(
        r##"
import json, sys
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

given = json.load(sys.stdin)
spec = given["spec"]
def close(node):
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node:
            node.setdefault("additionalProperties", False)
        for value in node.values():
            close(value)
    elif isinstance(node, list):
        for value in node:
            close(value)
close(spec)
registry = Registry().with_resource("urn:api", Resource.from_contents(spec, DRAFT202012))
failed = []
for case in given["cases"]:
    responses = spec["paths"][case["path"]][case["method"]]["responses"]
    status = str(case["status"])
    if status not in responses:
        failed.append(f'{case["method"]} {case["path"]}: status {status} is not documented')
        continue
    pointer = "/".join(["#/paths", case["path"].replace("/", "~1"), case["method"],
                        "responses", status, "content", "application~1json", "schema"])
    validator = Draft202012Validator({"$ref": "urn:api" + pointer}, registry=registry)
    for error in validator.iter_errors(case["body"]):
        failed.append(f'{case["method"]} {case["path"]} {status}: {error.message} at {list(error.absolute_path)}')
print(len(given["cases"]), "responses checked")
if failed:
    sys.exit("\n".join(failed))
"##,
        input.as_bytes(),
    );
    assert!(
        output.status.success(),
        "responses that do not match the document:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The statuses checked cover successes and errors of both APIs.
    let statuses: BTreeSet<u16> = answers.iter().map(|a| a.status).collect();
    assert!(
        [200, 400, 404, 422].iter().all(|s| statuses.contains(s)),
        "{statuses:?}"
    );
}
