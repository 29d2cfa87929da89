//! What an outgoing webhook posts: the event as JSON, or a line a person can read
//! (`--format slack`: `{"text": "…"}`).

use serde_json::{Map, Value, json};

use empire_core::store::WebhookFormat;

/// The body of one delivery of `event` (an [`empire_core::event::Event`] as JSON).
///
/// JSON: `event` (the action), `delivery`, `id`, `app`, `release`, `user`, `message` and
/// `created_at`, then what the event's data says (`commit`, `source`, `timings`,
/// `description`, `step` and `output` of a failed deploy, `set`/`unset` config keys, …).
pub fn render(format: WebhookFormat, delivery: &str, event: &Value) -> Vec<u8> {
    let value = match format {
        WebhookFormat::Json => json_body(delivery, event),
        WebhookFormat::Slack => json!({ "text": slack_text(event) }),
    };
    serde_json::to_vec(&value).expect("a JSON value serializes")
}

fn json_body(delivery: &str, event: &Value) -> Value {
    let mut body = Map::new();
    body.insert("event".into(), event["action"].clone());
    body.insert("delivery".into(), Value::String(delivery.to_string()));
    for key in ["id", "app", "release", "user", "message", "created_at"] {
        body.insert(key.into(), event[key].clone());
    }
    if let Some(data) = event["data"].as_object() {
        for (key, value) in data {
            body.entry(key.clone()).or_insert_with(|| value.clone());
        }
    }
    Value::Object(body)
}

/// How many lines of a failed deploy's output a Slack message quotes.
const SLACK_OUTPUT_LINES: usize = 8;

/// One or a few lines saying what happened, for people reading a chat channel.
pub fn slack_text(event: &Value) -> String {
    let str_of = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let action = str_of(&event["action"]);
    let app = event["app"].as_str().unwrap_or("(no app)").to_string();
    let user = str_of(&event["user"]);
    let data = &event["data"];
    let version = event["release"]
        .as_u64()
        .map(|v| format!(" v{v}"))
        .unwrap_or_default();
    let commit = data["commit"]
        .as_str()
        .map(|c| format!(" ({})", &c[..c.len().min(7)]))
        .unwrap_or_default();
    let description = data["description"]
        .as_str()
        .map(|d| format!(": {d}"))
        .unwrap_or_default();
    let took = data["timings"]["duration_ms"]
        .as_u64()
        .map(|ms| format!(" in {:.1}s", ms as f64 / 1000.0))
        .unwrap_or_default();
    let keys = |name: &str| -> Vec<String> {
        data[name]
            .as_array()
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| k.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    match action.as_str() {
        "deploy.started" => format!("{user} is deploying {app}{version}{commit}{description}"),
        "deploy.succeeded" => {
            format!("{user} deployed {app}{version}{commit}{description}{took}")
        }
        "deploy.failed" => {
            let step = data["step"]
                .as_str()
                .map(|s| format!(" at \"{s}\""))
                .unwrap_or_default();
            let error = data["error"]
                .as_str()
                .map(|e| format!(": {e}"))
                .unwrap_or_default();
            let mut text = format!("{user}'s deploy of {app}{version}{commit} failed{step}{error}");
            let output: Vec<&str> = data["output"]
                .as_array()
                .map(|lines| lines.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if !output.is_empty() {
                let last = &output[output.len().saturating_sub(SLACK_OUTPUT_LINES)..];
                text.push_str("\n```\n");
                text.push_str(&last.join("\n"));
                text.push_str("\n```");
            }
            text
        }
        "release.created" => format!("{app}{version} released{commit}{description}"),
        "rollback" => {
            let to = data["rollback_to"]
                .as_u64()
                .map(|v| format!(" to v{v}"))
                .unwrap_or_default();
            format!("{user} rolled back {app}{to} (as{version})")
        }
        "config.changed" => {
            let (set, unset) = (keys("set"), keys("unset"));
            let mut parts = Vec::new();
            if !set.is_empty() {
                parts.push(format!("set {}", set.join(", ")));
            }
            if !unset.is_empty() {
                parts.push(format!("unset {}", unset.join(", ")));
            }
            let release = if version.is_empty() {
                String::new()
            } else {
                format!(" ({} released)", version.trim())
            };
            format!(
                "{user} changed the config of {app}: {}{release}",
                parts.join("; ")
            )
        }
        "scale" => {
            let formation: Vec<String> = data["formation"]
                .as_array()
                .map(|entries| {
                    entries
                        .iter()
                        .map(|e| {
                            format!(
                                "{}={}:{}",
                                str_of(&e["process"]),
                                e["quantity"],
                                str_of(&e["size"])
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            format!("{user} scaled {app}: {}", formation.join(" "))
        }
        "app.created" => format!("{user} created {app}"),
        "app.destroyed" => format!("{user} destroyed {app}"),
        _ => format!("[{app}] {} (by {user})", str_of(&event["message"])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(action: &str, release: Option<u32>, data: Value) -> Value {
        json!({
            "id": 7,
            "app": "web",
            "user": "alice",
            "action": action,
            "release": release,
            "message": "something happened",
            "data": data,
            "created_at": "2026-11-27T11:00:00Z",
        })
    }

    #[test]
    fn json_bodies_carry_the_event_and_its_data() {
        let e = event(
            "deploy.succeeded",
            Some(3),
            json!({"commit": "1a2b3c4d5e", "source": "push", "timings": {"duration_ms": 1500},
                   "app": "not this"}),
        );
        let body: Value = serde_json::from_slice(&render(WebhookFormat::Json, "d-1", &e)).unwrap();
        assert_eq!(body["event"], "deploy.succeeded");
        assert_eq!(body["delivery"], "d-1");
        assert_eq!(body["app"], "web", "the event's own fields win");
        assert_eq!(body["release"], 3);
        assert_eq!(body["user"], "alice");
        assert_eq!(body["commit"], "1a2b3c4d5e");
        assert_eq!(body["source"], "push");
        assert_eq!(body["timings"]["duration_ms"], 1500);
        assert_eq!(body["created_at"], "2026-11-27T11:00:00Z");
    }

    #[test]
    fn slack_text_is_for_people() {
        let text = |e: &Value| {
            let body: Value =
                serde_json::from_slice(&render(WebhookFormat::Slack, "d", e)).unwrap();
            assert_eq!(body.as_object().unwrap().len(), 1, "only text: {body}");
            body["text"].as_str().unwrap().to_string()
        };
        assert_eq!(
            text(&event(
                "deploy.succeeded",
                Some(3),
                json!({"commit": "1a2b3c4d5e", "description": "fix the login",
                       "timings": {"duration_ms": 12345}})
            )),
            "alice deployed web v3 (1a2b3c4): fix the login in 12.3s"
        );
        let failed = text(&event(
            "deploy.failed",
            Some(4),
            json!({"step": "Building image", "error": "build failed: exit 2",
                   "output": (0..20).map(|i| format!("line {i}")).collect::<Vec<_>>()}),
        ));
        assert!(
            failed.starts_with(
                "alice's deploy of web v4 failed at \"Building image\": build failed: exit 2\n```\nline 12\n"
            ),
            "{failed}"
        );
        assert!(failed.ends_with("line 19\n```"), "{failed}");
        assert_eq!(
            text(&event(
                "config.changed",
                Some(5),
                json!({"set": ["A", "B"], "unset": ["C"]})
            )),
            "alice changed the config of web: set A, B; unset C (v5 released)"
        );
        assert_eq!(
            text(&event(
                "scale",
                None,
                json!({"formation": [{"process": "web", "quantity": 2, "size": "1X"}]})
            )),
            "alice scaled web: web=2:1X"
        );
        assert_eq!(
            text(&event("rollback", Some(6), json!({"rollback_to": 2}))),
            "alice rolled back web to v2 (as v6)"
        );
        assert_eq!(
            text(&event("domain.added", None, json!({}))),
            "[web] something happened (by alice)"
        );
    }
}
