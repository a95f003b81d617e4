//! The admission table: every HTTP route and every gRPC method the server answers, listed once
//! with its class. The admission layers ([`super::http`], [`super::grpc`]) read it for every
//! call, and refuse a route or method it does not list: a handler added without its line here
//! answers nobody, and the access tests, which enumerate the routers, fail.

use axum::http::Method;

/// What a call must bring before its handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Health, readiness, the page, the documentation, `/metrics`: anyone.
    Open,
    /// Listings, metadata, statistics, the repository index: the API key when the server has
    /// one; its body read whole within the upload limits; never shed.
    Reads,
    /// Inference: the API key; its body read whole; then a place under the in-flight cap.
    Inference,
    /// Loading and unloading models: the admin token; its body read whole.
    Admin,
}

impl Class {
    /// The secret a call of this class needs, if any.
    pub fn secret(self) -> Option<crate::auth::Secret> {
        use crate::auth::Secret;
        match self {
            Self::Open => None,
            Self::Reads | Self::Inference => Some(Secret::ApiKey),
            Self::Admin => Some(Secret::AdminToken),
        }
    }
}

use Class::*;

/// Every HTTP route: its method (`*`: any), its path as the router matches it, and its class.
/// A GET route answers HEAD too.
pub const HTTP_ROUTES: &[(&str, &str, Class)] = &[
    // The ML API and the page.
    ("GET", "/", Open),
    ("GET", "/healthz", Open),
    ("GET", "/readyz", Open),
    ("POST", "/api/v1/ml/classify", Inference),
    ("POST", "/api/v1/ml/classify/image", Inference),
    ("POST", "/api/v1/ml/classify/text", Inference),
    ("POST", "/api/v1/ml/embed", Inference),
    ("POST", "/api/v1/ml/tokenize", Inference),
    ("POST", "/api/v1/ml/inference", Inference),
    ("GET", "/api/v1/ml/models", Reads),
    ("GET", "/api/v1/ml/models/{name}", Reads),
    // The Open Inference Protocol over REST.
    ("GET", "/v2/health/live", Open),
    ("GET", "/v2/health/ready", Open),
    ("GET", "/v2/models/{name}/ready", Open),
    ("GET", "/v2/models/{name}/versions/{version}/ready", Open),
    ("POST", "/v2/models/{name}/infer", Inference),
    (
        "POST",
        "/v2/models/{name}/versions/{version}/infer",
        Inference,
    ),
    ("GET", "/v2", Reads),
    ("POST", "/v2/repository/index", Reads),
    ("GET", "/v2/models/stats", Reads),
    ("GET", "/v2/models/{name}", Reads),
    ("GET", "/v2/models/{name}/versions/{version}", Reads),
    ("GET", "/v2/models/{name}/config", Reads),
    ("GET", "/v2/models/{name}/versions/{version}/config", Reads),
    ("GET", "/v2/models/{name}/stats", Reads),
    ("GET", "/v2/models/{name}/versions/{version}/stats", Reads),
    ("POST", "/v2/repository/models/{name}/load", Admin),
    ("POST", "/v2/repository/models/{name}/unload", Admin),
    // Any other path under /v2: the protocol's 404.
    ("*", "/v2/", Open),
    ("*", "/v2/{*rest}", Open),
    // Metrics and the documentation.
    ("GET", "/metrics", Open),
    ("GET", "/openapi.json", Open),
    ("GET", "/docs", Open),
    ("GET", "/docs/", Open),
    ("GET", "/docs/{*rest}", Open),
];

/// Every gRPC method: its path, its class, and whether its requests stream (a streaming
/// method's messages each take their own place under the in-flight cap, in its handler).
pub const GRPC_METHODS: &[(&str, Class, Streaming)] = &[
    ("/inference.GRPCInferenceService/ServerLive", Open, Unary),
    ("/inference.GRPCInferenceService/ServerReady", Open, Unary),
    ("/inference.GRPCInferenceService/ModelReady", Open, Unary),
    (
        "/inference.GRPCInferenceService/ServerMetadata",
        Reads,
        Unary,
    ),
    (
        "/inference.GRPCInferenceService/ModelMetadata",
        Reads,
        Unary,
    ),
    ("/inference.GRPCInferenceService/ModelConfig", Reads, Unary),
    (
        "/inference.GRPCInferenceService/ModelStatistics",
        Reads,
        Unary,
    ),
    (
        "/inference.GRPCInferenceService/RepositoryIndex",
        Reads,
        Unary,
    ),
    (
        "/inference.GRPCInferenceService/ModelInfer",
        Inference,
        Unary,
    ),
    (
        "/inference.GRPCInferenceService/ModelStreamInfer",
        Inference,
        Stream,
    ),
    (
        "/inference.GRPCInferenceService/RepositoryModelLoad",
        Admin,
        Unary,
    ),
    (
        "/inference.GRPCInferenceService/RepositoryModelUnload",
        Admin,
        Unary,
    ),
    ("/grpc.health.v1.Health/Check", Open, Unary),
    ("/grpc.health.v1.Health/Watch", Open, Unary),
    (
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        Open,
        Stream,
    ),
];

/// Whether a gRPC method's requests stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Streaming {
    Unary,
    Stream,
}

use Streaming::*;

/// The class of the HTTP route `path` (as the router matched it) for `method`; `None`: not
/// listed, refused.
pub fn http_class(method: &Method, path: &str) -> Option<Class> {
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    HTTP_ROUTES
        .iter()
        .find(|(m, p, _)| *p == path && (*m == "*" || *m == method))
        .map(|&(_, _, class)| class)
}

/// The class of the gRPC method at `path`, and whether it streams; `None`: not listed, refused.
pub fn grpc_method(path: &str) -> Option<(Class, Streaming)> {
    GRPC_METHODS
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|&(_, class, streaming)| (class, streaming))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_and_method_is_listed_once() {
        let mut routes: Vec<(&str, &str)> = HTTP_ROUTES.iter().map(|&(m, p, _)| (m, p)).collect();
        routes.sort();
        routes.dedup();
        assert_eq!(routes.len(), HTTP_ROUTES.len());
        let mut methods: Vec<&str> = GRPC_METHODS.iter().map(|&(p, _, _)| p).collect();
        methods.sort();
        methods.dedup();
        assert_eq!(methods.len(), GRPC_METHODS.len());
    }

    #[test]
    fn an_unlisted_route_or_method_has_no_class() {
        assert_eq!(http_class(&Method::GET, "/healthz"), Some(Open));
        assert_eq!(http_class(&Method::HEAD, "/healthz"), Some(Open));
        assert_eq!(http_class(&Method::DELETE, "/healthz"), None);
        assert_eq!(http_class(&Method::GET, "/secret"), None);
        assert_eq!(http_class(&Method::PUT, "/v2/{*rest}"), Some(Open));
        assert_eq!(grpc_method("/inference.GRPCInferenceService/Nope"), None);
        assert_eq!(
            grpc_method("/inference.GRPCInferenceService/ModelInfer"),
            Some((Inference, Unary))
        );
    }
}
