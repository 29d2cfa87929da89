//! Push events from hosted git servers (GitHub, GitLab, Gitea): checking that a webhook
//! came from the server (its signature, in constant time), reading the few fields a
//! deploy needs, and the secrets and deploy keys a connection is made with.
//!
//! Pure code: no I/O. The HTTP face reads the body and headers, the service layer decides
//! what to do with the event.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};
use crate::store::DeployKey;

/// Webhook request headers, names in lowercase.
pub type HookHeaders = BTreeMap<String, String>;

/// The git hosts whose push webhooks Empire understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    /// GitHub (`X-Hub-Signature-256`, events `push` and `ping`).
    GitHub,
    /// GitLab (`X-Gitlab-Token`, event `Push Hook`).
    GitLab,
    /// Gitea and Forgejo (`X-Gitea-Signature`, event `push`).
    Gitea,
}

impl Provider {
    /// Every provider, in the order they are listed to users.
    pub const ALL: [Provider; 3] = [Provider::GitHub, Provider::GitLab, Provider::Gitea];

    /// The lowercase name used in webhook URLs and build records.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::GitHub => "github",
            Provider::GitLab => "gitlab",
            Provider::Gitea => "gitea",
        }
    }

    /// The name people know it by.
    pub fn title(self) -> &'static str {
        match self {
            Provider::GitHub => "GitHub",
            Provider::GitLab => "GitLab",
            Provider::Gitea => "Gitea",
        }
    }

    /// Checks the request's signature with the connection's secret, in constant time.
    /// Fails with [`Error::Unauthorized`] saying what was wrong (never the expected value).
    pub fn verify(self, secret: &str, headers: &HookHeaders, body: &[u8]) -> Result<()> {
        let header = match self {
            Provider::GitHub => "x-hub-signature-256",
            Provider::GitLab => "x-gitlab-token",
            Provider::Gitea => "x-gitea-signature",
        };
        let Some(given) = headers.get(header).map(|v| v.trim()) else {
            return Err(Error::Unauthorized(format!(
                "the request has no {} header",
                header_title(header)
            )));
        };
        let valid = match self {
            Provider::GitHub => given
                .strip_prefix("sha256=")
                .is_some_and(|hex| hmac_matches(secret, body, hex)),
            Provider::Gitea => hmac_matches(secret, body, given.trim_start_matches("sha256=")),
            Provider::GitLab => bool::from(given.as_bytes().ct_eq(secret.as_bytes())),
        };
        if valid {
            Ok(())
        } else {
            Err(Error::Unauthorized(format!(
                "the {} header does not match the app's webhook secret",
                header_title(header)
            )))
        }
    }

    /// The delivery ID the sender gave the request, if any.
    pub fn delivery_id(self, headers: &HookHeaders) -> Option<String> {
        let names: &[&str] = match self {
            Provider::GitHub => &["x-github-delivery"],
            Provider::GitLab => &[
                "x-gitlab-event-uuid",
                "x-gitlab-webhook-uuid",
                "idempotency-key",
            ],
            Provider::Gitea => &["x-gitea-delivery", "x-gogs-delivery"],
        };
        names
            .iter()
            .filter_map(|name| headers.get(*name))
            .map(|v| v.trim())
            .find(|v| !v.is_empty())
            .map(str::to_string)
    }

    /// Reads a (signature-checked) webhook request.
    pub fn parse(self, headers: &HookHeaders, body: &[u8]) -> Result<Hook> {
        let event = match self {
            Provider::GitHub => headers.get("x-github-event"),
            Provider::GitLab => headers.get("x-gitlab-event"),
            Provider::Gitea => headers
                .get("x-gitea-event")
                .or_else(|| headers.get("x-gogs-event")),
        }
        .map(|v| v.trim().to_string())
        .unwrap_or_default();
        let is_push = match self {
            Provider::GitHub | Provider::Gitea => event == "push",
            Provider::GitLab => event == "Push Hook",
        };
        if self == Provider::GitHub && event == "ping" {
            return Ok(Hook::Ping);
        }
        if !is_push {
            return Ok(Hook::Other(if event.is_empty() {
                "(none)".to_string()
            } else {
                event
            }));
        }
        let payload: Payload = serde_json::from_slice(body)
            .map_err(|e| Error::invalid("payload", format!("not a {} push: {e}", self.title())))?;
        let after = match self {
            // GitLab's `after` is the new tip; `checkout_sha` is null on a deletion.
            Provider::GitLab => payload
                .checkout_sha
                .clone()
                .unwrap_or(payload.after.clone()),
            _ => payload.after.clone(),
        };
        let deleted = payload.deleted || is_zero(&payload.after) || after.is_empty();
        let message = payload
            .head_commit
            .as_ref()
            .and_then(|c| c.message.clone())
            .or_else(|| {
                // GitLab has no head_commit: the commit whose id is the new tip.
                payload
                    .commits
                    .iter()
                    .find(|c| c.id.as_deref() == Some(after.as_str()))
                    .or(payload.commits.last())
                    .and_then(|c| c.message.clone())
            })
            .unwrap_or_default();
        let pusher = match self {
            Provider::GitHub => payload.pusher.as_ref().and_then(|p| p.name.clone()),
            Provider::GitLab => payload.user_username.clone().or(payload.user_name.clone()),
            Provider::Gitea => payload
                .pusher
                .as_ref()
                .and_then(|p| p.login.clone().or(p.username.clone()).or(p.name.clone())),
        }
        .or_else(|| payload.sender.as_ref().and_then(|s| s.login.clone()))
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_else(|| format!("{} webhook", self.as_str()));
        if payload.reference.is_empty() {
            return Err(Error::invalid("payload", "the push names no ref"));
        }
        if !deleted && !is_commit_id(&after) {
            return Err(Error::invalid(
                "payload",
                format!("{after:?} is not a commit id"),
            ));
        }
        Ok(Hook::Push(PushEvent {
            reference: payload.reference,
            before: payload.before,
            after: if deleted { String::new() } else { after },
            deleted,
            message,
            pusher,
        }))
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Provider {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "github" => Ok(Provider::GitHub),
            "gitlab" => Ok(Provider::GitLab),
            "gitea" => Ok(Provider::Gitea),
            other => Err(Error::not_found("webhook provider", other)),
        }
    }
}

/// `x-hub-signature-256` → `X-Hub-Signature-256`.
fn header_title(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// Whether `hex` is the HMAC-SHA256 of `body` under `secret` (compared in constant time).
fn hmac_matches(secret: &str, body: &[u8], hex: &str) -> bool {
    let Ok(tag) = hex::decode(hex.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&tag).is_ok()
}

/// The lowercase hex HMAC-SHA256 of `body` under `secret` (what GitHub sends after
/// `sha256=`, and Gitea as it is).
pub fn hmac_sha256_hex(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn is_zero(sha: &str) -> bool {
    !sha.is_empty() && sha.bytes().all(|b| b == b'0')
}

fn is_commit_id(sha: &str) -> bool {
    (sha.len() == 40 || sha.len() == 64) && sha.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What a webhook request was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hook {
    /// GitHub's test delivery when a hook is added.
    Ping,
    /// A push.
    Push(PushEvent),
    /// Another event (named), which deploys nothing.
    Other(String),
}

/// The fields of a push a deploy needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushEvent {
    /// The pushed ref (`refs/heads/main`, `refs/tags/v1`).
    pub reference: String,
    /// The ref's commit before the push.
    pub before: String,
    /// The ref's commit after the push (empty when it was deleted).
    pub after: String,
    /// Whether the push deleted the ref.
    pub deleted: bool,
    /// The head commit's message.
    pub message: String,
    /// Who pushed (the login when the host gives one).
    pub pusher: String,
}

impl PushEvent {
    /// The branch pushed to, when the ref is a branch.
    pub fn branch(&self) -> Option<&str> {
        self.reference.strip_prefix("refs/heads/")
    }

    /// Why this push deploys nothing on a connection to `branch`, or `None` when it
    /// deploys.
    pub fn ignored_on(&self, branch: &str) -> Option<String> {
        if self.reference.starts_with("refs/tags/") {
            return Some(format!(
                "{} is a tag; only pushes to {branch} deploy",
                self.reference
            ));
        }
        match self.branch() {
            None => Some(format!(
                "{} is not a branch; only pushes to {branch} deploy",
                self.reference
            )),
            Some(pushed) if pushed != branch => Some(format!(
                "the push is to {pushed}; only pushes to {branch} deploy"
            )),
            Some(pushed) if self.deleted => {
                Some(format!("the push deleted {pushed}; nothing to deploy"))
            }
            Some(_) => None,
        }
    }
}

/// The union of the three providers' push payloads, as far as it is read.
#[derive(Debug, Deserialize)]
struct Payload {
    #[serde(rename = "ref", default)]
    reference: String,
    #[serde(default)]
    before: String,
    #[serde(default)]
    after: String,
    #[serde(default)]
    checkout_sha: Option<String>,
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    head_commit: Option<Commit>,
    #[serde(default)]
    commits: Vec<Commit>,
    #[serde(default)]
    pusher: Option<Person>,
    #[serde(default)]
    sender: Option<Person>,
    #[serde(default)]
    user_username: Option<String>,
    #[serde(default)]
    user_name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Commit {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Person {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    login: Option<String>,
    #[serde(default)]
    username: Option<String>,
}

// ----- connections ---------------------------------------------------------------------

/// A new webhook secret: 32 random bytes in hex.
pub fn new_secret() -> String {
    hex::encode(random_32())
}

fn random_32() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    // A v4 UUID fixes 6 bits; hash the two together so every bit is random.
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// How a repository URL is fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoTransport {
    /// `ssh://…` or `git@host:path`: with a deploy key.
    Ssh,
    /// `https://…`: with the configured token, if any.
    Https,
    /// `http://…` or `git://…`: anonymous (a server on a trusted network).
    Plain,
}

/// Checks a clone URL and tells how it is fetched. Local paths, `file://` and `ext::`
/// URLs are refused: a webhook may only make the gateway fetch from a git host.
pub fn repo_transport(url: &str) -> Result<RepoTransport> {
    let url = url.trim();
    let bad = |why: &str| Error::invalid("repository URL", format!("{url:?} {why}"));
    if url.is_empty() {
        return Err(bad("is empty"));
    }
    if url.starts_with('-') || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("is not a URL"));
    }
    let transport = if let Some(rest) = url.strip_prefix("https://") {
        (rest, RepoTransport::Https)
    } else if let Some(rest) = url.strip_prefix("ssh://") {
        (rest, RepoTransport::Ssh)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (rest, RepoTransport::Plain)
    } else if let Some(rest) = url.strip_prefix("git://") {
        (rest, RepoTransport::Plain)
    } else if !url.contains("://")
        && let Some((host, path)) = url.split_once(':')
        && host.contains('@')
        && !path.is_empty()
        && !host.contains('/')
    {
        // scp-like: git@github.com:acme/shop.git
        (url, RepoTransport::Ssh)
    } else {
        return Err(bad(
            "is not a clone URL git can fetch from a host: use https://, ssh://, git@host:path, http:// or git://",
        ));
    };
    let (rest, transport) = transport;
    let host = rest.split(['/', ':']).next().unwrap_or_default();
    if host.is_empty() || host.ends_with('@') {
        return Err(bad("names no host"));
    }
    Ok(transport)
}

/// Checks a branch name the way git would take it as `refs/heads/<branch>`.
pub fn validate_branch(branch: &str) -> Result<()> {
    let bad = |why: &str| Error::invalid("branch", format!("{branch:?} {why}"));
    if branch.is_empty() {
        return Err(bad("is empty"));
    }
    if branch.starts_with('-')
        || branch.starts_with('/')
        || branch.ends_with('/')
        || branch.ends_with('.')
        || branch.ends_with(".lock")
        || branch.contains("..")
        || branch.contains("//")
        || branch.contains("@{")
        || branch
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c))
    {
        return Err(bad("is not a valid branch name"));
    }
    Ok(())
}

/// A new ed25519 key pair in OpenSSH format, with `comment` on both halves.
pub fn new_deploy_key(comment: &str) -> DeployKey {
    let seed = random_32();
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
    let public = signing.verifying_key().to_bytes();

    let mut public_blob = Vec::new();
    put_string(&mut public_blob, b"ssh-ed25519");
    put_string(&mut public_blob, &public);

    let check = u32::from_be_bytes([seed[0], seed[5], seed[9], seed[13]]);
    let mut private = Vec::new();
    private.extend_from_slice(&check.to_be_bytes());
    private.extend_from_slice(&check.to_be_bytes());
    put_string(&mut private, b"ssh-ed25519");
    put_string(&mut private, &public);
    let mut secret = seed.to_vec();
    secret.extend_from_slice(&public);
    put_string(&mut private, &secret);
    put_string(&mut private, comment.as_bytes());
    let mut pad = 1u8;
    while private.len() % 8 != 0 {
        private.push(pad);
        pad += 1;
    }

    let mut blob = b"openssh-key-v1\0".to_vec();
    put_string(&mut blob, b"none");
    put_string(&mut blob, b"none");
    put_string(&mut blob, b"");
    blob.extend_from_slice(&1u32.to_be_bytes());
    put_string(&mut blob, &public_blob);
    put_string(&mut blob, &private);

    let encoded = STANDARD.encode(&blob);
    let mut pem = String::from("-----BEGIN OPENSSH PRIVATE KEY-----\n");
    for line in encoded.as_bytes().chunks(70) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END OPENSSH PRIVATE KEY-----\n");
    let public_line = if comment.is_empty() {
        format!("ssh-ed25519 {}", STANDARD.encode(&public_blob))
    } else {
        format!("ssh-ed25519 {} {comment}", STANDARD.encode(&public_blob))
    };
    DeployKey {
        public: public_line,
        private: pem,
    }
}

fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HookHeaders {
        pairs
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect()
    }

    /// RFC 4231 test case 2.
    #[test]
    fn hmac_is_rfc_4231() {
        assert_eq!(
            hmac_sha256_hex("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    /// GitHub's documented example: secret "It's a Secret to Everybody", payload
    /// "Hello, World!".
    #[test]
    fn github_signatures_verify_and_refuse() {
        let secret = "It's a Secret to Everybody";
        let body = b"Hello, World!";
        let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        Provider::GitHub
            .verify(secret, &headers(&[("X-Hub-Signature-256", good)]), body)
            .unwrap();
        for bad in [
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e18",
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            "sha256=",
            "sha256=zz",
            "sha1=0123",
        ] {
            let err = Provider::GitHub
                .verify(secret, &headers(&[("X-Hub-Signature-256", bad)]), body)
                .unwrap_err();
            assert!(matches!(err, Error::Unauthorized(_)), "{bad}: {err:?}");
            assert_eq!(
                err.to_string(),
                "the X-Hub-Signature-256 header does not match the app's webhook secret"
            );
        }
        let err = Provider::GitHub
            .verify(secret, &headers(&[]), body)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the request has no X-Hub-Signature-256 header"
        );
        // The body is what is signed: one byte more and it fails.
        assert!(
            Provider::GitHub
                .verify(
                    secret,
                    &headers(&[("X-Hub-Signature-256", good)]),
                    b"Hello, World!!"
                )
                .is_err()
        );
    }

    #[test]
    fn gitea_signatures_are_bare_hex() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let sig = hmac_sha256_hex("s3cret", body);
        Provider::Gitea
            .verify("s3cret", &headers(&[("X-Gitea-Signature", &sig)]), body)
            .unwrap();
        assert!(
            Provider::Gitea
                .verify("other", &headers(&[("X-Gitea-Signature", &sig)]), body)
                .is_err()
        );
        // GitHub's header does not count for Gitea.
        assert!(
            Provider::Gitea
                .verify(
                    "s3cret",
                    &headers(&[("X-Hub-Signature-256", &format!("sha256={sig}"))]),
                    body
                )
                .is_err()
        );
    }

    #[test]
    fn gitlab_tokens_compare_whole() {
        Provider::GitLab
            .verify("tok", &headers(&[("X-Gitlab-Token", "tok")]), b"{}")
            .unwrap();
        for bad in ["to", "tokk", "TOK", ""] {
            assert!(
                Provider::GitLab
                    .verify("tok", &headers(&[("X-Gitlab-Token", bad)]), b"{}")
                    .is_err(),
                "{bad:?}"
            );
        }
    }

    /// A GitHub push as GitHub sends it (trimmed of fields Empire does not read).
    const GITHUB_PUSH: &str = r#"{
      "ref": "refs/heads/main",
      "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
      "after": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
      "repository": {"id": 1296269, "full_name": "octocat/Hello-World",
        "clone_url": "https://evil.example/steal.git"},
      "pusher": {"name": "octocat", "email": "octocat@github.com"},
      "sender": {"login": "octocat", "id": 1},
      "created": false, "deleted": false, "forced": false,
      "compare": "https://github.com/octocat/Hello-World/compare/6113728f27ae...0d1a26e67d8f",
      "commits": [{"id": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
        "message": "Update README.md\n\nWith details", "author": {"name": "Mona"}}],
      "head_commit": {"id": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
        "message": "Update README.md\n\nWith details", "author": {"name": "Mona"}}
    }"#;

    #[test]
    fn reads_a_github_push_and_ping() {
        let h = headers(&[
            ("X-GitHub-Event", "push"),
            ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ]);
        let Hook::Push(push) = Provider::GitHub.parse(&h, GITHUB_PUSH.as_bytes()).unwrap() else {
            panic!("not a push")
        };
        assert_eq!(push.reference, "refs/heads/main");
        assert_eq!(push.after, "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c");
        assert_eq!(push.before, "6113728f27ae82c7b1a177c8d03f9e96e0adf246");
        assert_eq!(push.pusher, "octocat");
        assert_eq!(push.message, "Update README.md\n\nWith details");
        assert!(!push.deleted);
        assert_eq!(push.ignored_on("main"), None);
        assert_eq!(
            Provider::GitHub.delivery_id(&h).as_deref(),
            Some("72d3162e-cc78-11e3-81ab-4c9367dc0958")
        );
        let ping = headers(&[("X-GitHub-Event", "ping")]);
        assert_eq!(
            Provider::GitHub
                .parse(&ping, br#"{"zen":"Keep it logically awesome."}"#)
                .unwrap(),
            Hook::Ping
        );
        let issues = headers(&[("X-GitHub-Event", "issues")]);
        assert_eq!(
            Provider::GitHub.parse(&issues, b"{}").unwrap(),
            Hook::Other("issues".into())
        );
    }

    #[test]
    fn a_github_deletion_and_tags_and_other_branches_are_ignored() {
        let h = headers(&[("X-GitHub-Event", "push")]);
        let deletion = r#"{"ref":"refs/heads/main","before":"6113728f27ae82c7b1a177c8d03f9e96e0adf246",
          "after":"0000000000000000000000000000000000000000","deleted":true,"head_commit":null,
          "commits":[],"pusher":{"name":"octocat"}}"#;
        let Hook::Push(push) = Provider::GitHub.parse(&h, deletion.as_bytes()).unwrap() else {
            panic!()
        };
        assert!(push.deleted);
        assert_eq!(
            push.ignored_on("main").unwrap(),
            "the push deleted main; nothing to deploy"
        );
        let tag = GITHUB_PUSH.replace("refs/heads/main", "refs/tags/v1.0");
        let Hook::Push(push) = Provider::GitHub.parse(&h, tag.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(
            push.ignored_on("main").unwrap(),
            "refs/tags/v1.0 is a tag; only pushes to main deploy"
        );
        let other = GITHUB_PUSH.replace("refs/heads/main", "refs/heads/feature/x");
        let Hook::Push(push) = Provider::GitHub.parse(&h, other.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(
            push.ignored_on("main").unwrap(),
            "the push is to feature/x; only pushes to main deploy"
        );
    }

    /// A GitLab "Push Hook" (trimmed).
    const GITLAB_PUSH: &str = r#"{
      "object_kind": "push", "event_name": "push",
      "before": "95790bf891e76fee5e1747ab589903a6a1f80f22",
      "after": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
      "ref": "refs/heads/master",
      "checkout_sha": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
      "user_id": 4, "user_name": "John Smith", "user_username": "jsmith",
      "project": {"git_http_url": "http://example.com/mike/diaspora.git"},
      "commits": [
        {"id": "b6568db1bc1dcd7f8b4d5a946b0b91f9dacd7327", "message": "Update Catalan translation to e38cb41.\n"},
        {"id": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7", "message": "fixed readme"}
      ],
      "total_commits_count": 2
    }"#;

    #[test]
    fn reads_a_gitlab_push() {
        let h = headers(&[
            ("X-Gitlab-Event", "Push Hook"),
            (
                "X-Gitlab-Event-UUID",
                "13792a34-cac6-4fda-95a8-c58e00a3954e",
            ),
        ]);
        let Hook::Push(push) = Provider::GitLab.parse(&h, GITLAB_PUSH.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(push.after, "da1560886d4f094c3e6c9ef40349f7d38b5d27d7");
        assert_eq!(push.pusher, "jsmith");
        assert_eq!(push.message, "fixed readme");
        assert_eq!(push.branch(), Some("master"));
        assert_eq!(
            Provider::GitLab.delivery_id(&h).as_deref(),
            Some("13792a34-cac6-4fda-95a8-c58e00a3954e")
        );
        let tag = headers(&[("X-Gitlab-Event", "Tag Push Hook")]);
        assert_eq!(
            Provider::GitLab
                .parse(&tag, GITLAB_PUSH.as_bytes())
                .unwrap(),
            Hook::Other("Tag Push Hook".into())
        );
        let deletion = GITLAB_PUSH
            .replace(
                "\"after\": \"da1560886d4f094c3e6c9ef40349f7d38b5d27d7\"",
                "\"after\": \"0000000000000000000000000000000000000000\"",
            )
            .replace(
                "\"checkout_sha\": \"da1560886d4f094c3e6c9ef40349f7d38b5d27d7\"",
                "\"checkout_sha\": null",
            );
        let Hook::Push(push) = Provider::GitLab.parse(&h, deletion.as_bytes()).unwrap() else {
            panic!()
        };
        assert!(push.deleted);
    }

    /// A Gitea push (trimmed).
    const GITEA_PUSH: &str = r#"{
      "ref": "refs/heads/develop",
      "before": "28e1879d029cb852e4844d9c718537df08844e03",
      "after": "bffeb74224043ba2feb48d137756c8a9331c449a",
      "compare_url": "http://localhost:3000/gitea/webhooks/compare/28e1879d029cb852e4844d9c718537df08844e03...bffeb74224043ba2feb48d137756c8a9331c449a",
      "commits": [{"id": "bffeb74224043ba2feb48d137756c8a9331c449a", "message": "Webhooks Yay!",
        "url": "http://localhost:3000/gitea/webhooks/commit/bffeb74224043ba2feb48d137756c8a9331c449a",
        "author": {"name": "Gitea", "username": "gitea"}}],
      "head_commit": {"id": "bffeb74224043ba2feb48d137756c8a9331c449a", "message": "Webhooks Yay!"},
      "repository": {"clone_url": "http://localhost:3000/gitea/webhooks.git"},
      "pusher": {"id": 1, "login": "gitea", "full_name": "Gitea", "username": "gitea"},
      "sender": {"id": 1, "login": "gitea", "username": "gitea"}
    }"#;

    #[test]
    fn reads_a_gitea_push() {
        let h = headers(&[
            ("X-Gitea-Event", "push"),
            ("X-Gitea-Delivery", "f6266f16-1bf3-46a5-9ea4-602e06ead473"),
        ]);
        let Hook::Push(push) = Provider::Gitea.parse(&h, GITEA_PUSH.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(push.after, "bffeb74224043ba2feb48d137756c8a9331c449a");
        assert_eq!(push.pusher, "gitea");
        assert_eq!(push.message, "Webhooks Yay!");
        assert_eq!(push.branch(), Some("develop"));
        assert_eq!(
            Provider::Gitea.delivery_id(&h).as_deref(),
            Some("f6266f16-1bf3-46a5-9ea4-602e06ead473")
        );
    }

    #[test]
    fn malformed_pushes_are_invalid() {
        let h = headers(&[("X-GitHub-Event", "push")]);
        for body in [
            "not json",
            r#"{"ref":"refs/heads/main","after":"xyz"}"#,
            r#"{"after":"0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"}"#,
        ] {
            let err = Provider::GitHub.parse(&h, body.as_bytes()).unwrap_err();
            assert!(matches!(err, Error::Invalid { .. }), "{body}: {err:?}");
        }
    }

    #[test]
    fn clone_urls_are_checked() {
        for (url, transport) in [
            ("https://github.com/acme/shop.git", RepoTransport::Https),
            ("ssh://git@gitlab.com/acme/shop.git", RepoTransport::Ssh),
            ("git@github.com:acme/shop.git", RepoTransport::Ssh),
            ("http://127.0.0.1:3000/acme/shop.git", RepoTransport::Plain),
            ("git://127.0.0.1:9418/shop.git", RepoTransport::Plain),
        ] {
            assert_eq!(repo_transport(url).unwrap(), transport, "{url}");
        }
        for bad in [
            "",
            "/srv/git/shop.git",
            "file:///srv/git/shop.git",
            "ext::sh -c touch% /tmp/pwned",
            "-uhttps://x",
            "https://",
            "github.com:acme/shop.git",
        ] {
            assert!(repo_transport(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn branches_are_checked() {
        for ok in ["main", "release/1.2", "feature-x"] {
            validate_branch(ok).unwrap();
        }
        for bad in ["", "-x", "a..b", "a b", "x.lock", "a:b", "/a", "a/"] {
            assert!(validate_branch(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn secrets_are_random_hex() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }

    /// ssh-keygen reads the private key and derives the same public key from it.
    #[test]
    fn deploy_keys_are_openssh_ed25519() {
        let key = new_deploy_key("empire deploy key for shop");
        assert!(
            key.public
                .starts_with("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI")
        );
        assert!(key.public.ends_with(" empire deploy key for shop"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id");
        std::fs::write(&path, &key.private).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let out = std::process::Command::new("ssh-keygen")
            .arg("-y")
            .arg("-f")
            .arg(&path)
            .output()
            .expect("ssh-keygen runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let derived = String::from_utf8(out.stdout).unwrap();
        let mut derived_words = derived.split_whitespace();
        let mut public_words = key.public.split_whitespace();
        assert_eq!(derived_words.next(), public_words.next());
        assert_eq!(derived_words.next(), public_words.next());
        assert_ne!(new_deploy_key("x").public, new_deploy_key("x").public);
    }
}
