//! `logs`: the app's CloudWatch Logs group, read with FilterLogEvents; `--follow` polls.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use empire_core::scheduler::{LogLine, LogOptions};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tracing::debug;

use super::Inner;
use super::error::{EcsError, call};
use super::ops::short_id;
use super::plan::log_group;

/// How many pages (of up to 10,000 events) the backlog reads at most.
const BACKLOG_PAGES: usize = 20;

/// One event, as read.
struct Event {
    id: String,
    stream: String,
    at_millis: i64,
    message: String,
}

/// The log stream prefix of a process type (`web` → `web/`), or of one task named as
/// `logs` names it (`run.1a2b3c4d` → `run/run/1a2b3c4d`).
fn stream_prefix(process: &str) -> String {
    match process.split_once('.') {
        Some((process, task)) if task.len() >= 8 && task.chars().all(|c| c.is_ascii_hexdigit()) => {
            format!("{process}/{process}/{task}")
        }
        Some((process, _)) => format!("{process}/"),
        _ => format!("{process}/"),
    }
}

/// `web/web/<task id>` → `web.<first 8 of the task id>`.
fn source_of(stream: &str) -> String {
    let mut parts = stream.split('/');
    let process = parts.next().unwrap_or(stream);
    match parts.next_back() {
        Some(task) if task != process => format!("{process}.{}", short_id(task)),
        _ => process.to_string(),
    }
}

fn line_of(event: &Event) -> LogLine {
    let time = OffsetDateTime::from_unix_timestamp_nanos(i128::from(event.at_millis) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    LogLine {
        time,
        source: source_of(&event.stream),
        text: event.message.trim_end_matches(['\n', '\r']).to_string(),
    }
}

impl Inner {
    /// Events of the group from `start` on, at most `pages` pages; an absent group has
    /// none.
    async fn events(
        &self,
        app: &str,
        prefix: Option<&str>,
        start: Option<i64>,
        pages: usize,
    ) -> Result<Vec<Event>, EcsError> {
        let group = log_group(app);
        let mut events = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..pages {
            let page = call("reading the log group", || {
                self.clients
                    .logs
                    .filter_log_events()
                    .log_group_name(&group)
                    .set_log_stream_name_prefix(prefix.map(str::to_string))
                    .set_start_time(start)
                    .set_next_token(token.clone())
                    .send()
            })
            .await;
            let page = match page {
                Ok(page) => page,
                Err(err) if err.code() == Some("ResourceNotFoundException") => return Ok(events),
                Err(err) => return Err(err),
            };
            for e in page.events() {
                events.push(Event {
                    id: e.event_id().unwrap_or_default().to_string(),
                    stream: e.log_stream_name().unwrap_or_default().to_string(),
                    at_millis: e.timestamp().unwrap_or(0),
                    message: e.message().unwrap_or_default().to_string(),
                });
            }
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        events.sort_by_key(|e| e.at_millis);
        Ok(events)
    }
}

/// Streams the app's log lines: the backlog (the last `tail` per instance), then, with
/// `follow`, new events every poll until the receiver is dropped.
pub(crate) async fn stream(
    inner: Arc<Inner>,
    app: &str,
    options: &LogOptions,
) -> Result<mpsc::Receiver<LogLine>, EcsError> {
    let prefix = options.process.as_deref().map(stream_prefix);
    let mut backlog = inner
        .events(app, prefix.as_deref(), None, BACKLOG_PAGES)
        .await?;
    if let Some(tail) = options.tail {
        let mut per_stream: BTreeMap<String, usize> = BTreeMap::new();
        for e in &backlog {
            *per_stream.entry(e.stream.clone()).or_default() += 1;
        }
        let mut skipped: BTreeMap<String, usize> = BTreeMap::new();
        backlog.retain(|e| {
            let total = per_stream[&e.stream];
            let seen = skipped.entry(e.stream.clone()).or_default();
            *seen += 1;
            *seen > total.saturating_sub(tail as usize)
        });
    }
    let (tx, rx) = mpsc::channel(256);
    let follow = options.follow;
    let app = app.to_string();
    tokio::spawn(async move {
        let mut last = backlog.last().map(|e| e.at_millis);
        let mut seen: HashSet<String> = backlog
            .iter()
            .filter(|e| Some(e.at_millis) == last)
            .map(|e| e.id.clone())
            .collect();
        for event in &backlog {
            if tx.send(line_of(event)).await.is_err() {
                return;
            }
        }
        if !follow {
            return;
        }
        let mut start = last.unwrap_or_else(|| OffsetDateTime::now_utc().unix_timestamp() * 1000);
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep(inner.log_poll) => {}
            }
            let events = match inner
                .events(&app, prefix.as_deref(), Some(start), BACKLOG_PAGES)
                .await
            {
                Ok(events) => events,
                Err(err) => {
                    debug!(error = %err, "polling the log group failed");
                    continue;
                }
            };
            for event in events {
                if Some(event.at_millis) == last && seen.contains(&event.id) {
                    continue;
                }
                if Some(event.at_millis) != last {
                    last = Some(event.at_millis);
                    seen.clear();
                }
                seen.insert(event.id.clone());
                start = event.at_millis;
                if tx.send(line_of(&event)).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sources_after_the_task() {
        assert_eq!(source_of("web/web/0123456789abcdef"), "web.01234567");
        assert_eq!(source_of("run/run/abc"), "run.abc");
        assert_eq!(source_of("odd"), "odd");
        assert_eq!(stream_prefix("web"), "web/");
        assert_eq!(stream_prefix("run.1a2b3c4d"), "run/run/1a2b3c4d");
        // `web.2` is an instance number, not a task: the process type's streams.
        assert_eq!(stream_prefix("web.2"), "web/");
    }
}
