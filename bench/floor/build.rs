//! The Open Inference Protocol's gRPC server types from `proto/`, as aicp-server generates them,
//! with default stubs: the floor answers `ModelMetadata` and `ModelInfer` only. The client is for
//! its test.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", proto_dir.display());
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .generate_default_stubs(true)
        .compile_with_config(
            config,
            &[proto_dir.join("grpc_service.proto")],
            std::slice::from_ref(&proto_dir),
        )?;
    Ok(())
}
