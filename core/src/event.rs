//! Events: who changed what, when, and which release it made.
//!
//! Every event is recorded in the store; the store also queues a delivery of it to every
//! outgoing webhook whose patterns match its action ([`pattern_matches`]), in the same
//! transaction, so a delivery is never lost between the two.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::app::AppName;
use crate::error::{Error, Result};
use crate::pipeline::{DeployRequest, DeploySource, PushOrigin};
use crate::progress::ProgressSink;
use crate::push_event::hmac_sha256_hex;

/// An app was created.
pub const APP_CREATED: &str = "app.created";
/// An app was destroyed.
pub const APP_DESTROYED: &str = "app.destroyed";
/// A deploy got its turn and recorded its release.
pub const DEPLOY_STARTED: &str = "deploy.started";
/// A deploy's release serves.
pub const DEPLOY_SUCCEEDED: &str = "deploy.succeeded";
/// A deploy failed (the running release was kept).
pub const DEPLOY_FAILED: &str = "deploy.failed";
/// A new release serves.
pub const RELEASE_CREATED: &str = "release.created";
/// An app was rolled back to an earlier release.
pub const ROLLBACK: &str = "rollback";
/// Config vars were set or unset (the event names the keys, never the values).
pub const CONFIG_CHANGED: &str = "config.changed";
/// Process types were scaled.
pub const SCALE: &str = "scale";

/// The events outgoing webhooks are told about, for help texts and validation.
pub const WEBHOOK_EVENTS: &[&str] = &[
    APP_CREATED,
    APP_DESTROYED,
    DEPLOY_STARTED,
    DEPLOY_SUCCEEDED,
    DEPLOY_FAILED,
    RELEASE_CREATED,
    ROLLBACK,
    CONFIG_CHANGED,
    SCALE,
];

/// A recorded change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Store id, increasing.
    pub id: i64,
    /// The app it concerns, if any.
    pub app: Option<AppName>,
    /// Who did it.
    pub user: String,
    /// What happened: `app.created`, `deploy.succeeded`, `config.changed`, `scale`, …
    pub action: String,
    /// The release it made, if any.
    pub release: Option<u32>,
    /// A one-line description a person can read (never config values).
    pub message: String,
    /// What else the event says, by name: `commit`, `source`, `timings`, `keys`, … (never
    /// config values).
    #[serde(default)]
    pub data: Map<String, Value>,
    /// When it happened.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// An event to record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewEvent {
    /// The app it concerns, if any.
    pub app: Option<AppName>,
    /// Who did it.
    pub user: String,
    /// What happened.
    pub action: String,
    /// The release it made, if any.
    pub release: Option<u32>,
    /// A one-line description.
    pub message: String,
    /// What else it says (see [`Event::data`]).
    pub data: Map<String, Value>,
}

impl NewEvent {
    /// An event of `app` with no release and no data.
    pub fn new(
        app: Option<&AppName>,
        user: impl Into<String>,
        action: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        NewEvent {
            app: app.cloned(),
            user: user.into(),
            action: action.into(),
            message: message.into(),
            ..NewEvent::default()
        }
    }

    /// The same event with `release`.
    pub fn with_release(mut self, release: Option<u32>) -> Self {
        self.release = release;
        self
    }

    /// The same event with `key` set to `value` in its data.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.data.insert(key.to_string(), value.into());
        self
    }
}

/// Whether an event `action` matches a webhook's `pattern`: `*` matches any run of
/// characters (dots included), everything else matches itself. `deploy.*` matches
/// `deploy.started` and `deploy.failed`; `*` matches everything.
pub fn pattern_matches(pattern: &str, action: &str) -> bool {
    let (p, a) = (pattern.as_bytes(), action.as_bytes());
    // Iterative glob with one backtrack point (the last `*`).
    let (mut pi, mut ai) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ai < a.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ai));
            pi += 1;
        } else if pi < p.len() && p[pi] == a[ai] {
            pi += 1;
            ai += 1;
        } else if let Some((sp, sa)) = star {
            pi = sp + 1;
            ai = sa + 1;
            star = Some((sp, sa + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

/// Whether any of `patterns` matches `action`.
pub fn any_pattern_matches(patterns: &[String], action: &str) -> bool {
    patterns.iter().any(|p| pattern_matches(p, action))
}

/// What started a deploy, as events name it: `push`, `webhook` or `api` (an image deploy,
/// a rollback or a config change, through the API or an SSH command).
#[allow(unreachable_patterns)]
pub fn source_name(source: &DeploySource) -> &'static str {
    match source {
        DeploySource::Push {
            origin: PushOrigin::Git,
            ..
        } => "push",
        DeploySource::Push {
            origin: PushOrigin::Webhook,
            ..
        } => "webhook",
        DeploySource::Image { .. }
        | DeploySource::Rollback { .. }
        | DeploySource::Config { .. } => "api",
    }
}

/// Refuses a deploy of code or an image that has no deploy message, for gateways run
/// with `--require-message`; rollbacks and config changes describe themselves.
pub fn check_message(request: &DeployRequest) -> Result<()> {
    let given = request
        .message
        .as_deref()
        .is_some_and(|m| !m.trim().is_empty());
    let hint = match &request.source {
        _ if given => return Ok(()),
        DeploySource::Rollback { .. } | DeploySource::Config { .. } => return Ok(()),
        DeploySource::Push {
            origin: PushOrigin::Git,
            ..
        } => "git push -o message=\"…\"",
        DeploySource::Push {
            origin: PushOrigin::Webhook,
            ..
        } => "the pushed commit's message",
        DeploySource::Image { .. } => "empire deploy -m \"…\" (Commit-Message header in the API)",
    };
    Err(Error::Forbidden(format!(
        "a deploy message is required: {hint}\nthis gateway runs with --require-message"
    )))
}

/// `X-Empire-Signature`: `sha256=` and the lowercase hex HMAC-SHA256 of `body` keyed with
/// `secret` (RFC 2104), as GitHub signs its webhooks, so receivers can reuse their check.
pub fn signature(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hmac_sha256_hex(secret, body))
}

/// How many lines of a failed deploy's output its `deploy.failed` event carries.
pub const FAILURE_TAIL_LINES: usize = 20;

/// A progress sink that keeps the title of the last step (`-----> Building image`) and
/// the last lines printed since it began, for a `deploy.failed` event to say where and
/// how a deploy failed.
#[derive(Debug, Default)]
pub struct OutputTail {
    inner: Mutex<TailState>,
}

#[derive(Debug, Default)]
struct TailState {
    step: Option<String>,
    lines: VecDeque<String>,
}

impl OutputTail {
    /// An empty tail.
    pub fn new() -> Self {
        OutputTail::default()
    }

    /// The title of the last step begun, if any.
    pub fn step(&self) -> Option<String> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .step
            .clone()
    }

    /// The last lines printed (at most [`FAILURE_TAIL_LINES`]), without their indent.
    pub fn lines(&self) -> Vec<String> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .lines
            .iter()
            .cloned()
            .collect()
    }
}

impl ProgressSink for OutputTail {
    fn write_line(&self, line: &str) {
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(title) = line.strip_prefix("-----> ") {
            state.step = Some(title.trim().to_string());
        }
        let text = line
            .strip_prefix("       ")
            .unwrap_or(line)
            .trim_end()
            .replace('\0', "\u{fffd}");
        if state.lines.len() == FAILURE_TAIL_LINES {
            state.lines.pop_front();
        }
        state.lines.push_back(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_event_names() {
        for (pattern, action) in [
            ("*", "deploy.started"),
            ("deploy.*", "deploy.started"),
            ("deploy.*", "deploy.failed"),
            ("*.created", "app.created"),
            ("*.created", "release.created"),
            ("scale", "scale"),
            ("d*y.s*d", "deploy.succeeded"),
            ("**", "rollback"),
        ] {
            assert!(pattern_matches(pattern, action), "{pattern} ~ {action}");
        }
        for (pattern, action) in [
            ("deploy.*", "release.created"),
            ("deploy.*", "deploy"),
            ("scale", "scaled"),
            ("app.created", "app.destroyed"),
            ("*.created", "app.created.x"),
            ("", "scale"),
        ] {
            assert!(!pattern_matches(pattern, action), "{pattern} !~ {action}");
        }
        let patterns = vec!["deploy.*".to_string(), "release.*".to_string()];
        assert!(any_pattern_matches(&patterns, "release.created"));
        assert!(!any_pattern_matches(&patterns, "scale"));
    }

    #[test]
    fn deploys_of_code_need_a_message_when_required() {
        let request = |source: DeploySource, message: Option<&str>| DeployRequest {
            app: AppName::new("web").unwrap(),
            user: "alice".into(),
            source,
            no_cache: false,
            message: message.map(str::to_string),
            turn: None,
        };
        let push = DeploySource::Push {
            repo_path: "/tmp/web.git".into(),
            object_dirs: vec![],
            commit: "1a2b3c".into(),
            reference: "refs/heads/main".into(),
            origin: PushOrigin::Git,
        };
        let err = check_message(&request(push.clone(), None)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "a deploy message is required: git push -o message=\"…\"\n\
             this gateway runs with --require-message"
        );
        assert!(check_message(&request(push.clone(), Some("  "))).is_err());
        check_message(&request(push, Some("why"))).unwrap();
        let image = DeploySource::Image {
            image: "acme/web:v2".into(),
        };
        let err = check_message(&request(image, None)).unwrap_err();
        assert!(err.to_string().contains("empire deploy -m"), "{err}");
        check_message(&request(DeploySource::Rollback { version: 2 }, None)).unwrap();
    }

    #[test]
    fn signatures_are_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_ne!(signature("a", b"body"), signature("b", b"body"));
    }

    #[test]
    fn the_tail_keeps_the_last_step_and_lines() {
        let tail = OutputTail::new();
        tail.write_line("-----> Building image");
        for i in 0..30 {
            tail.write_line(&format!("       line {i}"));
        }
        tail.write_line(" !     boom");
        assert_eq!(tail.step().as_deref(), Some("Building image"));
        let lines = tail.lines();
        assert_eq!(lines.len(), FAILURE_TAIL_LINES);
        assert_eq!(lines.last().unwrap(), " !     boom");
        assert_eq!(lines[0], "line 11");
    }

    #[test]
    fn events_are_built_with_data() {
        let app = AppName::new("web").unwrap();
        let event = NewEvent::new(Some(&app), "alice", CONFIG_CHANGED, "Set A config var")
            .with_release(Some(3))
            .with("keys", vec!["A"]);
        assert_eq!(event.release, Some(3));
        assert_eq!(event.data["keys"], serde_json::json!(["A"]));
    }
}
