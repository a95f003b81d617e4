//! TLS and mutual TLS on both protocols, with certificates this test makes (rcgen): curl,
//! reqwest, a tonic client, Triton's and KServe's Python clients over HTTPS and gRPC with TLS;
//! clients without a certificate, or with one from another CA, refused when client
//! certificates are required; a rotated certificate picked up without a restart (in real time
//! here; a rotation that does not load, under paused time: `aicp-server`'s `tls` unit tests);
//! certificates made by the security page's openssl commands, and a v1 client certificate refused
//! with its reason logged and counted.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{
    AICP, Clients, Server, conformance, digits, grpc_digit, repo_root, run_bounded,
};
use aicp_server::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, SanType,
};
use serde_json::json;

/// A certificate authority that signs certificates for the test.
struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Authority {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    /// A certificate and its key, as PEM, for `localhost` and 127.0.0.1.
    fn sign(&self, usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let certificate = params.signed_by(&key, &self.issuer).unwrap();
        (certificate.pem(), key.serialize_pem())
    }
}

/// The files of one test: a CA, the server's certificate, a client's.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new(authority: &Authority) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let files = Self { dir };
        std::fs::write(files.path("ca.pem"), authority.issuer.pem()).unwrap();
        let (cert, key) = authority.sign(ExtendedKeyUsagePurpose::ServerAuth);
        std::fs::write(files.path("server.pem"), cert).unwrap();
        std::fs::write(files.path("server.key"), key).unwrap();
        let (cert, key) = authority.sign(ExtendedKeyUsagePurpose::ClientAuth);
        std::fs::write(files.path("client.pem"), cert).unwrap();
        std::fs::write(files.path("client.key"), key).unwrap();
        files
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_string()
    }
}

/// `aicp serve` over TLS, with client certificates required when `mutual`.
fn start(files: &Files, mutual: bool, extra: &[&str]) -> Server {
    let mut args = vec![
        "--tls-cert".to_string(),
        files.arg("server.pem"),
        "--tls-key".to_string(),
        files.arg("server.key"),
    ];
    if mutual {
        args.extend(["--tls-client-ca".to_string(), files.arg("ca.pem")]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_tls(
        &repo_root().join("models"),
        &args,
        &files.path("ca.pem"),
        mutual.then(|| (files.path("client.pem"), files.path("client.key"))),
    )
}

fn classify_body() -> String {
    let (pixels, _) = digits(1).remove(0);
    json!({"image_data": pixels, "top_k": 1}).to_string()
}

/// curl's answer to a classify request over HTTPS; `client` adds a client certificate.
fn curl(server: &Server, files: &Files, client: bool) -> std::process::Output {
    let mut command = Command::new("curl");
    command
        .args(["-sS", "--fail-with-body", "--cacert"])
        .arg(files.path("ca.pem"))
        .args(["-H", "content-type: application/json", "--data-binary"])
        .arg(classify_body())
        .arg(format!("{}/api/v1/ml/classify", server.base));
    if client {
        command
            .arg("--cert")
            .arg(files.path("client.pem"))
            .arg("--key")
            .arg(files.path("client.key"));
    }
    run_bounded(&mut command, Duration::from_secs(60))
}

/// A tonic client's inference over gRPC with TLS, trusting `ca`; with `identity`, it presents
/// that certificate.
fn grpc_infer(server: &Server, ca: &Path, identity: Option<(&Path, &Path)>) -> Result<(), String> {
    let mut tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            std::fs::read(ca).unwrap(),
        ))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(tonic::transport::Identity::from_pem(
            std::fs::read(cert).unwrap(),
            std::fs::read(key).unwrap(),
        ));
    }
    let endpoint = format!("https://{}", server.grpc);
    let (pixels, _) = digits(1).remove(0);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            let channel = tonic::transport::Endpoint::from_shared(endpoint)
                .unwrap()
                .tls_config(tls)
                .map_err(|e| e.to_string())?
                .timeout(Duration::from_secs(30))
                .connect()
                .await
                .map_err(|e| format!("{e:?}"))?;
            let request = grpc_digit(&pixels);
            GrpcInferenceServiceClient::new(channel)
                .model_infer(request)
                .await
                .map(|_| ())
                .map_err(|e| format!("{e:?}"))
        })
}

#[test]
fn tls_serves_http_and_grpc_to_every_client() {
    let authority = Authority::new("aicp test CA");
    let files = Files::new(&authority);
    let server = start(&files, false, &[]);
    assert!(server.base.starts_with("https://"), "{}", server.base);

    let (status, answer) = server.post_raw("/api/v1/ml/classify", classify_body());
    assert_eq!(status, 200, "{answer}");
    let out = curl(&server, &files, false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("predictions"));
    grpc_infer(&server, &files.path("ca.pem"), None).unwrap();

    // Plain HTTP to the TLS port gets nowhere.
    let plain = server.base.replace("https://", "http://");
    assert!(
        reqwest::blocking::Client::new()
            .get(format!("{plain}/healthz"))
            .timeout(Duration::from_secs(30))
            .send()
            .is_err()
    );
    // A client that does not trust the server's CA refuses it.
    let stranger = Files::new(&Authority::new("another CA"));
    assert!(grpc_infer(&server, &stranger.path("ca.pem"), None).is_err());

    let tls = [files.path("ca.pem")];
    conformance(Clients::Triton, &server, &tls);
    conformance(Clients::KServe, &server, &tls);
}

#[test]
fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let authority = Authority::new("aicp test CA");
    let files = Files::new(&authority);
    let server = start(&files, true, &[]);

    // With the CA's client certificate: everything works.
    let (status, answer) = server.post_raw("/api/v1/ml/classify", classify_body());
    assert_eq!(status, 200, "{answer}");
    let out = curl(&server, &files, true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    grpc_infer(
        &server,
        &files.path("ca.pem"),
        Some((&files.path("client.pem"), &files.path("client.key"))),
    )
    .unwrap();
    let tls = [
        files.path("ca.pem"),
        files.path("client.pem"),
        files.path("client.key"),
    ];
    conformance(Clients::Triton, &server, &tls);
    conformance(Clients::KServe, &server, &tls);

    // Without a certificate, or with one another CA signed: refused by both protocols.
    let out = curl(&server, &files, false);
    assert!(
        !out.status.success(),
        "curl without a certificate was served"
    );
    assert!(grpc_infer(&server, &files.path("ca.pem"), None).is_err());
    let stranger = Files::new(&Authority::new("another CA"));
    assert!(
        grpc_infer(
            &server,
            &files.path("ca.pem"),
            Some((&stranger.path("client.pem"), &stranger.path("client.key"))),
        )
        .is_err()
    );
    let without = reqwest::blocking::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(files.path("ca.pem")).unwrap()).unwrap(),
        )
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    assert!(
        without
            .get(format!("{}/healthz", server.base))
            .send()
            .is_err()
    );
}

#[test]
fn a_rotated_certificate_is_served_without_a_restart() {
    let first = Authority::new("first CA");
    let files = Files::new(&first);
    let server = start(&files, false, &[]);
    grpc_infer(&server, &files.path("ca.pem"), None).unwrap();

    // cert-manager's way: new files from another CA written in place.
    let second = Authority::new("second CA");
    let (cert, key) = second.sign(ExtendedKeyUsagePurpose::ServerAuth);
    std::fs::write(files.path("second-ca.pem"), second.issuer.pem()).unwrap();
    std::fs::write(files.path("server.key"), key).unwrap();
    std::fs::write(files.path("server.pem"), cert).unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    while grpc_infer(&server, &files.path("second-ca.pem"), None).is_err() {
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The old one is gone.
    assert!(grpc_infer(&server, &files.path("ca.pem"), None).is_err());
}

#[test]
fn bad_tls_files_stop_the_start_with_the_file_named() {
    let files = Files::new(&Authority::new("aicp test CA"));
    std::fs::write(files.path("empty.pem"), "").unwrap();
    for (cert, key, expected) in [
        (
            "missing.pem",
            "server.key",
            "cannot read the certificate file",
        ),
        ("empty.pem", "server.key", "holds no certificate"),
        ("server.pem", "empty.pem", "holds no private key"),
        ("server.pem", "client.key", "do not make a usable pair"),
    ] {
        let out = run_bounded(
            Command::new(AICP)
                .args(["serve", "--port", "0", "--grpc-port", "0", "--models"])
                .arg(repo_root().join("models"))
                .arg("--tls-cert")
                .arg(files.path(cert))
                .arg("--tls-key")
                .arg(files.path(key)),
            Duration::from_secs(60),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cert} {key}: the server started");
        assert!(stderr.contains(expected), "{cert} {key}: {stderr}");
    }
    // A key without a certificate is a usage error.
    let out = run_bounded(
        Command::new(AICP)
            .args(["serve", "--tls-key"])
            .arg(files.path("server.key")),
        Duration::from_secs(60),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-cert"));
}

/// The security page's openssl commands make certificates that serve mutual TLS. A v1 client
/// certificate, which a bare `openssl x509 -req` makes, is refused, and the operator can tell
/// why: a warning with the reason and the way to a v3 one, and the counter by reason.
#[test]
fn certificates_made_as_the_manual_says_serve_and_a_v1_one_is_refused_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let at = |name: &str| dir.path().join(name);
    let page = std::fs::read_to_string(repo_root().join("docs/guide/security.md")).unwrap();
    let commands = page
        .split("### Making certificates")
        .nth(1)
        .and_then(|section| section.split("```sh\n").nth(1))
        .and_then(|block| block.split("\n```").next())
        .expect("the security page's openssl commands");
    let run = |command: &mut Command| {
        let out = run_bounded(command.current_dir(dir.path()), Duration::from_secs(60));
        assert!(
            out.status.success(),
            "{command:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(Command::new("bash").args(["-eo", "pipefail", "-c", commands]));
    // The same client key, certified the bare way: X.509 v1.
    run(Command::new("openssl").args([
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-out",
        "v1.pem",
    ]));

    let log = at("server.log");
    let server = Server::start_tls_with_stderr(
        &repo_root().join("models"),
        &[
            "--tls-cert",
            at("server.pem").to_str().unwrap(),
            "--tls-key",
            at("server.key").to_str().unwrap(),
            "--tls-client-ca",
            at("ca.pem").to_str().unwrap(),
        ],
        &at("ca.pem"),
        Some((at("client.pem"), at("client.key"))),
        std::fs::File::create(&log).unwrap(),
    );
    let (status, _) = server.get("/v2/health/ready");
    assert_eq!(status, 200, "the documented certificates serve mutual TLS");

    // curl (OpenSSL) sends the v1 certificate; rustls's own clients will not even load one.
    let out = run_bounded(
        Command::new("curl")
            .args([
                "-sS",
                "--cacert",
                "ca.pem",
                "--cert",
                "v1.pem",
                "--key",
                "client.key",
            ])
            .arg(format!("{}/healthz", server.base))
            .current_dir(dir.path()),
        Duration::from_secs(30),
    );
    assert!(
        !out.status.success(),
        "a v1 client certificate was accepted"
    );

    let metrics = server.metrics();
    assert!(
        metrics.contains(r#"aicp_tls_handshake_failures_total{reason="bad_client_certificate"} 1"#),
        "{metrics}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let warning = loop {
        let text = std::fs::read_to_string(&log).unwrap();
        if let Some(line) = text.lines().find(|l| l.contains("bad_client_certificate")) {
            break line.to_string();
        }
        assert!(Instant::now() < deadline, "no warning in the log:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("X.509 v3"), "{warning}");
}
