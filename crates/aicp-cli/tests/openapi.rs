//! The OpenAPI document against a real `aicp serve`: valid OpenAPI (checked by
//! `openapi-spec-validator`), every path the router serves documented and every documented
//! operation served, every schema field described, and the Swagger UI page served offline.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use aicp_runtime::{ControlMode, ModelControl, Runtime};
use aicp_server::auth::Access;
use aicp_server::shed::InFlight;
use aicp_server::upload::{UploadLimits, Uploads};
use aicp_server::{Services, router_and_paths};
use common::{Server, repo_root, run_python};
use serde_json::Value;

fn document(server: &Server) -> Value {
    let (status, spec) = server.get("/openapi.json");
    assert_eq!(status, 200);
    spec
}

#[test]
fn the_document_is_valid_openapi_with_every_field_described() {
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

    // Every field of every schema says what it is.
    let mut undescribed = Vec::new();
    for (name, schema) in spec["components"]["schemas"].as_object().unwrap() {
        for (field, property) in schema["properties"].as_object().into_iter().flatten() {
            let described =
                property.get("description").is_some() || property.to_string().contains("$ref");
            if !described {
                undescribed.push(format!("{name}.{field}"));
            }
        }
    }
    assert!(
        undescribed.is_empty(),
        "fields without a description: {undescribed:?}"
    );

    // Every operation lists its errors, with a body that says what went wrong.
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            assert!(responses.contains_key("200"), "{method} {path}");
            assert!(
                operation["description"].is_string() || operation["summary"].is_string(),
                "{method} {path} is not described"
            );
        }
    }

    // Swagger UI, built into the binary.
    let page = server
        .client
        .get(format!("{}/docs/", server.base))
        .send()
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().unwrap().contains("swagger-ui"));
}

/// The path with its parameters filled in.
fn concrete(path: &str) -> String {
    path.replace("{name}", "mnist").replace("{version}", "1")
}

#[test]
fn the_document_covers_every_route_and_every_documented_route_answers() {
    let runtime = Arc::new(Runtime::new());
    let services = Services {
        runtime: runtime.clone(),
        control: Arc::new(ModelControl::new(runtime.clone(), ControlMode::Poll)),
        access: Access::default(),
        in_flight: InFlight::new(1),
        uploads: Uploads::new(UploadLimits {
            max_body_bytes: 1 << 20,
            memory_bytes: 1 << 20,
            body_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
        }),
        metrics: Some(aicp_server::metrics::router(
            runtime,
            aicp_server::metrics::recorder(),
        )),
    };
    let (_, routed) = router_and_paths(services);
    let routed: BTreeSet<String> = routed.into_iter().collect();

    let server = Server::start(&repo_root().join("models"), &[]);
    let spec = document(&server);
    let documented: BTreeSet<String> = spec["paths"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        routed,
        documented,
        "routes without documentation: {:?}; documented but not routed: {:?}",
        routed.difference(&documented).collect::<Vec<_>>(),
        documented.difference(&routed).collect::<Vec<_>>()
    );

    // Each documented method is the one served: never the fallback's 404, never a 405.
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let url = format!("{}{}", server.base, concrete(path));
            let request = match method.as_str() {
                "get" => server.client.get(&url),
                "post" => server
                    .client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body("{}"),
                other => panic!("unexpected method {other} for {path}"),
            };
            let response = request.send().unwrap();
            let status = response.status().as_u16();
            let body = response.text().unwrap_or_default();
            assert_ne!(status, 405, "{method} {path}");
            assert!(!body.contains("no route for"), "{method} {path}: {body}");
        }
    }
}
