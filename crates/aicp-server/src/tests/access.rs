//! Who can reach what, as a table: every route's class (open, API key, admin token) against
//! every kind of credential, over HTTP and gRPC; explicit model control through the admin
//! routes; the model directory's boundary; and model management off without a token or with
//! control `none`.

use crate::auth::Access;
use crate::grpc::proto::{
    RepositoryModelLoadRequest, RepositoryModelUnloadRequest, ServerLiveRequest,
    ServerMetadataRequest,
};
use aicp_runtime::ControlMode;
use aicp_testkit::{digits, install};
use axum::body::Body;
use axum::http::Request;
use serde_json::{Value, json};

use crate::tests::support::{Options, Server};

const KEY: &str = "k3y";
const TOKEN: &str = "t0ken";

/// What a request carries.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Credential {
    Nothing,
    /// The API key as `Authorization: Bearer`.
    Key,
    /// The API key as `X-API-Key`.
    KeyHeader,
    WrongKey,
    /// The admin token as `Authorization: Bearer`.
    Token,
}

const CREDENTIALS: [Credential; 5] = [
    Credential::Nothing,
    Credential::Key,
    Credential::KeyHeader,
    Credential::WrongKey,
    Credential::Token,
];

/// Who may use a route.
#[derive(Debug, Clone, Copy)]
enum Class {
    Open,
    ApiKey,
    Admin,
}

impl Class {
    /// The status a request with `credential` gets, on a server with both secrets set.
    fn status(self, credential: Credential) -> u16 {
        use Credential::*;
        match (self, credential) {
            (Class::Open, _) => 200,
            (Class::ApiKey, Key | KeyHeader) => 200,
            (Class::Admin, Token) => 200,
            _ => 401,
        }
    }
}

fn request(
    method: &str,
    path: &str,
    body: Option<&Value>,
    credential: Credential,
) -> Request<Body> {
    let mut request = Request::builder().method(method).uri(path);
    request = match credential {
        Credential::Nothing => request,
        Credential::Key => request.header("authorization", format!("Bearer {KEY}")),
        Credential::KeyHeader => request.header("x-api-key", KEY),
        Credential::WrongKey => request.header("authorization", "Bearer wrong"),
        Credential::Token => request.header("authorization", format!("Bearer {TOKEN}")),
    };
    match body {
        Some(body) => request
            .header("content-type", "application/json")
            .body(Body::from(body.to_string())),
        None => request.body(Body::empty()),
    }
    .unwrap()
}

async fn guarded_server(models: &std::path::Path) -> Server {
    let options = Options {
        access: Access::new(Some(KEY.into()), Some(TOKEN.into())),
        control: ControlMode::Explicit,
        ..Options::default()
    };
    Server::start(models, options).await
}

fn model_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    install(dir.path(), "mnist", "mnist", 1);
    dir
}

#[tokio::test]
async fn every_route_answers_each_credential_as_its_class_says() {
    let dir = model_dir();
    let server = guarded_server(dir.path()).await;
    let (pixels, _) = digits(1).remove(0);
    let digit = json!({"image_data": pixels});
    let routes: [(&str, &str, Option<&Value>, Class); 13] = [
        ("GET", "/healthz", None, Class::Open),
        ("GET", "/readyz", None, Class::Open),
        ("GET", "/v2/health/live", None, Class::Open),
        ("GET", "/v2/health/ready", None, Class::Open),
        ("GET", "/v2/models/mnist/ready", None, Class::Open),
        ("GET", "/api/v1/ml/models", None, Class::ApiKey),
        ("GET", "/v2", None, Class::ApiKey),
        ("GET", "/v2/models/mnist", None, Class::ApiKey),
        ("GET", "/v2/models/stats", None, Class::ApiKey),
        (
            "POST",
            "/v2/repository/index",
            Some(&json!({})),
            Class::ApiKey,
        ),
        ("POST", "/api/v1/ml/classify", Some(&digit), Class::ApiKey),
        (
            "POST",
            "/v2/repository/models/mnist/load",
            None,
            Class::Admin,
        ),
        (
            "POST",
            "/v2/repository/models/mnist/unload",
            None,
            Class::Admin,
        ),
    ];
    let mut wrong = Vec::new();
    for (method, path, body, class) in routes {
        for credential in CREDENTIALS {
            let (status, headers, answer) =
                server.send(request(method, path, body, credential)).await;
            if status != class.status(credential) {
                wrong.push(format!(
                    "{method} {path} with {credential:?}: {status} {answer}"
                ));
            }
            if status == 401
                && headers
                    .get("www-authenticate")
                    .is_none_or(|v| v != "Bearer")
            {
                wrong.push(format!(
                    "{method} {path} with {credential:?}: 401 without WWW-Authenticate"
                ));
            }
        }
        // The unload above took the model out: load it back for the routes after it.
        if path.ends_with("/unload") {
            let load = request(
                "POST",
                "/v2/repository/models/mnist/load",
                None,
                Credential::Token,
            );
            assert_eq!(server.send(load).await.0, 200);
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");

    // The refusals say what is wrong.
    let (_, _, answer) = server
        .send(request(
            "POST",
            "/api/v1/ml/classify",
            Some(&digit),
            Credential::WrongKey,
        ))
        .await;
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("API key is wrong"), "{answer}");
    let (_, _, answer) = server
        .send(request(
            "GET",
            "/v2/models/mnist",
            None,
            Credential::Nothing,
        ))
        .await;
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("needs an API key"),
        "{answer}"
    );
    let (_, _, answer) = server
        .send(request(
            "POST",
            "/v2/repository/models/mnist/load",
            None,
            Credential::Key,
        ))
        .await;
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("admin token is wrong"),
        "{answer}"
    );
}

#[tokio::test]
async fn grpc_methods_take_the_same_credentials() {
    let dir = model_dir();
    let server = guarded_server(dir.path()).await;
    let mut client = server.grpc().await;
    client
        .server_live(ServerLiveRequest {})
        .await
        .expect("liveness is open");
    let status = client
        .server_metadata(ServerMetadataRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    let response = client
        .server_metadata(with(KEY, ServerMetadataRequest {}))
        .await
        .unwrap();
    assert!(
        response.metadata().contains_key("x-request-id"),
        "{response:?}"
    );
    let unload = || RepositoryModelUnloadRequest {
        model_name: "mnist".into(),
        ..Default::default()
    };
    for secret in [None, Some(KEY)] {
        let call = match secret {
            Some(secret) => with(secret, unload()),
            None => tonic::Request::new(unload()),
        };
        let status = client.repository_model_unload(call).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    }
    client
        .repository_model_unload(with(TOKEN, unload()))
        .await
        .unwrap();
    let load = RepositoryModelLoadRequest {
        model_name: "nosuch".into(),
        ..Default::default()
    };
    let status = client
        .repository_model_load(with(TOKEN, load))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    let (status, _) = classify(&server, "mnist").await;
    assert_eq!(status, 503);
}

/// A gRPC request carrying `Authorization: Bearer <secret>`.
fn with<T>(secret: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {secret}").parse().unwrap());
    request
}

/// Classifies the first held-out digit with `model`, with the API key.
async fn classify(server: &Server, model: &str) -> (u16, Value) {
    let (pixels, _) = digits(1).remove(0);
    let body = json!({"model_name": model, "image_data": pixels});
    let (status, _, answer) = server
        .send(request(
            "POST",
            "/api/v1/ml/classify",
            Some(&body),
            Credential::Key,
        ))
        .await;
    (status, answer)
}

async fn admin(server: &Server, name: &str, action: &str) -> (u16, Value) {
    let path = format!("/v2/repository/models/{name}/{action}");
    let (status, _, answer) = server
        .send(request("POST", &path, None, Credential::Token))
        .await;
    (status, answer)
}

#[tokio::test]
async fn explicit_control_loads_and_unloads_only_when_asked_and_only_inside_the_directory() {
    let dir = model_dir();
    // A model outside the directory, linked in: never loaded.
    let outside = tempfile::tempdir().unwrap();
    install(outside.path(), "mnist", "escape", 1);
    std::os::unix::fs::symlink(outside.path().join("escape"), dir.path().join("escape")).unwrap();
    let server = guarded_server(dir.path()).await;

    // Explicit mode: nothing watches the directory (aicp-runtime's `control` tests), so a new
    // model waits to be asked for.
    install(dir.path(), "mnist", "digits", 1);
    assert_eq!(classify(&server, "digits").await.0, 404);
    let (status, body) = admin(&server, "digits", "load").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(classify(&server, "digits").await.0, 200);

    // Unloaded: refused with the reason, loadable again.
    let (status, body) = admin(&server, "digits", "unload").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = classify(&server, "digits").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unloaded"),
        "{body}"
    );
    assert_eq!(admin(&server, "digits", "load").await.0, 200);
    assert_eq!(classify(&server, "digits").await.0, 200);

    // Nothing outside the directory, whatever the name.
    for (name, expected) in [
        ("escape", 404),
        ("nosuch", 404),
        ("a..b", 400),
        ("..%2F..%2Fetc", 400),
    ] {
        let (status, body) = admin(&server, name, "load").await;
        assert_eq!(status, expected, "{name}: {body}");
    }
    // A model that does not load is reported, and nothing else changes.
    let broken = dir.path().join("broken/1");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("model.onnx"), b"not a model").unwrap();
    let (status, body) = admin(&server, "broken", "load").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("failed to load"),
        "{body}"
    );
    assert_eq!(classify(&server, "digits").await.0, 200);
}

#[tokio::test]
async fn model_management_is_off_without_a_token_and_with_control_none() {
    let dir = model_dir();
    let server = Server::start(dir.path(), Options::default()).await;
    let unload = Request::post("/v2/repository/models/mnist/unload")
        .header("authorization", "Bearer anything")
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = server.send(unload).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("--admin-token"),
        "{body}"
    );

    let options = Options {
        access: Access::new(None, Some(TOKEN.into())),
        control: ControlMode::None,
        ..Options::default()
    };
    let server = Server::start(dir.path(), options).await;
    let (status, body) = admin(&server, "mnist", "unload").await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("\"none\""),
        "{body}"
    );
}

/// Every HTTP route the router serves (from the OpenAPI document it serves, which the router
/// builds from its own routes) and every method of every gRPC service it serves (from
/// reflection), called with no credentials, with the API key and with the admin token: each
/// answer is its class's. A route or method added later is called here without editing this
/// test; one missing from the admission table is refused to everyone, and fails here.
#[tokio::test]
async fn every_route_and_method_served_answers_each_credential_as_its_class_says() {
    let dir = model_dir();
    let server = guarded_server(dir.path()).await;
    let (status, document) = server.get("/openapi.json").await;
    assert_eq!(status, 200);
    let mut routes = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        let concrete = path.replace("{name}", "mnist").replace("{version}", "1");
        for (method, operation) in item.as_object().unwrap() {
            let schemes: Vec<&str> = operation["security"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|requirement| requirement.as_object().unwrap().keys())
                .map(String::as_str)
                .collect();
            let class = match schemes.as_slice() {
                [] => Class::Open,
                ["bearer", "api_key"] => Class::ApiKey,
                ["bearer"] => Class::Admin,
                other => panic!("{method} {path}: security {other:?}"),
            };
            for credential in [Credential::Nothing, Credential::Key, Credential::Token] {
                let body = (method == "post").then(|| json!({}));
                let request = request(&method.to_uppercase(), &concrete, body.as_ref(), credential);
                let (status, _, answer) = server.send(request).await;
                let refused = matches!(status, 401 | 403);
                assert_eq!(
                    refused,
                    class.status(credential) == 401,
                    "{method} {path} ({class:?}) with {credential:?}: {status} {answer}"
                );
            }
            routes += 1;
        }
    }
    assert!(routes >= 30, "{routes} routes in the document");

    // gRPC: the services reflection lists, and each one's methods from its descriptor.
    let channel = server.channel().await;
    let mut methods = 0;
    for (service, method, client_streaming, server_streaming) in served_methods(&channel).await {
        let path = format!("/{service}/{method}");
        let (class, _) = crate::admission::table::grpc_method(&path)
            .unwrap_or_else(|| panic!("{path} is not in the admission table"));
        for credential in [Credential::Nothing, Credential::Key, Credential::Token] {
            let code = call_with(
                &channel,
                &path,
                client_streaming,
                server_streaming,
                credential,
            )
            .await;
            let refused = matches!(
                code,
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
            );
            let expected = match class {
                crate::admission::table::Class::Open => false,
                crate::admission::table::Class::Reads
                | crate::admission::table::Class::Inference => credential != Credential::Key,
                crate::admission::table::Class::Admin => credential != Credential::Token,
            };
            assert_eq!(
                refused, expected,
                "{path} ({class:?}) with {credential:?}: {code:?}"
            );
        }
        methods += 1;
    }
    assert!(methods >= 15, "{methods} gRPC methods");
}

/// Every method of every service the server's reflection lists: (service, method, whether its
/// requests stream, whether its responses do).
async fn served_methods(channel: &tonic::transport::Channel) -> Vec<(String, String, bool, bool)> {
    use prost::Message;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let reflect = crate::tests::support::reflect;
    let MessageResponse::ListServicesResponse(list) =
        reflect(channel, MessageRequest::ListServices(String::new())).await
    else {
        panic!("no list of services");
    };
    let mut methods = Vec::new();
    for service in list.service {
        let question = MessageRequest::FileContainingSymbol(service.name.clone());
        let MessageResponse::FileDescriptorResponse(files) = reflect(channel, question).await
        else {
            panic!("no descriptor for {}", service.name);
        };
        for bytes in files.file_descriptor_proto {
            let file = prost_types::FileDescriptorProto::decode(&bytes[..]).unwrap();
            for described in &file.service {
                let full = format!("{}.{}", file.package(), described.name());
                if full != service.name {
                    continue;
                }
                for method in &described.method {
                    methods.push((
                        full.clone(),
                        method.name().to_string(),
                        method.client_streaming(),
                        method.server_streaming(),
                    ));
                }
            }
        }
    }
    methods
}

/// Calls the gRPC method at `path` with one empty message and `credential`; the status code
/// it answers with (`Ok` for a call that got its response, or its stream, started).
async fn call_with(
    channel: &tonic::transport::Channel,
    path: &str,
    client_streaming: bool,
    server_streaming: bool,
    credential: Credential,
) -> tonic::Code {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let path: axum::http::uri::PathAndQuery = path.parse().unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let secret = match credential {
        Credential::Key => Some(KEY),
        Credential::Token => Some(TOKEN),
        _ => None,
    };
    let stamp = |message| match secret {
        Some(secret) => with(secret, message),
        None => tonic::Request::new(message),
    };
    let stamp_stream = |message| match secret {
        Some(secret) => with(secret, message),
        None => tonic::Request::new(message),
    };
    let answer = match (client_streaming, server_streaming) {
        (false, false) => grpc.unary(stamp(()), path, codec).await.map(drop),
        (false, true) => grpc
            .server_streaming(stamp(()), path, codec)
            .await
            .map(drop),
        (true, false) => grpc
            .client_streaming(stamp_stream(tokio_stream::iter([()])), path, codec)
            .await
            .map(drop),
        (true, true) => grpc
            .streaming(stamp_stream(tokio_stream::iter([()])), path, codec)
            .await
            .map(drop),
    };
    match answer {
        Ok(()) => tonic::Code::Ok,
        Err(status) => status.code(),
    }
}
