//! The JSON shapes of resources, after Heroku's Platform API v3 as Empire served it:
//! string ids, RFC 3339 times, `created_at`/`updated_at` everywhere.

use empire_core::app::App;
use empire_core::domain::Domain;
use empire_core::formation::ProcessFormation;
use empire_core::release::Release;
use empire_core::scheduler::ProcessInstance;
use empire_core::service::NewToken;
use empire_core::user::{SshKey, User};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::range::{RangeKey, Ranged};

/// RFC 3339 text of a time.
pub fn timestamp(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

/// Where apps answer and where they are pushed to, for `web_url` and `git_url`.
#[derive(Debug, Clone)]
pub struct AppUrls {
    /// `http://{app}.localhost:8000/`; `{app}` is replaced.
    pub web_template: Option<String>,
    /// The host the client reached the API at (the SSH server listens there too).
    pub host: String,
    /// The SSH port.
    pub ssh_port: u16,
}

impl AppUrls {
    fn web_url(&self, app: &str) -> Option<String> {
        self.web_template.as_ref().map(|t| t.replace("{app}", app))
    }

    fn git_url(&self, app: &str) -> String {
        if self.ssh_port == 22 {
            format!("ssh://git@{}/{app}.git", self.host)
        } else {
            format!("ssh://git@{}:{}/{app}.git", self.host, self.ssh_port)
        }
    }
}

/// `{"name": …, "id": …}` of a user, as Heroku embeds one (`email` carries the name:
/// Empire knows users by name).
pub fn user_ref(name: &str) -> Value {
    json!({ "id": name, "name": name, "email": name })
}

/// An app.
pub fn app(app: &App, urls: &AppUrls) -> Value {
    let created = timestamp(app.created_at);
    json!({
        "id": app.id.to_string(),
        "name": app.name.as_str(),
        "created_at": created,
        "updated_at": created,
        "current_release": app.current_release,
        "web_url": urls.web_url(app.name.as_str()),
        "git_url": urls.git_url(app.name.as_str()),
        "maintenance": false,
    })
}

/// A release (never its config: that is `GET /apps/{app}/config-vars/{version}`).
pub fn release(release: &Release, current: Option<u32>) -> Value {
    let created = timestamp(release.created_at);
    json!({
        "id": release.version.to_string(),
        "version": release.version,
        "status": release.status.as_str(),
        "current": current == Some(release.version),
        "description": release.description,
        "image": release.image,
        "commit": release.commit,
        "failure": release.failure,
        "process_types": release.process_types,
        "slug": release.image_id.as_ref().map(|id| json!({ "id": id })),
        "user": user_ref(&release.user),
        "created_at": created,
        "updated_at": created,
    })
}

/// A running process.
pub fn dyno(process: &ProcessInstance, command: Option<&str>, size: Option<String>) -> Value {
    let started = process.started_at.map(timestamp);
    json!({
        "id": process.name,
        "name": process.name,
        "type": process.process,
        "state": process.state,
        "command": command,
        "size": size,
        "release": { "id": process.release.to_string(), "version": process.release },
        "attach_url": null,
        "created_at": started,
        "updated_at": started,
    })
}

/// A one-off process started detached.
pub fn detached_dyno(name: &str, id: &str, command: &str, release: Option<u32>) -> Value {
    let now = timestamp(OffsetDateTime::now_utc());
    json!({
        "id": id,
        "name": name,
        "type": "run",
        "state": "starting",
        "command": command,
        "size": null,
        "release": release.map(|v| json!({ "id": v.to_string(), "version": v })),
        "attach_url": null,
        "created_at": now,
        "updated_at": now,
    })
}

/// One process type's formation.
pub fn formation(entry: &ProcessFormation, command: Option<&str>) -> Value {
    json!({
        "id": entry.process,
        "type": entry.process,
        "quantity": entry.quantity,
        "size": entry.size.to_string(),
        "command": command,
    })
}

/// A custom domain.
pub fn domain(domain: &Domain) -> Value {
    let created = timestamp(domain.created_at);
    json!({
        "id": domain.hostname,
        "hostname": domain.hostname,
        "app": { "name": domain.app.as_str() },
        "created_at": created,
        "updated_at": created,
    })
}

/// An SSH key.
pub fn key(key: &SshKey) -> Value {
    let created = timestamp(key.created_at);
    let comment = key.public_key.split_whitespace().nth(2).unwrap_or_default();
    json!({
        "id": key.fingerprint,
        "fingerprint": key.fingerprint,
        "public_key": key.public_key,
        "comment": comment,
        "email": key.user,
        "user": user_ref(&key.user),
        "created_at": created,
        "updated_at": created,
    })
}

/// The authenticated user.
pub fn account(user: &User) -> Value {
    let created = timestamp(user.created_at);
    json!({
        "id": user.id.to_string(),
        "name": user.name,
        "email": user.name,
        "admin": user.admin,
        "created_at": created,
        "updated_at": created,
    })
}

/// A collaborator of an app.
pub fn collaborator(app: &str, user: &str) -> Value {
    json!({
        "id": user,
        "user": user_ref(user),
        "app": { "name": app },
    })
}

/// A new API token, in the shape of an OAuth authorization (its secret is shown once).
pub fn authorization(token: &NewToken) -> Value {
    let created = timestamp(token.token.created_at);
    json!({
        "id": token.token.id.to_string(),
        "description": token.token.description,
        "access_token": {
            "id": token.token.id.to_string(),
            "token": token.secret,
            "expires_in": null,
        },
        "scope": ["global"],
        "user": user_ref(&token.token.user),
        "created_at": created,
        "updated_at": created,
    })
}

impl Ranged for App {
    const FIELDS: &'static [&'static str] = &["name", "id"];
    fn range_key(&self, field: &str) -> RangeKey {
        match field {
            "id" => RangeKey::Num(u64::try_from(self.id).unwrap_or_default()),
            _ => RangeKey::Text(self.name.to_string()),
        }
    }
}

impl Ranged for Release {
    const FIELDS: &'static [&'static str] = &["version", "id"];
    fn range_key(&self, _field: &str) -> RangeKey {
        RangeKey::Num(u64::from(self.version))
    }
}

impl Ranged for ProcessInstance {
    const FIELDS: &'static [&'static str] = &["name", "id"];
    fn range_key(&self, _field: &str) -> RangeKey {
        RangeKey::Text(self.name.clone())
    }
}

impl Ranged for ProcessFormation {
    const FIELDS: &'static [&'static str] = &["type", "id"];
    fn range_key(&self, _field: &str) -> RangeKey {
        RangeKey::Text(self.process.clone())
    }
}

impl Ranged for Domain {
    const FIELDS: &'static [&'static str] = &["hostname", "id"];
    fn range_key(&self, _field: &str) -> RangeKey {
        RangeKey::Text(self.hostname.clone())
    }
}

impl Ranged for SshKey {
    const FIELDS: &'static [&'static str] = &["fingerprint", "id"];
    fn range_key(&self, _field: &str) -> RangeKey {
        RangeKey::Text(self.fingerprint.clone())
    }
}

impl Ranged for String {
    const FIELDS: &'static [&'static str] = &["user", "id"];
    fn range_key(&self, _field: &str) -> RangeKey {
        RangeKey::Text(self.clone())
    }
}
