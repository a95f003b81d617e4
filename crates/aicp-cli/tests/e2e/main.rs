//! aicp end to end: the real `aicp` binary, driven as users and operators drive it, with what
//! only a real process shows. Third-party clients (Triton's and KServe's Python clients,
//! perf_analyzer), both engines with ONNX Runtime's library, TLS, SIGTERM and draining, slow and
//! hostile clients on real sockets, `/metrics` and the logs, the OpenAPI document checked by
//! Python's validators, the drawing page in Chromium, the deployment manifests, a soak, and the
//! `models`, `predict`, `train`, `quantize` and `bench` commands.
//!
//! The full lane (`scripts/test.sh`) runs this binary after installing what it drives; it is
//! not part of the quick lane (`cargo test --workspace`), which never builds it. Its `slow`
//! tests run in the slow lane (`scripts/test.sh slow`).

mod commands;
mod common;
mod config;
mod conformance;
mod deploy;
mod docs;
mod engines;
mod gpu;
mod lifecycle;
mod limits;
mod metrics;
mod onnx_node;
mod openapi;
mod preprocess;
mod quantize;
mod real_models;
mod slow;
mod soak;
mod tls;
mod train;
mod web;
