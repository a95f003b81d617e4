//! The server as a process: SIGTERM stops it cleanly, readiness turns false first while
//! requests in flight finish, the drain timeout bounds the wait; and `aicp bench` loads it
//! over every protocol and reads its counters back. (The scheduler's refusals, timeouts and
//! batching: `aicp-server`'s in-process tests.)

use std::process::Command;
use std::time::{Duration, Instant};

use aicp_testkit::fixtures;
use serde_json::{Value, json};

use crate::common::{AICP, Server, repo_root};

/// A repository holding the slow fixture model (`slow`, input `x` [N, 512]).
fn slow_models() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fixtures::slow(dir.path());
    dir
}

/// A V2 binary request of `samples` rows of 512 values for the slow model.
fn slow_request(samples: usize) -> (String, Vec<u8>) {
    let header = json!({
        "inputs": [{"name": "x", "shape": [samples, 512], "datatype": "FP32",
                    "parameters": {"binary_data_size": samples * 512 * 4}}],
        "outputs": [{"name": "y", "parameters": {"binary_data": true}}],
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend(std::iter::repeat_n(0.5f32.to_le_bytes(), samples * 512).flatten());
    (header.len().to_string(), body)
}

/// The slow model's queue right now: (requests waiting, requests in an engine run).
fn queue(server: &Server) -> (u64, u64) {
    let (status, body) = server.get("/api/v1/ml/models/slow");
    assert_eq!(status, 200, "{body}");
    let queue = &body["versions"][0]["queue"];
    (
        queue["waiting"].as_u64().unwrap(),
        queue["running"].as_u64().unwrap(),
    )
}

/// Polls (bounded) until the slow model's queue is in `state`.
fn wait_for_queue(server: &Server, state: (u64, u64)) {
    for _ in 0..1000 {
        if queue(server) == state {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("the queue never reached {state:?}: {:?}", queue(server));
}

/// Starts a request that holds the slow model's only instance for about half a second (a batch
/// of 1024); join the handle for its status.
fn occupy(server: &Server) -> std::thread::JoinHandle<u16> {
    let (length, body) = slow_request(1024);
    let url = format!("{}/v2/models/slow/infer", server.base);
    let client = server.client.clone();
    std::thread::spawn(move || {
        client
            .post(url)
            .header("Inference-Header-Content-Length", length)
            .body(body)
            .send()
            .unwrap()
            .status()
            .as_u16()
    })
}

#[test]
fn aicp_bench_reports_throughput_latency_and_the_servers_batch_size() {
    let server = Server::start(&repo_root().join("models"), &[]);
    let out = tempfile::tempdir().unwrap();
    let grpc_url = format!("http://{}", server.grpc);
    for (protocol, url) in [
        ("classify", server.base.as_str()),
        ("v2-json", server.base.as_str()),
        ("v2-binary", server.base.as_str()),
        ("grpc", grpc_url.as_str()),
    ] {
        let json_file = out.path().join(format!("{protocol}.json"));
        let output = Command::new(AICP)
            .args(["bench", "--url", url, "--protocol", protocol])
            .args([
                "--concurrency",
                "1,4",
                "--duration",
                "0.5",
                "--warmup",
                "0.1",
            ])
            .args(["--requests", "2000", "--json"])
            .arg(&json_file)
            .output()
            .unwrap();
        let table = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{protocol}: {table}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(table.contains("p99 us") && table.contains("c=4"), "{table}");
        let results: Value =
            serde_json::from_str(&std::fs::read_to_string(&json_file).unwrap()).unwrap();
        let levels = results.as_array().unwrap();
        assert_eq!(levels.len(), 2, "{results}");
        for level in levels {
            assert_eq!(level["errors"], 0, "{level}");
            assert!(level["requests"].as_u64().unwrap() > 0, "{level}");
            assert!(level["requests"].as_u64().unwrap() <= 2000, "{level}");
            assert!(level["throughput"].as_f64().unwrap() > 0.0, "{level}");
            let p = &level["latency_us"];
            assert!(
                p["p50"].as_u64() <= p["p99"].as_u64() && p["p99"].as_u64() <= p["max"].as_u64(),
                "{level}"
            );
            // Read from the server's counters: at least one sample per engine run.
            assert!(
                level["server_avg_batch"].as_f64().unwrap() >= 1.0,
                "{level}"
            );
        }
    }
    // A fixed rate, and an error the tool explains instead of counting.
    let output = Command::new(AICP)
        .args([
            "bench",
            "--url",
            &server.base,
            "--rate",
            "200",
            "--duration",
            "0.5",
            "--warmup",
            "0",
            "--json",
            "-",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(results[0]["rate"], 200.0);
    assert!(results[0]["requests"].as_u64().unwrap() > 50, "{results}");
    let output = Command::new(AICP)
        .args([
            "bench",
            "--url",
            &server.base,
            "--model",
            "nope",
            "--duration",
            "0.2",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the first request failed") && stderr.contains("nope"),
        "{stderr}"
    );
}

/// Sends SIGTERM to the server and waits for it to exit.
fn terminate(server: &mut Server) -> std::process::ExitStatus {
    send_sigterm(server);
    wait_for_exit(server)
}

fn send_sigterm(server: &Server) {
    let pid = server.child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success());
}

/// Waits (at most 60 s) for the server to exit.
fn wait_for_exit(server: &mut Server) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the server did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn shutdown_turns_readiness_false_first_then_finishes_requests_in_flight() {
    let models = slow_models();
    let mut server = Server::start(models.path(), &["--shutdown-delay-secs", "1"]);
    let first = occupy(&server);
    wait_for_queue(&server, (0, 1));
    let second = occupy(&server);
    wait_for_queue(&server, (1, 1));

    send_sigterm(&server);
    // Not ready at once, while it still answers (the shutdown delay).
    let mut not_ready = None;
    for _ in 0..200 {
        let (status, body) = server.get("/readyz");
        if status == 503 {
            not_ready = Some(body);
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let body = not_ready.expect("readiness should turn false as shutdown starts");
    assert!(
        body["reason"].as_str().unwrap().contains("shutting down"),
        "{body}"
    );
    let (status, _) = server.get("/v2/health/ready");
    assert_eq!(status, 503);

    // Both requests finish, then the server exits cleanly.
    assert_eq!(first.join().unwrap(), 200);
    assert_eq!(second.join().unwrap(), 200);
    let exit = wait_for_exit(&mut server);
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn the_drain_timeout_bounds_how_long_shutdown_waits() {
    let models = slow_models();
    let mut server = Server::start(models.path(), &["--drain-timeout-secs", "0"]);
    let running = occupy(&server);
    wait_for_queue(&server, (0, 1));
    let queued: Vec<_> = (0..4).map(|_| occupy(&server)).collect();
    wait_for_queue(&server, (4, 1));
    // Two seconds of work are in flight; the server does not wait for them.
    let exit = terminate(&mut server);
    assert!(exit.success(), "{exit:?}");
    let answered = std::iter::once(running)
        .chain(queued)
        .map(|request| request.join())
        .filter(|status| matches!(status, Ok(200)))
        .count();
    assert!(
        answered < 5,
        "every request finished: the drain timeout was not applied"
    );
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let mut server = Server::start(&repo_root().join("models"), &[]);
    let exit = terminate(&mut server);
    assert!(exit.success(), "{exit:?}");
}
