//! The OpenAPI document is the router's own: every route is documented, every documented
//! operation is served (never the fallback's 404, never a 405), every operation and every
//! schema field says what it is, and Swagger UI is served offline. (Validation of the document
//! and of real answers against it, by Python's `openapi-spec-validator` and `jsonschema`: the
//! full lane's end-to-end tests.)

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::Access;
use crate::shed::InFlight;
use crate::upload::{UploadLimits, Uploads};
use crate::{Services, router_and_document};
use aicp_runtime::{ControlMode, ModelControl, Runtime};
use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;

use crate::tests::support::Server;

/// The path with its parameters filled in.
fn concrete(path: &str) -> String {
    path.replace("{name}", "mnist").replace("{version}", "1")
}

#[tokio::test]
async fn the_document_covers_every_route_and_every_documented_route_answers() {
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
        metrics: Some(crate::metrics::router(runtime, crate::metrics::recorder())),
    };
    let (_, routed) = router_and_document(services);
    let routed: BTreeSet<String> = routed.paths.paths.into_keys().collect();

    let server = Server::bundled().await;
    let (status, spec) = server.get("/openapi.json").await;
    assert_eq!(status, 200);
    let documented: BTreeSet<String> = spec["paths"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        routed,
        documented,
        "routes without documentation: {:?}; documented but not routed: {:?}",
        routed.difference(&documented).collect::<Vec<_>>(),
        documented.difference(&routed).collect::<Vec<_>>()
    );

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

    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            // Each operation says what it does and lists its success.
            let responses = operation["responses"].as_object().unwrap();
            assert!(responses.contains_key("200"), "{method} {path}");
            assert!(
                operation["description"].is_string() || operation["summary"].is_string(),
                "{method} {path} is not described"
            );
            // Each documented method is the one served.
            let request = match method.as_str() {
                "get" => Request::get(concrete(path)).body(Body::empty()),
                "post" => Request::post(concrete(path))
                    .header("content-type", "application/json")
                    .body(Body::from("{}")),
                other => panic!("unexpected method {other} for {path}"),
            };
            let response = server.call(request.unwrap()).await;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let body = String::from_utf8_lossy(&body);
            assert_ne!(status, 405, "{method} {path}");
            assert!(!body.contains("no route for"), "{method} {path}: {body}");
        }
    }

    // Swagger UI, built into the binary.
    let response = server.call(crate::tests::support::get("/docs/")).await;
    assert_eq!(response.status(), 200);
    let page = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&page).contains("swagger-ui"));
}
