//! Slow and hostile clients against the real `aicp serve`: stalled uploads and half-sent request
//! heads over HTTP, stalled messages over gRPC, idle keep-alive connections, a full connection
//! cap and a spent upload budget. None of them may lock out a client that sends its request
//! whole; each is closed after its timeout; memory stays bounded. This is the limits smoke on
//! real sockets, in real time; the timeout rules themselves are unit tests of `aicp-server`'s
//! `connections` and `upload` modules.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::{Server, digits, repo_root};
use aicp_server::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use serde_json::json;

fn classify_body() -> String {
    let (pixels, _) = digits(1).remove(0);
    json!({"image_data": pixels}).to_string()
}

/// The server's resident memory, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

fn connect(server: &Server) -> TcpStream {
    TcpStream::connect(server.base.trim_start_matches("http://")).unwrap()
}

/// Whether the server has closed `stream` or sent something on it, without waiting.
fn answered(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let answered = match stream.peek(&mut byte) {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(_) => true,
    };
    stream.set_nonblocking(false).unwrap();
    answered
}

/// Everything the server sends on `stream` until it closes it, waiting at most `limit`.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> String {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the server kept the connection open past {limit:?}: {e}"),
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// Classifies a digit `n` times; every answer must be 200. Returns the median latency.
fn classify(server: &Server, n: usize) -> Duration {
    let body = classify_body();
    let mut latencies: Vec<Duration> = (0..n)
        .map(|_| {
            let start = Instant::now();
            let (status, answer) = server.post_raw("/api/v1/ml/classify", body.clone());
            assert_eq!(status, 200, "{answer}");
            start.elapsed()
        })
        .collect();
    latencies.sort();
    latencies[n / 2]
}

#[test]
fn stalled_uploads_and_half_sent_heads_do_not_lock_out_inference() {
    let server = Server::start(
        &repo_root().join("models"),
        &[
            // Long enough for the classifications beside the stalled clients to finish first
            // on a loaded machine, short enough not to keep the lane waiting.
            "--header-timeout-secs",
            "5",
            "--body-timeout-secs",
            "6",
            "--max-in-flight",
            "256",
        ],
    );
    let before = classify(&server, 20);
    let rss_before = rss(server.child.id());

    // 400 uploads that announce 100 kB, send a few bytes of it, and stall: more than
    // --max-in-flight, so if they held places under the cap nothing else could run.
    let mut stalled: Vec<TcpStream> = (0..400)
        .map(|_| {
            let mut stream = connect(&server);
            stream
                .write_all(
                    b"POST /api/v1/ml/classify HTTP/1.1\r\nHost: aicp\r\n\
                      Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n\
                      {\"image_data\": [0.1, 0.2, ",
                )
                .unwrap();
            stream
        })
        .collect();
    // 50 request heads cut off half way.
    let mut half_sent: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut stream = connect(&server);
            stream
                .write_all(b"POST /api/v1/ml/classify HTTP/1.1\r\nHost: ai")
                .unwrap();
            stream
        })
        .collect();

    let during = classify(&server, 20);
    println!("classify p50: {before:?} before the stalled clients, {during:?} beside them");
    // The classifications did not wait for the stalled clients to be dropped: all are still
    // open and unanswered.
    assert!(stalled.iter().chain(&half_sent).all(|s| !answered(s)));
    let rss_during = rss(server.child.id());
    println!(
        "server RSS: {} MiB before, {} MiB with 450 stalled connections",
        rss_before >> 20,
        rss_during >> 20
    );
    assert!(
        rss_during < rss_before + (64 << 20),
        "RSS grew from {rss_before} to {rss_during} bytes"
    );

    // Each is closed after its timeout: the uploads with a 408 that says why.
    for stream in &mut stalled {
        let answer = read_until_closed(stream, Duration::from_secs(60));
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("--body-timeout-secs"), "{answer}");
    }
    for stream in &mut half_sent {
        read_until_closed(stream, Duration::from_secs(60));
    }
    classify(&server, 5);
    let metrics = server.metrics();
    assert!(
        metrics.contains(r#"aicp_connections_closed_total{reason="header_timeout"} 50"#),
        "{metrics}"
    );
}

#[test]
fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let server = Server::start(&repo_root().join("models"), &["--idle-timeout-secs", "2"]);
    let mut stream = connect(&server);
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: aicp\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    // Kept alive after the answer, then closed for idling.
    read_until_closed(&mut stream, Duration::from_secs(60));
    // A connection that never sends a byte is idle from the start.
    let mut silent = connect(&server);
    assert_eq!(read_until_closed(&mut silent, Duration::from_secs(60)), "");
}

#[test]
fn past_the_connection_cap_new_connections_wait_until_idle_ones_are_closed() {
    let server = Server::start(
        &repo_root().join("models"),
        &["--max-connections", "8", "--idle-timeout-secs", "3"],
    );
    // The readiness poll's connection may still be open: fill every place with silent ones.
    let silent: Vec<TcpStream> = (0..8).map(|_| connect(&server)).collect();
    std::thread::sleep(Duration::from_millis(200));
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let response = client
        .get(format!("{}/healthz", server.base))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    // It was answered only once the server had closed idle connections to make room.
    assert!(silent.iter().any(answered));
}

#[test]
fn a_spent_upload_budget_refuses_bodies_with_retry_after_and_recovers() {
    let server = Server::start(
        &repo_root().join("models"),
        &[
            "--upload-memory-bytes",
            "300000",
            "--body-timeout-secs",
            "4",
        ],
    );
    let chunk = vec![b' '; 100_000];
    // Three uploads send 100 kB each of 200 kB and stall: the budget is spent.
    let mut stalled: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut stream = connect(&server);
            stream
                .write_all(
                    b"POST /api/v1/ml/classify HTTP/1.1\r\nHost: aicp\r\n\
                      Content-Type: application/json\r\nContent-Length: 200000\r\n\r\n",
                )
                .unwrap();
            stream.write_all(&chunk).unwrap();
            stream
        })
        .collect();
    // Wait (bounded) until the server has received them.
    let body = classify_body();
    let deadline = Instant::now() + Duration::from_secs(30);
    let refused = loop {
        let response = server
            .client
            .post(format!("{}/api/v1/ml/classify", server.base))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .unwrap();
        if response.status() == 429 {
            break response;
        }
        assert!(Instant::now() < deadline, "the budget never filled");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(refused.headers()["retry-after"], "1");
    let text = refused.text().unwrap();
    assert!(text.contains("--upload-memory-bytes"), "{text}");
    // Once the stalled uploads time out, their bytes are free again.
    for stream in &mut stalled {
        read_until_closed(stream, Duration::from_secs(60));
    }
    classify(&server, 3);
}

/// A frame of a request body the test writes by hand.
type Frame = Result<hyper::body::Frame<bytes::Bytes>, std::convert::Infallible>;
/// A request body fed frame by frame from a channel.
type FedBody = http_body_util::StreamBody<tokio_stream::wrappers::ReceiverStream<Frame>>;
type Answer = hyper::Result<hyper::Response<hyper::body::Incoming>>;

/// A gRPC `ModelInfer` call whose message announces 3,136 bytes, sends ten, and stalls: the
/// sender that would feed it more, and its answer.
fn stalled_grpc_call(
    sender: &mut hyper::client::conn::http2::SendRequest<FedBody>,
) -> (
    tokio::sync::mpsc::Sender<Frame>,
    impl Future<Output = Answer> + use<>,
) {
    let (frames, body) = tokio::sync::mpsc::channel(1);
    let mut start = vec![0u8];
    start.extend_from_slice(&3136u32.to_be_bytes());
    start.extend_from_slice(&[0u8; 10]);
    frames
        .try_send(Ok(hyper::body::Frame::data(start.into())))
        .unwrap();
    let request = hyper::Request::post("/inference.GRPCInferenceService/ModelInfer")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(body),
        ))
        .unwrap();
    (frames, sender.send_request(request))
}

#[test]
fn stalled_grpc_messages_hold_no_place_and_time_out() {
    let server = Server::start(
        &repo_root().join("models"),
        &["--body-timeout-secs", "4", "--max-in-flight", "4"],
    );
    let grpc = server.grpc.clone();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            let tcp = tokio::net::TcpStream::connect(&grpc).await.unwrap();
            let (mut sender, connection) = hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(tcp),
            )
            .await
            .unwrap();
            tokio::spawn(connection);
            // More stalled calls than --max-in-flight.
            let mut calls = Vec::new();
            for _ in 0..20 {
                calls.push(stalled_grpc_call(&mut sender));
            }
            let (frames, answers): (Vec<_>, Vec<_>) = calls.into_iter().unzip();
            let answers: Vec<_> = answers.into_iter().map(tokio::spawn).collect();

            let (pixels, _) = digits(1).remove(0);
            let mut client = GrpcInferenceServiceClient::connect(format!("http://{grpc}"))
                .await
                .unwrap();
            for _ in 0..5 {
                let request = crate::common::grpc_digit(&pixels);
                client.model_infer(request).await.unwrap();
            }
            assert!(answers.iter().all(|a| !a.is_finished()));

            for answer in answers {
                let response = tokio::time::timeout(Duration::from_secs(60), answer)
                    .await
                    .expect("a stalled call was never timed out")
                    .unwrap()
                    .unwrap();
                let status = response
                    .headers()
                    .get("grpc-status")
                    .map(|v| v.to_str().unwrap().to_string());
                let message = response
                    .headers()
                    .get("grpc-message")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default();
                assert_eq!(status.as_deref(), Some("4"), "{message}");
                assert!(message.contains("body-timeout-secs"), "{message}");
            }
            drop(frames);
        });
}
