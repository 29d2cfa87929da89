//! The JSON shapes of resources, after Heroku's Platform API v3 as Empire served it:
//! string ids, RFC 3339 times, `created_at`/`updated_at` everywhere.

use std::fmt;

use empire_core::app::App;
use empire_core::domain::Domain;
use empire_core::formation::ProcessFormation;
use empire_core::release::{ProcessTypes, Release};
use empire_core::scheduler::ProcessInstance;
use empire_core::service::NewToken;
use empire_core::user::{SshKey, User};
use serde::{Serialize, Serializer};
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

/// `{"name": …, "id": …}` of a user, as Heroku embeds one (`email` carries the name:
/// Empire knows users by name).
pub fn user_ref(name: &str) -> Value {
    json!({ "id": name, "name": name, "email": name })
}

/// About how many bytes one app's JSON takes, to size list buffers.
pub const APP_SIZE: usize = 360;
/// About how many bytes one release's JSON takes, to size list buffers.
pub const RELEASE_SIZE: usize = 480;

/// An app.
pub fn app(app: &App, urls: &AppUrls) -> Value {
    to_value(&AppResource::new(app, urls))
}

/// A release (never its config: that is `GET /apps/{app}/config-vars/{version}`).
pub fn release(release: &Release, current: Option<u32>) -> Value {
    to_value(&ReleaseResource::new(release, current))
}

/// A typed resource as a JSON value (for single-item answers).
fn to_value(resource: &impl Serialize) -> Value {
    serde_json::to_value(resource).unwrap_or(Value::Null)
}

/// An RFC 3339 time formatted once into a stack buffer (no allocation).
#[derive(Clone, Copy)]
pub struct Timestamp {
    buf: [u8; 48],
    len: usize,
}

impl Timestamp {
    /// Formats `at`; an unformattable time is the empty string, as [`timestamp`] gives.
    pub fn new(at: OffsetDateTime) -> Self {
        let mut buf = [0u8; 48];
        let mut cursor = std::io::Cursor::new(&mut buf[..]);
        // The cursor's position, not `format_into`'s count, is what was written.
        let len = match at.format_into(&mut cursor, &Rfc3339) {
            Ok(_) => usize::try_from(cursor.position()).unwrap_or_default(),
            Err(_) => 0,
        };
        Timestamp { buf, len }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A value serialized as the string of its `Display` text, written without allocating.
struct AsString<T>(T);

impl<T: fmt::Display> Serialize for AsString<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

/// `web_url`: the template with `{app}` replaced (as `str::replace` would).
struct WebUrl<'a> {
    template: &'a str,
    app: &'a str,
}

impl fmt::Display for WebUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = self.template.split("{app}");
        if let Some(first) = parts.next() {
            f.write_str(first)?;
        }
        for part in parts {
            f.write_str(self.app)?;
            f.write_str(part)?;
        }
        Ok(())
    }
}

/// `git_url`: `ssh://git@{host}[:{port}]/{app}.git`.
struct GitUrl<'a> {
    host: &'a str,
    port: u16,
    app: &'a str,
}

impl fmt::Display for GitUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port == 22 {
            write!(f, "ssh://git@{}/{}.git", self.host, self.app)
        } else {
            write!(f, "ssh://git@{}:{}/{}.git", self.host, self.port, self.app)
        }
    }
}

/// The JSON of an app, borrowed from it. Fields are in the order `serde_json::Value`
/// (a sorted map) writes them, so both paths give the same bytes.
#[derive(Serialize)]
pub struct AppResource<'a> {
    created_at: Timestamp,
    current_release: Option<u32>,
    git_url: AsString<GitUrl<'a>>,
    id: AsString<i64>,
    maintenance: bool,
    name: &'a str,
    updated_at: Timestamp,
    web_url: Option<AsString<WebUrl<'a>>>,
}

impl<'a> AppResource<'a> {
    /// The resource of `app`.
    pub fn new(app: &'a App, urls: &'a AppUrls) -> Self {
        let created = Timestamp::new(app.created_at);
        let name = app.name.as_str();
        AppResource {
            created_at: created,
            current_release: app.current_release,
            git_url: AsString(GitUrl {
                host: &urls.host,
                port: urls.ssh_port,
                app: name,
            }),
            id: AsString(app.id),
            maintenance: false,
            name,
            updated_at: created,
            web_url: urls.web_template.as_deref().map(|template| {
                AsString(WebUrl {
                    template,
                    app: name,
                })
            }),
        }
    }
}

/// `{"id": …}` of a slug (the image ID).
#[derive(Serialize)]
struct SlugRef<'a> {
    id: &'a str,
}

/// `{"email": …, "id": …, "name": …}` of a user, as [`user_ref`] gives.
#[derive(Serialize)]
struct UserRef<'a> {
    email: &'a str,
    id: &'a str,
    name: &'a str,
}

/// The JSON of a release, borrowed from it, fields in sorted order (see
/// [`AppResource`]).
#[derive(Serialize)]
pub struct ReleaseResource<'a> {
    commit: &'a Option<String>,
    created_at: Timestamp,
    current: bool,
    description: &'a str,
    failure: &'a Option<String>,
    id: AsString<u32>,
    image: &'a Option<String>,
    process_types: &'a ProcessTypes,
    slug: Option<SlugRef<'a>>,
    status: &'static str,
    updated_at: Timestamp,
    user: UserRef<'a>,
    version: u32,
}

impl<'a> ReleaseResource<'a> {
    /// The resource of `release`; `current` is the app's current version.
    pub fn new(release: &'a Release, current: Option<u32>) -> Self {
        let created = Timestamp::new(release.created_at);
        ReleaseResource {
            commit: &release.commit,
            created_at: created,
            current: current == Some(release.version),
            description: &release.description,
            failure: &release.failure,
            id: AsString(release.version),
            image: &release.image,
            process_types: &release.process_types,
            slug: release.image_id.as_deref().map(|id| SlugRef { id }),
            status: release.status.as_str(),
            updated_at: created,
            user: UserRef {
                email: &release.user,
                id: &release.user,
                name: &release.user,
            },
            version: release.version,
        }
    }
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use empire_core::app::AppName;
    use empire_core::release::{ProcessTypes, ReleaseStatus};
    use time::UtcOffset;

    use super::super::{json_array, write_json};
    use super::*;

    /// The `json!` rendering of an app as it was before the typed resources.
    fn old_app(app: &App, urls: &AppUrls) -> Value {
        let created = timestamp(app.created_at);
        let name = app.name.as_str();
        let git_url = if urls.ssh_port == 22 {
            format!("ssh://git@{}/{name}.git", urls.host)
        } else {
            format!("ssh://git@{}:{}/{name}.git", urls.host, urls.ssh_port)
        };
        json!({
            "id": app.id.to_string(),
            "name": name,
            "created_at": created,
            "updated_at": created,
            "current_release": app.current_release,
            "web_url": urls.web_template.as_ref().map(|t| t.replace("{app}", name)),
            "git_url": git_url,
            "maintenance": false,
        })
    }

    /// The `json!` rendering of a release as it was before the typed resources.
    fn old_release(release: &Release, current: Option<u32>) -> Value {
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

    fn at(nanos: i128) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap()
    }

    fn apps(n: usize) -> Vec<App> {
        (0..n)
            .map(|i| App {
                id: i as i64 * 7919 - 3,
                name: AppName::new(&format!("app-{i:04}")).unwrap(),
                current_release: (i % 3 != 0).then_some(i as u32),
                created_at: at(1_795_000_000_123_456_789 + i as i128 * 1_000_000_007),
            })
            .collect()
    }

    fn url_variants() -> Vec<AppUrls> {
        vec![
            AppUrls {
                web_template: Some("http://{app}.localhost:8000/".into()),
                host: "localhost".into(),
                ssh_port: 2222,
            },
            AppUrls {
                web_template: None,
                host: "git.example.com".into(),
                ssh_port: 22,
            },
            AppUrls {
                web_template: Some("https://x/{app}/{app}?q=\"{a}\"".into()),
                host: "h\"\\ost".into(),
                ssh_port: 22,
            },
            AppUrls {
                web_template: Some("no placeholder".into()),
                host: "[::1]".into(),
                ssh_port: 1,
            },
        ]
    }

    fn releases() -> Vec<Release> {
        let statuses = [
            ReleaseStatus::Pending,
            ReleaseStatus::Building,
            ReleaseStatus::Deploying,
            ReleaseStatus::Succeeded,
            ReleaseStatus::Failed,
        ];
        (1..=10u32)
            .map(|v| {
                let mut process_types = ProcessTypes::new();
                if v % 2 == 0 {
                    process_types.insert("web".into(), "httpd -f -p $PORT".into());
                    process_types.insert("worker".into(), String::new());
                    process_types.insert("z\"q".into(), "echo \"\\n\u{1}é".into());
                }
                let offset = UtcOffset::from_hms(5, 30, 0).unwrap();
                Release {
                    app: AppName::new("demo").unwrap(),
                    version: v,
                    status: statuses[v as usize % statuses.len()],
                    image: (v % 3 != 0).then(|| format!("localhost:5000/demo@sha256:{v:064}")),
                    image_id: (v % 2 == 0).then(|| format!("sha256:{v:064}")),
                    process_types,
                    procfile: Some("web: x".into()),
                    config: [("SECRET".to_string(), "hidden".to_string())].into(),
                    commit: (v % 4 != 0).then(|| format!("{v:040x}")),
                    user: if v % 2 == 0 { "alice" } else { "b\"ob\t" }.into(),
                    description: format!("Deploy v{v} — \"quoted\"\n"),
                    failure: (v % 5 == 0).then(|| "health check failed: 503".into()),
                    created_at: at(1_795_000_000_000_000_000 + i128::from(v) * 1_500_000_000)
                        .to_offset(offset),
                }
            })
            .collect()
    }

    #[test]
    fn typed_apps_answer_the_same_json_as_before() {
        let apps = apps(50);
        for urls in url_variants() {
            for app in &apps {
                assert_eq!(super::app(app, &urls), old_app(app, &urls));
            }
            let bytes = json_array(&apps, APP_SIZE, |out, app| {
                write_json(out, &AppResource::new(app, &urls))
            })
            .unwrap();
            let old = Value::Array(apps.iter().map(|a| old_app(a, &urls)).collect());
            let new: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(new, old);
            // Same bytes too: fields come out in the order the sorted map wrote them.
            assert_eq!(String::from_utf8(bytes).unwrap(), old.to_string());
        }
    }

    #[test]
    fn typed_releases_answer_the_same_json_as_before() {
        let releases = releases();
        for current in [None, Some(1), Some(4), Some(99)] {
            for release in &releases {
                assert_eq!(
                    super::release(release, current),
                    old_release(release, current)
                );
            }
            let bytes = json_array(&releases, RELEASE_SIZE, |out, r| {
                write_json(out, &ReleaseResource::new(r, current))
            })
            .unwrap();
            let old = Value::Array(releases.iter().map(|r| old_release(r, current)).collect());
            let new: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(new, old);
            assert_eq!(String::from_utf8(bytes).unwrap(), old.to_string());
            assert!(!new.to_string().contains("SECRET"), "config leaked");
        }
    }

    #[test]
    fn timestamps_match_the_allocating_formatter() {
        for nanos in [0, 1, 1_795_000_000_123_456_789, -1_000_000_000_500] {
            let t = at(nanos);
            assert_eq!(Timestamp::new(t).as_str(), timestamp(t));
            let t = t.to_offset(UtcOffset::from_hms(-9, -30, 0).unwrap());
            assert_eq!(Timestamp::new(t).as_str(), timestamp(t));
        }
        // Out of RFC 3339's range: both give the empty string.
        let far = OffsetDateTime::new_utc(
            time::Date::from_calendar_date(-5, time::Month::January, 1).unwrap(),
            time::Time::MIDNIGHT,
        );
        assert_eq!(timestamp(far), "");
        assert_eq!(Timestamp::new(far).as_str(), "");
    }

    /// Not an assertion on time: prints what serializing 1,000 apps costs each way
    /// (`cargo test -p empire --release -- --nocapture serialization_cost`).
    #[test]
    fn serialization_cost_of_a_thousand_apps() {
        let apps = apps(1000);
        let urls = &url_variants()[0];
        let rounds = 20;
        let started = Instant::now();
        let mut old_len = 0;
        for _ in 0..rounds {
            let body = Value::Array(apps.iter().map(|a| old_app(a, urls)).collect());
            old_len = serde_json::to_vec(&body).unwrap().len();
        }
        let old = started.elapsed() / rounds;
        let started = Instant::now();
        let mut new_len = 0;
        for _ in 0..rounds {
            let bytes = json_array(&apps, APP_SIZE, |out, app| {
                write_json(out, &AppResource::new(app, urls))
            })
            .unwrap();
            new_len = bytes.len();
        }
        let new = started.elapsed() / rounds;
        assert_eq!(old_len, new_len);
        println!(
            "1,000 apps ({new_len} bytes, {} per app): json! Value tree {old:?}, typed into one buffer {new:?}",
            new_len / 1000
        );
    }
}
