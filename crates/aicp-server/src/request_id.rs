//! One id per request, over HTTP and gRPC alike: the client's `x-request-id` when it sends one,
//! else one made here. It is echoed in the response's `x-request-id` header and names the
//! request's tracing span, so every log line about the request carries it, including the
//! engine's, which runs on another thread (the scheduler carries the span to it).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{HeaderName, Request};
use tower::ServiceBuilder;
use tower::layer::util::{Identity, Stack};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::{
    DefaultOnBodyChunk, DefaultOnEos, DefaultOnFailure, DefaultOnRequest, DefaultOnResponse,
    TraceLayer,
};

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Ids made here: this process's random prefix and a counter, so ids are unique across
/// restarts and replicas without the cost of a random number per request.
#[derive(Clone)]
pub struct NextId {
    prefix: Arc<str>,
    counter: Arc<AtomicU64>,
}

impl Default for NextId {
    fn default() -> Self {
        let prefix = format!("{:08x}", rand::random::<u32>());
        Self {
            prefix: prefix.into(),
            counter: Arc::new(AtomicU64::new(1)),
        }
    }
}

impl MakeRequestId for NextId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.prefix)
            .parse()
            .ok()
            .map(RequestId::new)
    }
}

/// Sets the id on a request that has none.
pub fn set() -> SetRequestIdLayer<NextId> {
    SetRequestIdLayer::new(HEADER, NextId::default())
}

/// Copies the id to the response.
pub fn propagate() -> PropagateRequestIdLayer {
    PropagateRequestIdLayer::new(HEADER)
}

/// The request's span, named by its id; responses are logged at debug level with their status
/// and latency. Every field is recorded as a string, the cheapest kind for a log layer to
/// write out, since this runs for every request.
pub fn trace<B>(request: &Request<B>) -> tracing::Span {
    let id = request
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!(
        "request",
        id,
        method = request.method().as_str(),
        path = request.uri().path(),
    )
}

/// The layers both front ends put every request through, outermost first: the id is set, the
/// span opens with it (see [`trace`]), and the response gets it.
pub type Layers<C, B> = ServiceBuilder<
    Stack<
        PropagateRequestIdLayer,
        Stack<
            TraceLayer<
                C,
                fn(&Request<B>) -> tracing::Span,
                DefaultOnRequest,
                DefaultOnResponse,
                DefaultOnBodyChunk,
                DefaultOnEos,
                DefaultOnFailure,
            >,
            Stack<SetRequestIdLayer<NextId>, Identity>,
        >,
    >,
>;

/// [`Layers`] around `trace`, HTTP's or gRPC's (which tell a failed response by its status
/// code or by its `grpc-status`). A failed response is logged at debug level: each error is
/// logged where it is answered, at error level when it is the server's fault, at debug when it
/// is the client's or the load's (a bad shape, an unknown model, a shed request), so a
/// misbehaving client or an overload does not flood the log with errors.
pub fn layers<C, B>(trace: TraceLayer<C>) -> Layers<C, B> {
    ServiceBuilder::new()
        .layer(set())
        .layer(
            trace
                .make_span_with(self::trace::<B> as fn(&Request<B>) -> tracing::Span)
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .layer(propagate())
}
