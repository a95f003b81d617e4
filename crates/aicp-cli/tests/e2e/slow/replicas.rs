//! Three replicas of `aicp serve` behind nginx, configured by `deploy/nginx/aicp.conf` (its
//! addresses moved to free loopback ports), under steady load over HTTP and gRPC: one replica
//! restarted gracefully (SIGTERM, then started again), another killed (SIGKILL). The clients
//! must see no failed request; the figures are printed.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{AICP, digits, repo_root};
use aicp_server::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use serde_json::json;

/// A port nothing listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A replica on fixed ports, so that it can be started again where nginx expects it.
struct Replica {
    http: u16,
    grpc: u16,
    child: Option<Child>,
}

impl Replica {
    fn new() -> Self {
        let mut replica = Self {
            http: free_port(),
            grpc: free_port(),
            child: None,
        };
        replica.start();
        replica
    }

    fn start(&mut self) {
        let child = Command::new(AICP)
            .current_dir(repo_root())
            .args(["serve", "--models", "models", "--shutdown-delay-secs", "1"])
            .args(["--port", &self.http.to_string()])
            .args(["--grpc-port", &self.grpc.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_until(
            Duration::from_secs(60),
            "a replica never became ready",
            || ready(&format!("http://127.0.0.1:{}", self.http)),
        );
    }

    fn signal(&mut self, signal: &str) {
        let child = self.child.as_mut().unwrap();
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (bounded) for the process to exit.
    fn wait(&mut self) {
        let mut child = self.child.take().unwrap();
        wait_until(Duration::from_secs(60), "a replica never exited", || {
            child.try_wait().unwrap().is_some()
        });
    }

    /// Samples this replica has inferred since it started.
    fn inferred(&self) -> u64 {
        let response = reqwest::blocking::get(format!(
            "http://127.0.0.1:{}/v2/models/mnist/stats",
            self.http
        ))
        .unwrap();
        let (_, stats) = crate::common::json_of(response);
        stats["model_stats"][0]["inference_count"].as_u64().unwrap()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn ready(base: &str) -> bool {
    reqwest::blocking::Client::new()
        .get(format!("{base}/readyz"))
        .timeout(Duration::from_secs(2))
        .send()
        .is_ok_and(|r| r.status() == 200)
}

fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// nginx running `deploy/nginx/aicp.conf` with the replicas' addresses and its own ports in
/// place of the example's.
struct Nginx {
    child: Child,
    http: u16,
    grpc: u16,
    dir: tempfile::TempDir,
}

impl Nginx {
    fn start(replicas: &[Replica]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (http, grpc) = (free_port(), free_port());
        let mut conf = std::fs::read_to_string(repo_root().join("deploy/nginx/aicp.conf")).unwrap();
        for (i, replica) in replicas.iter().enumerate() {
            let example = 8100 + 100 * i;
            conf = conf
                .replace(
                    &format!("127.0.0.1:{example} "),
                    &format!("127.0.0.1:{} ", replica.http),
                )
                .replace(
                    &format!("127.0.0.1:{} ", example + 1),
                    &format!("127.0.0.1:{} ", replica.grpc),
                );
        }
        assert!(
            !conf.contains("127.0.0.1:8"),
            "an example address is left:\n{conf}"
        );
        conf = conf
            .replace("listen 8000;", &format!("listen 127.0.0.1:{http};"))
            .replace(
                "listen 8001 http2;",
                &format!("listen 127.0.0.1:{grpc} http2;"),
            );
        // Its temporary files in the test's directory, not in the system's.
        let temp: String = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
            .iter()
            .map(|kind| {
                format!(
                    "    {kind}_temp_path {};\n",
                    dir.path().join(kind).display()
                )
            })
            .collect();
        conf = conf.replacen("http {\n", &format!("http {{\n{temp}"), 1);
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let mut globals = format!(
            "daemon off; pid {};",
            dir.path().join("nginx.pid").display()
        );
        // As root, nginx's workers would run as nobody, who cannot use the test's directory.
        if unsafe { libc::geteuid() } == 0 {
            globals.push_str(" user root;");
        }
        let child = Command::new(nginx())
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .args(["-g", &globals])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx (scripts/test.sh installs it)");
        let nginx = Self {
            child,
            http,
            grpc,
            dir,
        };
        wait_until(Duration::from_secs(30), "nginx never answered", || {
            ready(&format!("http://127.0.0.1:{http}"))
        });
        nginx
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master process stops its workers too.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let log = std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default();
        println!("nginx's error log:\n{log}");
    }
}

fn nginx() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| "nginx".into())
}

/// What the clients saw: each request's end (since the start), latency and error, if any.
#[derive(Default)]
struct Seen {
    requests: Vec<(Duration, Duration, &'static str, Option<String>)>,
    /// gRPC attempts answered UNAVAILABLE and tried again.
    retried: usize,
}

/// Keeps three HTTP clients and one gRPC client sending classify requests through nginx until
/// `stop`.
fn load(
    nginx: &Nginx,
    start: Instant,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
) -> Vec<std::thread::JoinHandle<()>> {
    let (pixels, _) = digits(1).remove(0);
    let body = json!({"image_data": pixels}).to_string();
    let mut threads = Vec::new();
    for _ in 0..3 {
        let (stop, seen, body) = (stop.clone(), seen.clone(), body.clone());
        let url = format!("http://127.0.0.1:{}/api/v1/ml/classify", nginx.http);
        threads.push(std::thread::spawn(move || {
            let client = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let error = match client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                {
                    Ok(r) if r.status() == 200 => None,
                    Ok(r) => Some(format!("{}: {}", r.status(), r.text().unwrap_or_default())),
                    Err(e) => Some(e.to_string()),
                };
                let record = (start.elapsed(), sent.elapsed(), "http", error);
                seen.lock().unwrap().requests.push(record);
            }
        }));
    }
    let endpoint = format!("http://127.0.0.1:{}", nginx.grpc);
    threads.push(std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let channel = tonic::transport::Endpoint::from_shared(endpoint)
                    .unwrap()
                    .timeout(Duration::from_secs(30))
                    .connect_lazy();
                let mut client = GrpcInferenceServiceClient::new(channel);
                while !stop.load(Ordering::Relaxed) {
                    let request = crate::common::grpc_digit(&pixels);
                    let sent = Instant::now();
                    // As gRPC's own retry policy does (KServe's client sets one by default):
                    // UNAVAILABLE, the answer for a call its replica could not complete, is
                    // tried again, up to three attempts.
                    let mut attempts = 0;
                    let error = loop {
                        attempts += 1;
                        match client.model_infer(request.clone()).await {
                            Ok(_) => break None,
                            Err(s) if s.code() == tonic::Code::Unavailable && attempts < 3 => {
                                seen.lock().unwrap().retried += 1;
                            }
                            Err(s) => break Some(format!("{:?}: {}", s.code(), s.message())),
                        }
                    };
                    let record = (start.elapsed(), sent.elapsed(), "grpc", error);
                    seen.lock().unwrap().requests.push(record);
                }
            });
    }));
    threads
}

/// The p99 latency of the requests that ended within `window`.
fn p99(seen: &Seen, window: std::ops::Range<Duration>) -> Duration {
    let mut latencies: Vec<Duration> = seen
        .requests
        .iter()
        .filter(|r| window.contains(&r.0))
        .map(|r| r.1)
        .collect();
    latencies.sort();
    latencies
        .get(latencies.len().saturating_sub(1) * 99 / 100)
        .copied()
        .unwrap_or_default()
}

fn pause(time: Duration) {
    std::thread::sleep(time);
}

#[test]
#[ignore = "slow lane: scripts/test.sh slow"]
fn replicas_behind_nginx_lose_no_request_to_a_restart_or_a_kill() {
    let mut replicas: Vec<Replica> = (0..3).map(|_| Replica::new()).collect();
    let nginx = Nginx::start(&replicas);
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let clients = load(&nginx, start, stop.clone(), seen.clone());

    pause(Duration::from_secs(2));
    // A graceful restart: not ready at once, serving for the shutdown delay, then the
    // listeners close and requests in flight finish; then the replica starts again.
    let restart_began = start.elapsed();
    replicas[0].signal("-TERM");
    replicas[0].wait();
    replicas[0].start();
    let restart_ended = start.elapsed();

    pause(Duration::from_secs(2));
    // A crash: killed in the middle of whatever it was doing.
    let kill_at = start.elapsed();
    replicas[1].signal("-KILL");
    replicas[1].wait();
    pause(Duration::from_secs(3));
    let kill_window_end = start.elapsed();
    replicas[1].start();

    pause(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }

    let seen = seen.lock().unwrap();
    let failed: Vec<_> = seen.requests.iter().filter(|r| r.3.is_some()).collect();
    let count = |protocol: &str| seen.requests.iter().filter(|r| r.2 == protocol).count();
    println!(
        "{} requests ({} HTTP, {} gRPC) in {:.1} s, {} failed, {} gRPC attempts retried; p99 {:?} \
         overall, {:?} during the graceful restart ({:.1}-{:.1} s), {:?} in the 3 s after the kill",
        seen.requests.len(),
        count("http"),
        count("grpc"),
        start.elapsed().as_secs_f64(),
        failed.len(),
        seen.retried,
        p99(&seen, Duration::ZERO..Duration::MAX),
        p99(&seen, restart_began..restart_ended),
        restart_began.as_secs_f64(),
        restart_ended.as_secs_f64(),
        p99(&seen, kill_at..kill_window_end),
    );
    assert!(
        failed.is_empty(),
        "failed requests: {:?}",
        &failed[..failed.len().min(10)]
    );
    assert!(count("http") > 100 && count("grpc") > 100);
    // The restarted replicas took their share again.
    for replica in &replicas[..2] {
        assert!(replica.inferred() > 0, "a restarted replica served nothing");
    }
}
