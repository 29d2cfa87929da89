//! Which server, which credentials and which app a command works on.

use std::process::Command;

use anyhow::{Context, Result, bail};

use super::client::{ApiClient, Auth, Server};
use super::netrc;

/// The server when `EMPIRE_URL` is not set.
pub const DEFAULT_URL: &str = "http://localhost:8080";

/// The server of `EMPIRE_URL` (default `http://localhost:8080`).
pub fn server() -> Result<Server> {
    let url = std::env::var("EMPIRE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_URL.to_string());
    Server::parse(&url)
}

/// The credentials for `server`: the `~/.netrc` entry of its host, with
/// `EMPIRE_API_TOKEN` overriding the token.
pub fn credentials(server: &Server) -> Result<Auth> {
    let entry = match netrc::path() {
        Ok(path) => netrc::lookup(&netrc::read(&path)?, &server.host),
        Err(_) => None,
    };
    let from_env = std::env::var("EMPIRE_API_TOKEN")
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    let user = entry
        .as_ref()
        .and_then(|e| e.login.clone())
        .unwrap_or_default();
    let token = from_env.or_else(|| entry.and_then(|e| e.password));
    match token {
        Some(token) => Ok(Auth { user, token }),
        None => bail!(
            "not logged in to {}: run `empire login` (or set EMPIRE_API_TOKEN)",
            server.url()
        ),
    }
}

/// A client of `EMPIRE_URL` with the stored credentials.
pub fn client() -> Result<ApiClient> {
    let server = server()?;
    let auth = credentials(&server)?;
    Ok(ApiClient::new(server, Some(auth)))
}

/// The app a command works on: `-a APP`, else the app of the git remote `remote` of
/// the current directory.
pub fn app(flag: Option<&str>, remote: &str) -> Result<String> {
    if let Some(app) = flag.map(str::trim).filter(|a| !a.is_empty()) {
        return Ok(app.to_string());
    }
    match remote_app(remote) {
        Some(app) => Ok(app),
        None => bail!(
            "no app given: pass -a APP, or run this inside a git repository with a remote \
             named `{remote}` (git remote add {remote} ssh://git@<host>:2222/<app>.git)"
        ),
    }
}

/// The app of the git remote `remote` in the current directory, if there is one.
pub fn remote_app(remote: &str) -> Option<String> {
    let output = Command::new("git")
        .args(["remote", "get-url", remote])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    app_of_url(String::from_utf8_lossy(&output.stdout).trim())
}

/// The app a git URL names: the last path segment without `.git`
/// (`ssh://git@host:2222/app.git` and `git@host:app.git` both name `app`).
pub fn app_of_url(url: &str) -> Option<String> {
    let last = url.trim().trim_end_matches('/').rsplit(['/', ':']).next()?;
    let name = last.strip_suffix(".git").unwrap_or(last);
    (!name.is_empty()).then(|| name.to_string())
}

/// Whether the current directory is inside a git work tree.
pub fn in_git_repo() -> bool {
    Command::new("git")
        .args(["rev-parse", "--is-inside-work-tree"])
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.starts_with(b"true"))
}

/// `git remote add <name> <url>`.
pub fn add_remote(name: &str, url: &str) -> Result<()> {
    let output = Command::new("git")
        .args(["remote", "add", name, url])
        .output()
        .context("running git")?;
    if !output.status.success() {
        bail!(
            "git remote add {name} {url}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_app_of_a_remote() {
        for url in [
            "ssh://git@host:2222/web.git",
            "ssh://git@127.0.0.1:2222/web.git",
            "git@host:web.git",
            "git@host:web",
            "https://empire.example.com/web.git/",
            "/srv/git/web.git",
        ] {
            assert_eq!(app_of_url(url).as_deref(), Some("web"), "{url}");
        }
        assert_eq!(app_of_url(""), None);
        assert_eq!(app_of_url("git@host:.git"), None);
    }
}
