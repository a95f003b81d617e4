//! A lean HTTP/1.1 client for the load generator: kept-alive connections straight on hyper,
//! pooled so that each request in flight has one of its own, and nothing else on the request
//! path (the client must cost far less than the server it measures).

use std::sync::Mutex;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{SendRequest, handshake};
use hyper::header::{HOST, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;

type Sender = SendRequest<Full<Bytes>>;

/// Connections to one server, reused request after request.
pub struct HttpPool {
    /// `host:port`, what to connect to and the Host header.
    authority: String,
    host: HeaderValue,
    /// The URL's path, without a trailing slash; request paths go after it.
    prefix: String,
    idle: Mutex<Vec<Sender>>,
}

impl HttpPool {
    /// A pool for `url` (`http://HOST:PORT[/PREFIX]`); connects on first use.
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let uri: Uri = url.parse().with_context(|| format!("{url} is not a URL"))?;
        if uri.scheme_str() != Some("http") {
            bail!("{url}: aicp bench speaks plain http:// (put TLS in front of it separately)");
        }
        let authority = uri.authority().context("the URL has no host")?;
        let authority = match authority.port_u16() {
            Some(_) => authority.to_string(),
            None => format!("{authority}:80"),
        };
        Ok(Self {
            host: HeaderValue::from_str(&authority)?,
            authority,
            prefix: uri.path().trim_end_matches('/').to_string(),
            idle: Mutex::new(Vec::new()),
        })
    }

    /// `host:port`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Sends one request on an idle connection (or a new one) and reads the whole answer.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), String> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut sender = match idle {
            Some(sender) => sender,
            None => self.connect().await?,
        };
        if sender.ready().await.is_err() {
            // The server closed it while it was idle: one fresh try.
            sender = self.connect().await?;
        }
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.prefix))
            .header(HOST, self.host.clone());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        if !sender.is_closed() {
            self.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(sender);
        }
        Ok((status, body))
    }

    /// A GET whose answer must be a success; its body.
    pub async fn get(&self, path: &str) -> Result<Bytes, String> {
        let (status, body) = self.send(Method::GET, path, &[], Bytes::new()).await?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(format!(
                "GET {path}: {status}: {}",
                String::from_utf8_lossy(&body)
            ))
        }
    }

    async fn connect(&self) -> Result<Sender, String> {
        let failed =
            |e: &dyn std::fmt::Display| format!("cannot connect to {}: {e}", self.authority);
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|e| failed(&e))?;
        stream.set_nodelay(true).map_err(|e| failed(&e))?;
        let (sender, connection) = handshake(TokioIo::new(stream))
            .await
            .map_err(|e| failed(&e))?;
        // Drives the connection until the sender is dropped or the server closes it.
        tokio::spawn(connection);
        Ok(sender)
    }
}
