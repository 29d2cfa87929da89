//! Operations that outlive a request and answers that stream.
//!
//! Anything that changes what runs (a deploy, a config change, a rollback, a scale, a
//! restart) runs in its own task, tracked so that a gateway shutting down waits for it:
//! a client that goes away does not cut a rollout in half. Streamed answers read from a
//! channel that such a task fills.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use empire_core::Error;
use empire_core::app::AppName;
use empire_core::progress::ProgressSink;
use empire_core::service::Platform;
use empire_core::user::User;
use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinHandle};

use super::ApiState;
use super::error::ApiError;

impl ApiState {
    /// Runs `operation` in its own task, tracked until it ends.
    pub fn spawn<T, F>(&self, operation: F) -> JoinHandle<Result<T, Error>>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, Error>> + Send + 'static,
    {
        self.tasks.spawn(operation)
    }

    /// Runs `operation` in its own tracked task and waits for it.
    pub async fn detached<T, F>(&self, operation: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, Error>> + Send + 'static,
    {
        joined(self.spawn(operation).await)
    }

    /// Runs an operation of `actor` on `app` in its own tracked task and waits for it;
    /// `operation` gets the platform, the actor and the app to own.
    pub async fn operate<T, F, Fut>(
        &self,
        actor: &User,
        app: &AppName,
        operation: F,
    ) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Platform>, User, AppName) -> Fut,
        Fut: Future<Output = Result<T, Error>> + Send + 'static,
    {
        self.detached(operation(self.platform.clone(), actor.clone(), app.clone()))
            .await
    }
}

/// The result of a task, a task that panicked or was aborted being an internal error.
pub fn joined<T>(result: Result<Result<T, Error>, JoinError>) -> Result<T, ApiError> {
    match result {
        Ok(result) => result.map_err(ApiError::from),
        Err(err) => Err(ApiError::from(Error::Store(format!(
            "the operation stopped unexpectedly: {err}"
        )))),
    }
}

/// A progress sink that hands each line to a channel (never blocks).
pub struct ChannelSink(pub mpsc::UnboundedSender<String>);

impl ProgressSink for ChannelSink {
    fn write_line(&self, line: &str) {
        let _ = self.0.send(line.to_string());
    }
}

/// A response body fed by a channel; it ends when every sender is gone. Sends fail once
/// the client has gone away, which tells the feeder to stop.
pub fn channel_body(capacity: usize) -> (mpsc::Sender<Bytes>, Body) {
    let (tx, rx) = mpsc::channel::<Bytes>(capacity);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(chunk), rx))
    });
    (tx, Body::from_stream(stream))
}
