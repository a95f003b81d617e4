//! The server-wide cap on inference requests in flight, over HTTP and gRPC together. A request
//! takes its place once its body (its gRPC message) is whole ([`crate::upload`]) and keeps it
//! until its answer is ready; past the cap it is refused at once as overloaded, with a
//! `Retry-After`. Clients still uploading hold no place, so they cannot lock out requests that
//! are ready to run. Health, readiness and metadata routes are never shed.

use std::sync::Arc;

use aicp_core::{Error, ErrorKind};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The cap and the requests holding a place under it.
#[derive(Debug, Clone)]
pub struct InFlight {
    places: Arc<Semaphore>,
    limit: usize,
}

/// A request's place under the cap, held until its response is ready.
#[derive(Debug)]
pub struct Permit(#[allow(dead_code)] OwnedSemaphorePermit);

impl InFlight {
    pub fn new(limit: usize) -> Self {
        Self {
            places: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }

    /// A place for one more request, or the overloaded error when every place is taken.
    pub fn enter(&self) -> Result<Permit, Error> {
        self.places
            .clone()
            .try_acquire_owned()
            .map(Permit)
            .map_err(|_| {
                Error::new(
                    ErrorKind::Overloaded,
                    format!(
                        "the server is overloaded: {} requests are in flight (--max-in-flight); retry later",
                        self.limit
                    ),
                )
            })
    }
}
