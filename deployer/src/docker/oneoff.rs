//! One-off processes (`run`): a fresh container of a release's image and config,
//! either attached to the caller's streams until it exits, or detached.

use std::collections::HashSet;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::query_parameters::{
    AttachContainerOptions, ResizeContainerTTYOptions, WaitContainerOptions,
};
use empire_core::scheduler::{OneOffSpec, RunIo, RunOutcome};
use futures_util::StreamExt;
use tokio::io::{AsyncWriteExt, copy};
use tracing::{debug, warn};

use super::engine::{Engine, ONEOFF_PROCESS};
use super::{AbortOnDrop, Inner};
use crate::error::DeployerError;

/// How long the output of an exited one-off process may take to arrive in full.
const OUTPUT_GRACE: Duration = Duration::from_secs(5);

/// Removes a one-off container when dropped, unless [`RemoveOnDrop::finish`] removed it
/// already: an attached process never outlives its session, even when the caller stops
/// waiting for it.
struct RemoveOnDrop {
    engine: Engine,
    id: Option<String>,
}

impl RemoveOnDrop {
    async fn finish(mut self) {
        if let Some(id) = self.id.take() {
            self.engine.remove_now(&id).await;
        }
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else { return };
        let engine = self.engine.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            debug!(container = %id, "one-off session ended early; removing its container");
            handle.spawn(async move { engine.remove_now(&id).await });
        } else {
            warn!(container = %id, "cannot remove the one-off container: no runtime");
        }
    }
}

impl Inner {
    /// Runs a one-off process.
    pub(super) async fn run(
        &self,
        spec: &OneOffSpec,
        io: Option<RunIo>,
    ) -> Result<RunOutcome, DeployerError> {
        let engine = &self.engine;
        let n = self.oneoff_number(spec.app.as_str()).await?;
        let label = format!("{ONEOFF_PROCESS}.{n}");
        let launcher = engine.launcher(&spec.image).await;
        let Some(io) = io else {
            let id = engine.create_oneoff(spec, n, false, launcher).await?;
            if let Err(err) = engine.start(&id, &label).await {
                engine.remove_now(&id).await;
                return Err(err);
            }
            return Ok(RunOutcome::Detached { name: label, id });
        };

        let id = engine.create_oneoff(spec, n, true, launcher).await?;
        let guard = RemoveOnDrop {
            engine: engine.clone(),
            id: Some(id.clone()),
        };
        let code = self.attached(&id, &label, spec.tty, io).await;
        guard.finish().await;
        Ok(RunOutcome::Exited(code?))
    }

    /// A run number (`run.NNNN`) no other one-off process of the app has.
    async fn oneoff_number(&self, app: &str) -> Result<u32, DeployerError> {
        let used: HashSet<u32> = self
            .engine
            .list(Some(app), None)
            .await?
            .into_iter()
            .filter(|c| c.oneoff.is_some())
            .map(|c| c.instance)
            .collect();
        let mut n = rand::random_range(1000..=9999);
        for _ in 0..100 {
            if !used.contains(&n) {
                break;
            }
            n = rand::random_range(1000..=9999);
        }
        Ok(n)
    }

    /// Attaches to the created container, starts it, copies the streams until it exits
    /// and returns its exit code.
    async fn attached(
        &self,
        id: &str,
        label: &str,
        tty: bool,
        io: RunIo,
    ) -> Result<i32, DeployerError> {
        let docker = &self.engine.docker;
        let options = AttachContainerOptions {
            stream: true,
            stdin: true,
            stdout: true,
            stderr: true,
            logs: false,
            detach_keys: None,
        };
        let attach = docker
            .attach_container(id, Some(options))
            .await
            .map_err(|e| DeployerError::docker(format!("attaching to {label}"), e))?;
        self.engine.start(id, label).await?;

        let RunIo {
            input: mut user_input,
            output: mut user_output,
            resize,
        } = io;
        let mut container_input = attach.input;
        let mut container_output = attach.output;

        // What the user types goes to the process; the end of it closes its stdin. Not
        // on a terminal: the engine ends a TTY attach's output as soon as its input
        // closes, which would lose what the process writes after that; a terminal's
        // input stays open until the process exits.
        let _stdin = AbortOnDrop(tokio::spawn(async move {
            if let Err(err) = copy(&mut user_input, &mut container_input).await {
                debug!(error = %err, "one-off stdin ended with an error");
            }
            if tty {
                std::future::pending::<()>().await;
            }
            let _ = container_input.shutdown().await;
        }));
        let _resize = resize.filter(|_| tty).map(|mut sizes| {
            let docker = docker.clone();
            let id = id.to_string();
            AbortOnDrop(tokio::spawn(async move {
                while let Some((columns, rows)) = sizes.recv().await {
                    let options = ResizeContainerTTYOptions {
                        w: i32::from(columns),
                        h: i32::from(rows),
                    };
                    if let Err(err) = docker.resize_container_tty(&id, options).await {
                        debug!(container = %id, error = %err, "resizing the tty failed");
                    }
                }
            }))
        });

        let output = async {
            while let Some(chunk) = container_output.next().await {
                let bytes = match chunk {
                    Ok(
                        LogOutput::StdOut { message }
                        | LogOutput::StdErr { message }
                        | LogOutput::Console { message },
                    ) => message,
                    Ok(LogOutput::StdIn { .. }) => continue,
                    Err(err) => {
                        debug!(error = %err, "one-off output stream ended with an error");
                        break;
                    }
                };
                let written = async {
                    user_output.write_all(&bytes).await?;
                    user_output.flush().await
                };
                written.await.map_err(|source| DeployerError::Stream {
                    context: format!("writing the output of {label}"),
                    source,
                })?;
            }
            Ok::<(), DeployerError>(())
        };
        let exit = async {
            let options = WaitContainerOptions {
                condition: "not-running".into(),
            };
            match docker.wait_container(id, Some(options)).next().await {
                Some(Ok(response)) => Ok(response.status_code),
                Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => {
                    Ok(code)
                }
                Some(Err(err)) => Err(DeployerError::docker(format!("waiting for {label}"), err)),
                None => Err(DeployerError::Incomplete(format!(
                    "the docker engine did not say how {label} exited"
                ))),
            }
        };
        tokio::pin!(output, exit);
        let code = tokio::select! {
            code = &mut exit => {
                let code = code?;
                match tokio::time::timeout(OUTPUT_GRACE, &mut output).await {
                    Ok(copied) => copied?,
                    Err(_) => debug!(container = %id, "the output did not end after the exit"),
                }
                code
            }
            copied = &mut output => {
                copied?;
                exit.await?
            }
        };
        Ok(i32::try_from(code).unwrap_or(-1))
    }
}
