//! The Open Inference Protocol as third-party clients speak it to the real `aicp serve`:
//! Triton's and KServe's Python clients over REST and gRPC (their conformance scripts compare
//! every answer with onnxruntime's on the same digits), and Triton's perf_analyzer loading it
//! over both. (Our own tonic client and the malformed requests no client library sends:
//! `aicp-server`'s in-process tests.)

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::common::{self, Server, repo_root, run_bounded};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn tritons_python_clients_work_over_rest_and_grpc() {
    let server = Server::start(&repo_root().join("models"), &[]);
    common::conformance(common::Clients::Triton, &server, &[]);
}

#[test]
fn kserves_python_clients_work_over_rest_and_grpc() {
    let server = Server::start(&repo_root().join("models"), &[]);
    common::conformance(common::Clients::KServe, &server, &[]);
}

/// perf_analyzer, installed into the test virtualenv by scripts/test.sh.
fn perf_analyzer() -> PathBuf {
    std::env::var_os("AICP_PERF_ANALYZER")
        .map(Into::into)
        .unwrap_or_else(|| repo_root().join(".venv/bin/perf_analyzer"))
}

#[test]
fn perf_analyzer_loads_the_server_over_rest_and_grpc() {
    let server = Server::start(&repo_root().join("models"), &[]);
    let http = server.base.trim_start_matches("http://").to_string();
    for (protocol, url) in [("http", http.as_str()), ("grpc", server.grpc.as_str())] {
        let out = run_bounded(
            Command::new(perf_analyzer()).args([
                "-m",
                "mnist",
                "-u",
                url,
                "-i",
                protocol,
                // Random bytes are not valid pixels (NaN, out of range); zeros are.
                "--input-data",
                "zero",
                "--concurrency-range",
                "2",
                "--measurement-interval",
                "1000",
                // The test checks that it runs and reads the counters, not the figures: other
                // tests load the machine meanwhile, so stability is asked loosely.
                "--max-trials",
                "10",
                "--stability-percentage",
                "500",
            ]),
            Duration::from_secs(60),
        );
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{protocol}: {stdout}\n{stderr}");
        // It read the server-side counters through the statistics extension.
        assert!(
            stdout.contains("Concurrency: 2, throughput:") && stdout.contains("Execution count:"),
            "{protocol}: {stdout}"
        );
    }
}
