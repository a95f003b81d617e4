//! Request bodies on their way in. A request joins a model's queue (and takes a place under the
//! in-flight cap, [`crate::shed`]) only once its body is whole, so clients still uploading never
//! hold a place that a ready request needs. Bodies being received are bounded instead by time
//! (a body must arrive within `--body-timeout-secs`) and by bytes: every byte received and not
//! yet handed on counts against one budget, `--upload-memory-bytes`, shared by HTTP and gRPC.
//! The budget counts bytes that arrived, never what a header announces, so a lying
//! `Content-Length` reserves nothing; slow uploaders contend only with each other, and the
//! memory they can hold stays bounded however they behave.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use aicp_core::{Error, ErrorKind};
use axum::body::{Body, Bytes};
use axum::extract::Request;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// The limits on bodies being received.
#[derive(Debug, Clone, Copy)]
pub struct UploadLimits {
    /// The largest body (one gRPC message) accepted.
    pub max_body_bytes: usize,
    /// Bytes of bodies being received, all requests together.
    pub memory_bytes: usize,
    /// How long a body (one gRPC message) may take to arrive, from its first byte.
    pub body_timeout: Duration,
    /// How long a gRPC stream may stay quiet between two messages.
    pub idle_timeout: Duration,
}

/// The budget of bytes being received, and the limits each body is held to.
#[derive(Debug, Clone)]
pub struct Uploads {
    budget: Arc<Semaphore>,
    limits: UploadLimits,
}

impl Uploads {
    pub fn new(limits: UploadLimits) -> Self {
        // The semaphore's ceiling is far above any machine's memory; clamp to it.
        let bytes = limits.memory_bytes.min(Semaphore::MAX_PERMITS);
        Self {
            budget: Arc::new(Semaphore::new(bytes)),
            limits,
        }
    }

    pub fn limits(&self) -> UploadLimits {
        self.limits
    }

    /// Adds `bytes` to what `held` counts, or the overloaded error when the budget is spent.
    fn reserve(&self, held: &mut Option<OwnedSemaphorePermit>, bytes: usize) -> Result<(), Error> {
        if bytes == 0 {
            return Ok(());
        }
        let permit = u32::try_from(bytes)
            .ok()
            .and_then(|n| self.budget.clone().try_acquire_many_owned(n).ok())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Overloaded,
                    format!(
                        "the server is receiving {} bytes of request bodies already \
                         (--upload-memory-bytes); retry later",
                        self.limits.memory_bytes
                    ),
                )
            })?;
        match held {
            Some(held) => held.merge(permit),
            None => *held = Some(permit),
        }
        Ok(())
    }

    fn too_large(&self, got: impl std::fmt::Display) -> Error {
        Error::new(
            ErrorKind::BodyTooLarge,
            format!(
                "the request body is larger than {} bytes (--max-body-bytes): {got}",
                self.limits.max_body_bytes
            ),
        )
    }

    /// Reads the whole body of `request` within the body timeout and the budget, and gives the
    /// request back with its body in memory.
    pub async fn read(&self, request: Request) -> Result<Request, Error> {
        let (parts, mut body) = request.into_parts();
        if body.is_end_stream() {
            return Ok(Request::from_parts(parts, body));
        }
        let declared = parts
            .headers
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(declared) = declared
            && declared > self.limits.max_body_bytes as u64
        {
            return Err(self.too_large(format_args!("Content-Length is {declared}")));
        }
        let deadline = Instant::now() + self.limits.body_timeout;
        let mut held = None;
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut received = 0usize;
        loop {
            let frame = tokio::time::timeout_at(deadline, body.frame())
                .await
                .map_err(|_| {
                    Error::new(
                        ErrorKind::RequestTimeout,
                        format!(
                            "the request body did not arrive within {} s (--body-timeout-secs): \
                             {received} bytes came",
                            self.limits.body_timeout.as_secs_f64()
                        ),
                    )
                })?;
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|e| {
                Error::new(
                    ErrorKind::MalformedBody,
                    format!("the request body could not be read: {e}"),
                )
            })?;
            let Ok(chunk) = frame.into_data() else {
                continue;
            };
            received += chunk.len();
            if received > self.limits.max_body_bytes {
                return Err(self.too_large(format_args!("{received} bytes came")));
            }
            self.reserve(&mut held, chunk.len())?;
            chunks.push(chunk);
        }
        let bytes = match chunks.len() {
            1 => chunks.pop().unwrap_or_default(),
            _ => chunks.concat().into(),
        };
        Ok(Request::from_parts(parts, Body::from(bytes)))
    }
}

/// A gRPC request body held to the upload limits as tonic reads it: each message counts
/// against the budget from its first byte until it is whole, and must be whole within the body
/// timeout. A unary call's whole body must arrive within the body timeout; a stream may stay
/// quiet between messages for the idle timeout. Past a limit, the body fails with the status
/// tonic answers the call with.
pub struct GrpcUpload<B> {
    inner: B,
    uploads: Uploads,
    /// The bytes of the message being received (header and payload so far).
    held: Option<OwnedSemaphorePermit>,
    framing: Framing,
    timer: Pin<Box<Sleep>>,
    /// A unary call: one deadline for the whole body.
    unary: bool,
}

/// Where the body is in gRPC's framing: a 5-byte prefix (compression flag, big-endian length),
/// then the message.
#[derive(Debug, Default)]
struct Framing {
    prefix: [u8; 5],
    prefix_seen: usize,
    payload_left: usize,
    /// Bytes of the message in progress so far, prefix included.
    seen: usize,
}

impl Framing {
    /// Follows `data` through the framing; returns how many messages it completed.
    fn advance(&mut self, mut data: &[u8]) -> usize {
        let mut completed = 0;
        while !data.is_empty() {
            let take = if self.prefix_seen < 5 {
                let take = (5 - self.prefix_seen).min(data.len());
                self.prefix[self.prefix_seen..self.prefix_seen + take]
                    .copy_from_slice(&data[..take]);
                self.prefix_seen += take;
                if self.prefix_seen == 5 {
                    let [_, length @ ..] = self.prefix;
                    self.payload_left = u32::from_be_bytes(length) as usize;
                }
                take
            } else {
                let take = self.payload_left.min(data.len());
                self.payload_left -= take;
                take
            };
            self.seen += take;
            data = &data[take..];
            if self.prefix_seen == 5 && self.payload_left == 0 {
                *self = Self::default();
                completed += 1;
            }
        }
        completed
    }

    fn mid_message(&self) -> bool {
        self.seen > 0
    }
}

impl<B> GrpcUpload<B> {
    /// The body of a call, held to the rules of a stream or of a unary call.
    pub fn new(inner: B, uploads: Uploads, streaming: bool) -> Self {
        let unary = !streaming;
        let limits = uploads.limits();
        let first = if unary {
            limits.body_timeout
        } else {
            limits.idle_timeout
        };
        Self {
            inner,
            uploads,
            held: None,
            framing: Framing::default(),
            timer: Box::pin(tokio::time::sleep(first)),
            unary,
        }
    }

    /// Counts a data frame: the budget, and the timer of the message it starts or ends.
    fn receive(&mut self, data: &[u8]) -> Result<(), tonic::Status> {
        let was_mid_message = self.framing.mid_message();
        let held = self.held.as_ref().map_or(0, |p| p.num_permits());
        let completed = self.framing.advance(data);
        let incomplete = self.framing.seen;
        if incomplete > held {
            self.uploads
                .reserve(&mut self.held, incomplete - held)
                .map_err(crate::error::grpc_status)?;
        } else if let Some(permit) = &mut self.held {
            // Whole messages go on to the decoder: their bytes leave the budget.
            drop(permit.split(held - incomplete));
        }
        if !self.unary {
            let limits = self.uploads.limits();
            let now = Instant::now();
            if !self.framing.mid_message() {
                self.timer.as_mut().reset(now + limits.idle_timeout);
            } else if !was_mid_message || completed > 0 {
                // A message began in this frame: it has the body timeout to arrive whole.
                self.timer.as_mut().reset(now + limits.body_timeout);
            }
        }
        Ok(())
    }

    fn timed_out(&self) -> tonic::Status {
        let limits = self.uploads.limits();
        let message = if self.unary || self.framing.mid_message() {
            format!(
                "the request message did not arrive within {} s (--body-timeout-secs)",
                limits.body_timeout.as_secs_f64()
            )
        } else {
            format!(
                "the stream sent no message for {} s (--idle-timeout-secs)",
                limits.idle_timeout.as_secs_f64()
            )
        };
        crate::error::grpc_status(Error::new(ErrorKind::RequestTimeout, message))
    }
}

impl<B> HttpBody for GrpcUpload<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && let Err(status) = this.receive(data)
                {
                    return Poll::Ready(Some(Err(status)));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                Poll::Ready(Some(Err(tonic::Status::from_error(e.into()))))
            }
            Poll::Ready(None) => {
                this.held = None;
                Poll::Ready(None)
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(this.timed_out()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(payload: usize) -> Vec<u8> {
        let mut bytes = vec![0u8];
        bytes.extend_from_slice(&(payload as u32).to_be_bytes());
        bytes.resize(5 + payload, 7);
        bytes
    }

    #[test]
    fn framing_counts_the_bytes_of_the_message_in_progress() {
        let mut framing = Framing::default();
        let two = [message(10), message(3)].concat();
        // Prefix split across frames, then the rest of the first message and part of the second.
        assert_eq!(framing.advance(&two[..2]), 0);
        assert_eq!(framing.seen, 2);
        assert_eq!(framing.advance(&two[2..9]), 0);
        assert_eq!(framing.seen, 9);
        assert_eq!(framing.advance(&two[9..17]), 1);
        assert_eq!(framing.seen, 2);
        assert!(framing.mid_message());
        assert_eq!(framing.advance(&two[17..]), 1);
        assert!(!framing.mid_message());
        // An empty message is whole with its prefix.
        assert_eq!(framing.advance(&message(0)), 1);
        assert_eq!(framing.seen, 0);
    }

    fn uploads(memory_bytes: usize) -> Uploads {
        Uploads::new(UploadLimits {
            max_body_bytes: 1 << 20,
            memory_bytes,
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
        })
    }

    #[tokio::test]
    async fn the_budget_counts_bytes_received_and_frees_them_with_the_message() {
        let uploads = uploads(100);
        let call = |uploads: &Uploads| {
            GrpcUpload::new(
                http_body_util::Empty::<Bytes>::new(),
                uploads.clone(),
                false,
            )
        };
        let whole = message(60);
        let mut body = call(&uploads);
        body.receive(&whole[..40]).unwrap();
        assert_eq!(uploads.budget.available_permits(), 60);
        // Another upload may take what is left, and no more; then this one cannot grow.
        let mut other = None;
        assert!(uploads.reserve(&mut other, 61).is_err());
        uploads.reserve(&mut other, 60).unwrap();
        let error = body.receive(&whole[40..50]).unwrap_err();
        assert_eq!(error.code(), tonic::Code::ResourceExhausted);
        drop((other, body));
        assert_eq!(uploads.budget.available_permits(), 100);
        // A message goes on to the decoder once whole, and its bytes leave the budget.
        let mut body = call(&uploads);
        body.receive(&whole[..40]).unwrap();
        body.receive(&whole[40..]).unwrap();
        assert_eq!(uploads.budget.available_permits(), 100);
    }

    #[tokio::test]
    async fn a_lying_content_length_reserves_nothing_and_a_stalled_body_times_out() {
        tokio::time::pause();
        let uploads = uploads(1000);
        let (sender, frames) =
            tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
        let body =
            http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(frames));
        sender
            .send(Ok(Frame::data(Bytes::from_static(b"12345"))))
            .await
            .unwrap();
        let request = Request::builder()
            .header("content-length", "900")
            .body(Body::new(body))
            .unwrap();
        let reading = tokio::spawn({
            let uploads = uploads.clone();
            async move { uploads.read(request).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(uploads.budget.available_permits(), 995);
        let error = reading.await.unwrap().unwrap_err();
        assert_eq!(error.kind, ErrorKind::RequestTimeout);
        assert!(error.message.contains("5 bytes came"), "{}", error.message);
        assert_eq!(uploads.budget.available_permits(), 1000);
        drop(sender);
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused_by_its_header_or_its_bytes() {
        let uploads = uploads(1 << 30);
        let declared = Request::builder()
            .header("content-length", (2 << 20).to_string())
            .body(Body::from("x"))
            .unwrap();
        assert_eq!(
            uploads.read(declared).await.unwrap_err().kind,
            ErrorKind::BodyTooLarge
        );
        let undeclared = Request::builder()
            .body(Body::from(vec![0u8; (1 << 20) + 1]))
            .unwrap();
        assert_eq!(
            uploads.read(undeclared).await.unwrap_err().kind,
            ErrorKind::BodyTooLarge
        );
        let fine = Request::builder().body(Body::from("[1, 2]")).unwrap();
        let fine = uploads.read(fine).await.unwrap();
        let bytes = fine.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"[1, 2]");
    }
}
