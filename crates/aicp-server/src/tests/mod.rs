//! aicp's front ends in the test's own process ([`support`]): the ML API, the Open Inference
//! Protocol over REST and gRPC, typed tensors of every datatype through both, who can reach
//! what, scheduling seen through the front ends, chains of models,
//! live model control, hostile model files, the OpenAPI document's coverage, pictures, and
//! fuzzing of every parser a client reaches. Part of the quick lane: no port, no process, no
//! Python.

mod access;
mod chains;
mod fuzz;
mod grpc;
mod hostile_models;
mod ml_api;
mod model_control;
mod openapi;
mod pictures;
mod preprocess;
mod scheduling;
mod support;
mod typed;
mod v2_rest;
