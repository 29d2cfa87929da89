//! Streaming the output of an app's containers: the last lines of each first, merged by
//! time, then (when following) new lines as they come, also from containers that start
//! later, until the receiver is dropped.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptions;
use empire_core::scheduler::{LogLine, LogOptions};
use futures_util::StreamExt;
use futures_util::future::join_all;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::debug;

use super::engine::{Engine, Managed, next_event};
use super::{Inner, lock};
use crate::error::DeployerError;

/// How many lines the channel holds before the reader must catch up.
const CHANNEL: usize = 256;
/// How often a follow looks for containers that started.
const DISCOVER_INTERVAL: Duration = Duration::from_secs(1);
/// How long reading the backlog of one container may take.
const BACKLOG_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts streaming the logs of `app`.
pub(super) async fn stream(
    inner: Arc<Inner>,
    app: &str,
    options: &LogOptions,
) -> Result<mpsc::Receiver<LogLine>, DeployerError> {
    let first = sources(&inner, app, options.process.as_deref()).await?;
    let (tx, rx) = mpsc::channel(CHANNEL);
    tokio::spawn(run(inner, app.to_string(), options.clone(), first, tx));
    Ok(rx)
}

/// The containers whose output `logs` shows: the processes of the current release and
/// the one-off processes, optionally of one process type.
async fn sources(
    inner: &Inner,
    app: &str,
    process: Option<&str>,
) -> Result<Vec<Managed>, DeployerError> {
    let containers = inner.engine.list(Some(app), None).await?;
    let active = lock(&inner.apps).get(app).map(|s| s.active.clone());
    let mut containers: Vec<Managed> = containers
        .into_iter()
        .filter(|c| {
            c.oneoff.is_some() || active.as_ref().is_none_or(|active| active.contains(&c.id))
        })
        .filter(|c| process.is_none_or(|p| p == c.process))
        .collect();
    containers.sort_by_key(|c| (c.process.clone(), c.instance, c.created));
    Ok(containers)
}

async fn run(
    inner: Arc<Inner>,
    app: String,
    options: LogOptions,
    first: Vec<Managed>,
    tx: mpsc::Sender<LogLine>,
) {
    let engine = &inner.engine;
    let tail = options
        .tail
        .map(|n| n.to_string())
        .unwrap_or_else(|| "all".into());
    let read_at = OffsetDateTime::now_utc();
    let backlogs = join_all(first.iter().map(|c| backlog(engine, c, &tail))).await;
    // When each container's backlog ended: following it goes on after that line (with
    // no backlog at all, from its first line, unless none was asked for).
    let mut known: HashMap<String, Option<OffsetDateTime>> = HashMap::new();
    let mut lines = Vec::new();
    for (c, backlog) in first.iter().zip(backlogs) {
        let end = backlog
            .last()
            .map(|l| l.time)
            .or((options.tail == Some(0)).then_some(read_at));
        known.insert(c.id.clone(), end);
        lines.extend(backlog);
    }
    // A stable sort keeps each container's own order for equal times.
    lines.sort_by_key(|l| l.time);
    for line in lines {
        if tx.send(line).await.is_err() {
            return;
        }
    }
    if !options.follow {
        return;
    }

    // Docker's `start` events of the app's containers find new ones at once.
    let mut events =
        Some(engine.container_events(engine.filters(Some(&app), None), &["start"], None));
    let mut discover = tokio::time::interval(DISCOVER_INTERVAL);
    discover.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut followers: JoinSet<(String, Option<OffsetDateTime>)> = JoinSet::new();
    let mut following: HashSet<String> = HashSet::new();
    for c in first {
        let after = known.get(&c.id).copied().flatten();
        following.insert(c.id.clone());
        followers.spawn(follow(engine.clone(), c, after, tx.clone()));
    }
    loop {
        tokio::select! {
            _ = tx.closed() => return,
            _ = discover.tick() => {}
            event = next_event(&mut events) => {
                if !matches!(event, Some(Ok(_))) {
                    // The periodic discovery carries on without events.
                    events = None;
                }
            }
            Some(done) = followers.join_next(), if !followers.is_empty() => {
                if let Ok((id, last)) = done {
                    following.remove(&id);
                    known.insert(id, last);
                }
                continue;
            }
        }
        let containers = match sources(&inner, &app, options.process.as_deref()).await {
            Ok(containers) => containers,
            Err(err) => {
                debug!(app, error = %err, "logs: listing containers failed");
                continue;
            }
        };
        for c in containers {
            if following.contains(&c.id) {
                continue;
            }
            let after = match known.get(&c.id) {
                // A container that started since: all of its output.
                None => None,
                // A container that runs again (restarted): what came after its last line.
                Some(last) if c.is_running() || c.state == "restarting" => *last,
                Some(_) => continue,
            };
            following.insert(c.id.clone());
            known.entry(c.id.clone()).or_insert(after);
            followers.spawn(follow(engine.clone(), c, after, tx.clone()));
        }
    }
}

fn logs_options(follow: bool, tail: &str, after: Option<OffsetDateTime>) -> LogsOptions {
    LogsOptions {
        follow,
        stdout: true,
        stderr: true,
        since: after
            .map(|t| i32::try_from(t.unix_timestamp()).unwrap_or(0))
            .unwrap_or(0),
        until: 0,
        timestamps: true,
        tail: tail.to_string(),
    }
}

/// The last `tail` lines of a container.
async fn backlog(engine: &Engine, c: &Managed, tail: &str) -> Vec<LogLine> {
    let source = c.label();
    let mut stream = engine
        .docker
        .logs(&c.id, Some(logs_options(false, tail, None)));
    let mut lines = Lines::default();
    let mut out = Vec::new();
    let read = async {
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => lines.push(&chunk, &source, &mut out),
                Err(err) => {
                    debug!(container = %c.id, error = %err, "logs: reading the backlog failed");
                    break;
                }
            }
        }
    };
    if tokio::time::timeout(BACKLOG_TIMEOUT, read).await.is_err() {
        debug!(container = %c.id, "logs: reading the backlog timed out");
    }
    lines.finish(&source, &mut out);
    out
}

/// Sends the lines a container writes after `after` until its output ends (it stopped)
/// or the receiver is gone. Returns the container and the time of its last line.
async fn follow(
    engine: Engine,
    c: Managed,
    after: Option<OffsetDateTime>,
    tx: mpsc::Sender<LogLine>,
) -> (String, Option<OffsetDateTime>) {
    let source = c.label();
    let mut stream = engine
        .docker
        .logs(&c.id, Some(logs_options(true, "all", after)));
    let mut lines = Lines::default();
    let mut last = after;
    let mut out = Vec::new();
    let mut ended = false;
    while !ended {
        match stream.next().await {
            Some(Ok(chunk)) => lines.push(&chunk, &source, &mut out),
            Some(Err(err)) => {
                debug!(container = %c.id, error = %err, "logs: following ended with an error");
                ended = true;
            }
            None => ended = true,
        }
        if ended {
            lines.finish(&source, &mut out);
        }
        for line in out.drain(..) {
            // `since` has whole seconds: skip what was sent already.
            if after.is_some_and(|a| line.time <= a) {
                continue;
            }
            last = Some(line.time);
            if tx.send(line).await.is_err() {
                return (c.id, last);
            }
        }
    }
    (c.id, last)
}

/// Splits a container's output (with Docker's timestamps) into lines, one buffer per
/// stream so stdout and stderr never mix within a line.
#[derive(Default)]
struct Lines {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Lines {
    fn push(&mut self, chunk: &LogOutput, source: &str, out: &mut Vec<LogLine>) {
        let buffer = match chunk {
            LogOutput::StdErr { .. } => &mut self.stderr,
            _ => &mut self.stdout,
        };
        buffer.extend_from_slice(chunk.as_ref());
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            out.push(parse_line(&line[..end], source));
        }
    }

    /// Emits what is left without a final newline.
    fn finish(&mut self, source: &str, out: &mut Vec<LogLine>) {
        for buffer in [&mut self.stdout, &mut self.stderr] {
            if !buffer.is_empty() {
                out.push(parse_line(buffer, source));
                buffer.clear();
            }
        }
    }
}

/// `2024-05-01T12:00:00.123456789Z text` → a line at that time.
fn parse_line(bytes: &[u8], source: &str) -> LogLine {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end_matches(['\r', '\n']);
    let (time, text) = match text.split_once(' ') {
        Some((stamp, rest)) => match OffsetDateTime::parse(stamp, &Rfc3339) {
            Ok(time) => (time, rest),
            Err(_) => (OffsetDateTime::now_utc(), text),
        },
        None => match OffsetDateTime::parse(text, &Rfc3339) {
            // An empty line: only the timestamp.
            Ok(time) => (time, ""),
            Err(_) => (OffsetDateTime::now_utc(), text),
        },
    };
    LogLine {
        time,
        source: source.to_string(),
        text: text.trim_end_matches('\r').to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn splits_timestamped_lines_per_stream() {
        let mut lines = Lines::default();
        let mut out = Vec::new();
        let stdout = |s: &'static str| LogOutput::StdOut {
            message: Bytes::from(s),
        };
        let stderr = |s: &'static str| LogOutput::StdErr {
            message: Bytes::from(s),
        };
        lines.push(
            &stdout("2024-05-01T12:00:00.123456789Z hello\n2024-05-01T12:00:01Z wor"),
            "web.1",
            &mut out,
        );
        lines.push(&stderr("2024-05-01T12:00:02Z oops\r\n"), "web.1", &mut out);
        lines.push(&stdout("ld\n2024-05-01T12:00:03Z\n"), "web.1", &mut out);
        lines.push(&stdout("2024-05-01T12:00:04Z tail"), "web.1", &mut out);
        lines.finish("web.1", &mut out);
        let texts: Vec<&str> = out.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["hello", "oops", "world", "", "tail"]);
        assert_eq!(out[0].time.nanosecond(), 123_456_789);
        assert_eq!(out[0].time.unix_timestamp(), 1_714_564_800);
        assert!(out.iter().all(|l| l.source == "web.1"));

        let odd = parse_line(b"no timestamp here", "run.1234");
        assert_eq!(odd.text, "no timestamp here");
    }
}
