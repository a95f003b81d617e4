//! Every engine aicp can serve with, registered once: its name (model.toml's `backend`, the
//! `engine` the APIs report, the metrics' label), where it computes, and how it is found on a
//! machine. `auto` prefers them in [`ENGINES`]' order. Adding an engine is one module (an
//! [`Engine`] and its [`crate::Runnable`], with its [`EngineKind`]) and one line in
//! [`ENGINES`].

use std::path::Path;

use crate::{Engine, EngineKind, GpuMinBatch};

/// Where an engine computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Gpu,
}

/// What finding the engines on this machine may use.
#[derive(Debug, Clone, Copy, Default)]
pub struct Setup<'a> {
    /// ONNX Runtime's library, when given explicitly.
    pub ort_library: Option<&'a Path>,
    /// Whether a GPU may be used, and from what batch size; `None`: never touch one.
    pub gpu: Option<GpuMinBatch>,
}

/// One engine, as [`ENGINES`] lists it.
pub struct Registration {
    pub kind: EngineKind,
    pub device: Device,
    /// Finds the engine on this machine, or says why it is not there.
    pub find: fn(&Setup) -> Result<Box<dyn Engine>, String>,
}

/// The engines, in the order `auto` prefers them.
pub const ENGINES: &[Registration] = &[
    Registration {
        kind: crate::CUDA,
        device: Device::Gpu,
        find: find_gpu,
    },
    Registration {
        kind: crate::onnxruntime::KIND,
        device: Device::Cpu,
        find: crate::onnxruntime::find,
    },
    Registration {
        kind: crate::tract::KIND,
        device: Device::Cpu,
        find: |_| Ok(Box::new(crate::tract::TractEngine)),
    },
];

/// The registration of the engine called `name`.
pub fn registration(name: &str) -> Option<&'static Registration> {
    ENGINES.iter().find(|r| r.kind.name() == name)
}

/// The names of the engines, for messages.
pub fn names() -> String {
    let names: Vec<&str> = ENGINES.iter().map(|r| r.kind.name()).collect();
    names.join(", ")
}

fn find_gpu(setup: &Setup) -> Result<Box<dyn Engine>, String> {
    match setup.gpu {
        None => Err("GPU use is off (--gpu off)".to_string()),
        Some(min_batch) => crate::probe_gpu(min_batch),
    }
}
