//! The listeners' accept loop and each connection's life: a cap on open connections (HTTP, gRPC
//! and metrics together), TLS when configured, and timeouts that close connections holding a
//! place without using it. A connection is *active* while it has a request whose answer is not
//! yet sent; between requests it is *idle*. It is closed when
//!
//! - its TLS handshake has not ended `header_timeout` after the connection was accepted,
//! - an HTTP/1 request head has not arrived whole `header_timeout` after its first byte,
//! - it stays idle for `idle_timeout` (keep-alive connections, HTTP/2 connections with no
//!   stream, connections that never send a byte).
//!
//! Request bodies have their own limits ([`crate::upload`]); HTTP/2 peers that stop answering
//! pings are dropped by hyper's keep-alive.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::tls::Tls;

/// How long a connection may hold a place without using it, and what HTTP/2 allows.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Open connections, every listener together; past it, new connections wait to be accepted.
    pub max_connections: usize,
    /// An HTTP/1 request head must arrive whole within this of its first byte; a TLS handshake
    /// must end within it.
    pub header_timeout: Duration,
    /// A connection with no request in progress is closed after this.
    pub idle_timeout: Duration,
    /// Concurrent streams (requests) on one HTTP/2 connection.
    pub http2_max_streams: u32,
    /// How often an HTTP/2 connection with streams open pings its peer; a peer that does not
    /// answer within 20 s is dropped.
    pub http2_keepalive: Duration,
}

/// How long an HTTP/2 peer has to answer a keep-alive ping.
pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Which protocols a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocols {
    /// HTTP/1.1, and HTTP/2 for clients that start with its preface (or pick it by ALPN).
    Http,
    /// HTTP/2 only: gRPC.
    Http2,
}

/// What every listener of a server shares: the places for open connections, the limits and TLS.
#[derive(Clone)]
pub struct Connections {
    places: Arc<Semaphore>,
    limits: ConnectionLimits,
    tls: Option<Arc<Tls>>,
}

/// Why a connection was closed by the server.
#[derive(Debug, Clone, Copy)]
enum Closed {
    HeaderTimeout,
    IdleTimeout,
}

impl Closed {
    fn reason(self) -> &'static str {
        match self {
            Self::HeaderTimeout => "header_timeout",
            Self::IdleTimeout => "idle_timeout",
        }
    }
}

impl Connections {
    pub fn new(limits: ConnectionLimits, tls: Option<Arc<Tls>>) -> Self {
        Self {
            places: Arc::new(Semaphore::new(
                limits.max_connections.min(Semaphore::MAX_PERMITS),
            )),
            limits,
            tls,
        }
    }

    /// Whether the listeners speak TLS.
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The same places and limits, in plain text.
    pub fn without_tls(&self) -> Self {
        Self {
            tls: None,
            ..self.clone()
        }
    }

    /// Accepts connections on `listener` and serves `service` on each until `stop` turns true;
    /// then stops accepting, asks every connection to close once its requests are answered, and
    /// returns when all have closed.
    pub async fn serve<S, B>(
        &self,
        listener: TcpListener,
        protocols: Protocols,
        service: S,
        mut stop: watch::Receiver<bool>,
    ) -> std::io::Result<()>
    where
        S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let builder = self.builder(protocols);
        // Every connection holds a sender; the receiver sees the end when the last one closes.
        let (open, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
        let mut last_warning: Option<Instant> = None;
        loop {
            if self.places.available_permits() == 0
                && last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10))
            {
                tracing::warn!(
                    "{} connections are open (--max-connections): new connections wait",
                    self.limits.max_connections
                );
                last_warning = Some(Instant::now());
            }
            let place = tokio::select! {
                place = self.places.clone().acquire_owned() => place,
                () = stopped(&mut stop) => break,
            };
            let Ok(place) = place else { break };
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = stopped(&mut stop) => break,
            };
            let tcp = match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // the listener itself is fine. Wait a moment rather than spin.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Answers go out at once: small request/response exchanges must not wait on Nagle.
            let _ = tcp.set_nodelay(true);
            let connection = Connection {
                builder: builder.clone(),
                service: service.clone(),
                limits: self.limits,
                stop: stop.clone(),
                protocols,
            };
            let tls = self.tls.clone();
            let open = open.clone();
            tokio::spawn(async move {
                let _place = place;
                let _open = open;
                metrics::gauge!("aicp_connections_open").increment(1.0);
                connection.run(tcp, tls).await;
                metrics::gauge!("aicp_connections_open").decrement(1.0);
            });
        }
        drop(listener);
        drop(open);
        let _ = all_closed.recv().await;
        Ok(())
    }

    fn builder(&self, protocols: Protocols) -> auto::Builder<TokioExecutor> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        if protocols == Protocols::Http2 {
            builder = builder.http2_only();
        }
        // Header and idle timeouts are this module's own (they need to know whether a request
        // is in progress); hyper's HTTP/1 header timer, which also runs between requests, is
        // left off.
        builder.http1().header_read_timeout(None);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(self.limits.http2_max_streams)
            .keep_alive_interval(self.limits.http2_keepalive)
            .keep_alive_timeout(HTTP2_KEEPALIVE_TIMEOUT);
        builder
    }
}

/// Resolves when `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// One accepted connection, before its TLS handshake.
struct Connection<S> {
    builder: auto::Builder<TokioExecutor>,
    service: S,
    limits: ConnectionLimits,
    stop: watch::Receiver<bool>,
    protocols: Protocols,
}

impl<S, B> Connection<S>
where
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    async fn run(self, tcp: TcpStream, tls: Option<Arc<Tls>>) {
        let http1 = self.protocols == Protocols::Http;
        let Some(tls) = tls else {
            return self.serve(tcp, http1).await;
        };
        let acceptor = tls.acceptor(self.protocols);
        let peer = tcp.peer_addr().ok();
        match tokio::time::timeout(self.limits.header_timeout, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => {
                let http1 = http1 && stream.get_ref().1.alpn_protocol() != Some(b"h2");
                self.serve(stream, http1).await;
            }
            Ok(Err(e)) => crate::tls::handshake_failed(&e, peer),
            Err(_) => {
                tracing::debug!("TLS handshake not done within the header timeout");
                metrics::counter!("aicp_connections_closed_total", "reason" => "tls_handshake_timeout")
                    .increment(1);
            }
        }
    }

    async fn serve<I>(self, io: I, http1: bool)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Self {
            builder,
            service,
            limits,
            mut stop,
            ..
        } = self;
        let activity = Arc::new(Activity::new(http1));
        let io = TokioIo::new(Observed {
            inner: io,
            activity: activity.clone(),
        });
        let tracked = activity.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let request_guard = tracked.begin();
            let service = service.clone();
            async move {
                let Ok(response) = service.oneshot(request).await;
                // The request stays in progress until its answer has been sent whole.
                Ok::<_, Infallible>(response.map(move |body| {
                    axum::body::Body::new(body.map_frame(move |frame| {
                        let _ = &request_guard;
                        frame
                    }))
                }))
            }
        });
        let connection = builder.serve_connection(io, service).into_owned();
        let mut connection = std::pin::pin!(connection);
        let mut closing = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!("connection ended: {e}");
                    }
                    return;
                }
                closed = activity.expired(limits) => {
                    tracing::debug!("closing a connection: {}", closed.reason());
                    metrics::counter!("aicp_connections_closed_total", "reason" => closed.reason())
                        .increment(1);
                    // Say goodbye (HTTP/2's GOAWAY) if the peer is listening, but do not wait.
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_millis(100), connection.as_mut()).await;
                    return;
                }
                () = stopped(&mut stop), if !closing => {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// What a connection is doing, as its timeouts need to know. Requests only write it down: the
/// connection's watcher ([`Activity::expired`]) reads it when it wakes, so that a request costs
/// no wake-up and no timer of its own.
struct Activity {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Requests whose answers are not sent yet.
    active: usize,
    idle_since: Instant,
    /// When the first byte of the next HTTP/1 request head arrived.
    head_since: Option<Instant>,
    /// Whether this connection may speak HTTP/1 (not once it has started HTTP/2).
    http1: bool,
    first_read: bool,
}

impl Activity {
    fn new(http1: bool) -> Self {
        Self {
            state: Mutex::new(State {
                active: 0,
                idle_since: Instant::now(),
                head_since: None,
                http1,
                first_read: true,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request has arrived; it is in progress until the guard drops.
    fn begin(self: &Arc<Self>) -> RequestGuard {
        let mut state = self.lock();
        state.active += 1;
        state.head_since = None;
        drop(state);
        RequestGuard(self.clone())
    }

    /// Bytes came from the peer.
    fn read(&self, data: &[u8]) {
        let mut state = self.lock();
        if std::mem::take(&mut state.first_read) && data.starts_with(b"PRI * HTTP/2.0") {
            state.http1 = false;
        }
        if state.http1 && state.active == 0 && state.head_since.is_none() {
            state.head_since = Some(Instant::now());
        }
    }

    /// Resolves when the connection has held its place too long without using it.
    ///
    /// It sleeps until the deadline the state gives, but never longer than the shorter
    /// timeout: a deadline that starts later (a head's first byte, the end of a request) is
    /// never earlier than that, so it is met exactly, without the request waking the watcher.
    async fn expired(&self, limits: ConnectionLimits) -> Closed {
        // At least a millisecond, so that a zero timeout cannot spin.
        let shorter_timeout = limits.header_timeout.min(limits.idle_timeout);
        let longest_sleep = shorter_timeout.max(Duration::from_millis(1));
        let sleep = tokio::time::sleep(Duration::ZERO);
        let mut sleep = std::pin::pin!(sleep);
        loop {
            let now = Instant::now();
            let deadline = {
                let state = self.lock();
                if state.active > 0 {
                    None
                } else if let Some(since) = state.head_since {
                    Some((since + limits.header_timeout, Closed::HeaderTimeout))
                } else {
                    Some((state.idle_since + limits.idle_timeout, Closed::IdleTimeout))
                }
            };
            let wake = match deadline {
                Some((at, closed)) if at <= now => return closed,
                Some((at, _)) => at.min(now + longest_sleep),
                None => now + longest_sleep,
            };
            sleep.as_mut().reset(wake);
            sleep.as_mut().await;
        }
    }
}

/// A request in progress on a connection.
struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.active -= 1;
        if state.active == 0 {
            state.idle_since = Instant::now();
        }
    }
}

/// A connection's stream, telling its [`Activity`] what it reads.
struct Observed<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Observed<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled
            && buf.filled().len() > before
        {
            self.activity.read(&buf.filled()[before..]);
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Observed<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            max_connections: 8,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            http2_max_streams: 8,
            http2_keepalive: Duration::from_secs(30),
        }
    }

    async fn expires_after(activity: &Activity) -> (Closed, Duration) {
        expires_within(activity, limits()).await
    }

    async fn expires_within(activity: &Activity, limits: ConnectionLimits) -> (Closed, Duration) {
        let start = Instant::now();
        let closed = activity.expired(limits).await;
        (closed, start.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_expires_after_the_idle_timeout() {
        let activity = Activity::new(true);
        let (closed, after) = expires_after(&activity).await;
        assert!(matches!(closed, Closed::IdleTimeout));
        assert_eq!(after, Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_half_sent_head_expires_after_the_header_timeout() {
        let activity = Activity::new(true);
        activity.read(b"POST /api/v1/ml/classify HTTP/1.1\r\nHost: x\r\n");
        let (closed, after) = expires_after(&activity).await;
        assert!(matches!(closed, Closed::HeaderTimeout));
        assert_eq!(after, Duration::from_secs(10));
    }

    /// The watcher sleeps toward the idle deadline, and a head that starts meanwhile does not
    /// wake it: its deadline is met all the same, to the tick.
    #[tokio::test(start_paused = true)]
    async fn a_head_that_starts_while_the_watcher_sleeps_expires_on_time() {
        let activity = Arc::new(Activity::new(true));
        let watcher = {
            let activity = activity.clone();
            tokio::spawn(async move { expires_after(&activity).await })
        };
        tokio::time::sleep(Duration::from_millis(25_300)).await;
        activity.read(b"GET / HTTP/1.1\r\n");
        let (closed, after) = watcher.await.unwrap();
        assert!(matches!(closed, Closed::HeaderTimeout));
        assert_eq!(after, Duration::from_millis(35_300));
    }

    /// The same when the idle timeout is the shorter one: a request that ends while the
    /// watcher sleeps starts an idle deadline that is met to the tick.
    #[tokio::test(start_paused = true)]
    async fn an_idle_timeout_shorter_than_the_header_timeout_is_met_on_time() {
        let limits = ConnectionLimits {
            header_timeout: Duration::from_secs(3600),
            idle_timeout: Duration::from_secs(5),
            ..limits()
        };
        let activity = Arc::new(Activity::new(true));
        let request = activity.begin();
        let watcher = {
            let activity = activity.clone();
            tokio::spawn(async move { expires_within(&activity, limits).await })
        };
        tokio::time::sleep(Duration::from_millis(12_700)).await;
        drop(request);
        let (closed, after) = watcher.await.unwrap();
        assert!(matches!(closed, Closed::IdleTimeout));
        assert_eq!(after, Duration::from_millis(17_700));
    }

    #[tokio::test(start_paused = true)]
    async fn http2_bytes_between_streams_are_not_a_head() {
        let activity = Activity::new(true);
        activity.read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        activity.read(b"ping frame");
        let (closed, _) = expires_after(&activity).await;
        assert!(matches!(closed, Closed::IdleTimeout));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_progress_never_expires_and_idleness_counts_from_its_answer() {
        let activity = Arc::new(Activity::new(true));
        activity.read(b"GET / HTTP/1.1\r\n");
        let request = activity.begin();
        let watcher = {
            let activity = activity.clone();
            tokio::spawn(async move { expires_after(&activity).await })
        };
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(!watcher.is_finished());
        drop(request);
        let (closed, after) = watcher.await.unwrap();
        assert!(matches!(closed, Closed::IdleTimeout));
        assert_eq!(after, Duration::from_secs(660));
    }
}
