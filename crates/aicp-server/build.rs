//! Generates the Open Inference Protocol's gRPC types, server and client from `proto/` with the
//! `protoc` that ships inside the protoc-bin-vendored crate (no download, no system package), and
//! keeps the file descriptor set for gRPC server reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not when it is compiled: a build directory shared by clones at
    // other paths reuses the compiled script.
    let proto_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", proto_dir.display());
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("inference_descriptor.bin"))
        .compile_with_config(
            config,
            &[proto_dir.join("grpc_service.proto")],
            std::slice::from_ref(&proto_dir),
        )?;
    Ok(())
}
