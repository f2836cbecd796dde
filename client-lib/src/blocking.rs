//! A blocking client, for programs without an async runtime.
//!
//! [`Client`] wraps the async [`crate::Client`] and a current-thread tokio runtime of its own.
//! It behaves the same (cache, single-flight, retries, errors).
//!
//! # Panics
//!
//! Its methods must not be called from within an async runtime (inside an `async fn` or a
//! tokio task): they block the calling thread and panic there, as tokio cannot start a runtime
//! inside another. From async code, use [`crate::Client`]. Building or dropping one there is
//! harmless.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Runtime;

use crate::{Credentials, Error, Health};

/// Options for a blocking [`Client`]: the same as [`crate::ClientBuilder`]'s.
#[derive(Debug, Clone, Default)]
pub struct ClientBuilder {
    inner: crate::ClientBuilder,
}

impl ClientBuilder {
    /// See [`crate::ClientBuilder::socket_path`].
    pub fn socket_path(self, path: impl Into<PathBuf>) -> Self {
        ClientBuilder {
            inner: self.inner.socket_path(path),
        }
    }

    /// See [`crate::ClientBuilder::refresh_before`].
    pub fn refresh_before(self, margin: Duration) -> Self {
        ClientBuilder {
            inner: self.inner.refresh_before(margin),
        }
    }

    /// See [`crate::ClientBuilder::request_timeout`].
    pub fn request_timeout(self, timeout: Duration) -> Self {
        ClientBuilder {
            inner: self.inner.request_timeout(timeout),
        }
    }

    /// See [`crate::ClientBuilder::unavailable_retries`].
    pub fn unavailable_retries(self, retries: u32) -> Self {
        ClientBuilder {
            inner: self.inner.unavailable_retries(retries),
        }
    }

    /// See [`crate::ClientBuilder::retry_backoff`].
    pub fn retry_backoff(self, first: Duration) -> Self {
        ClientBuilder {
            inner: self.inner.retry_backoff(first),
        }
    }

    /// The client, with its own current-thread runtime.
    ///
    /// # Errors
    ///
    /// The I/O error if the runtime cannot be created (out of file descriptors or memory).
    pub fn build(self) -> io::Result<Client> {
        Client::from_async(self.inner.build())
    }
}

/// A blocking client of `ecs-credential-agent`. Cheap to clone: clones share one cache and
/// one runtime. `Send + Sync`: threads may call it concurrently.
#[derive(Debug, Clone)]
pub struct Client {
    inner: crate::Client,
    runtime: Arc<OwnedRuntime>,
}

/// The client's runtime, shut down without blocking when the last clone goes, so that dropping
/// a blocking client inside async code does not panic (tokio's `Drop for Runtime` would). It
/// runs no task of its own, so there is nothing to wait for.
#[derive(Debug)]
struct OwnedRuntime(Option<Runtime>);

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl Client {
    /// A client with default options (socket from [`crate::SOCKET_ENV`] or
    /// [`crate::DEFAULT_SOCKET_PATH`]).
    ///
    /// # Errors
    ///
    /// As [`ClientBuilder::build`].
    pub fn new() -> io::Result<Client> {
        ClientBuilder::default().build()
    }

    /// Options: socket path, refresh margin, timeout, retries.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Wraps an async client, adding a runtime to drive it.
    fn from_async(inner: crate::Client) -> io::Result<Client> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        Ok(Client {
            inner,
            runtime: Arc::new(OwnedRuntime(Some(runtime))),
        })
    }

    /// The socket this client talks to.
    pub fn socket_path(&self) -> &Path {
        self.inner.socket_path()
    }

    /// See [`crate::Client::credentials`]; blocks the calling thread.
    ///
    /// # Errors
    ///
    /// As [`crate::Client::credentials`].
    ///
    /// # Panics
    ///
    /// When called from within an async runtime.
    pub fn credentials(&self) -> Result<Credentials, Error> {
        self.block_on(self.inner.credentials())
    }

    /// See [`crate::Client::health`]; blocks the calling thread.
    ///
    /// # Errors
    ///
    /// As [`crate::Client::health`].
    ///
    /// # Panics
    ///
    /// When called from within an async runtime.
    pub fn health(&self) -> Result<Health, Error> {
        self.block_on(self.inner.health())
    }

    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        assert!(
            tokio::runtime::Handle::try_current().is_err(),
            "ecs_credential_client::blocking::Client called from within an async runtime; \
             use ecs_credential_client::Client there"
        );
        let runtime = self.runtime.0.as_ref().expect("runtime present until drop");
        runtime.block_on(future)
    }
}

#[cfg(test)]
impl Client {
    /// Wraps a test-configured async client.
    pub(crate) fn from_async_for_test(inner: crate::Client) -> Client {
        Client::from_async(inner).expect("runtime")
    }
}
