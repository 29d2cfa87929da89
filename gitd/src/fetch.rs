//! Fetching a commit pushed to a connected repository (GitHub, GitLab, Gitea) into the
//! app's bare repository, with `git fetch` as a child process, so a webhook build reads
//! it like a pushed commit.
//!
//! Only the connection's URL is ever fetched, over `https`, `http`, `ssh` or `git`
//! (`GIT_ALLOW_PROTOCOL`; no `file` or `ext`), never prompting: SSH URLs with the
//! connection's deploy key (accepting a host key the first time and keeping it in a
//! known-hosts file beside the repositories), HTTPS URLs with the configured token.

use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use empire_core::progress::Progress;
use empire_core::push_event::{RepoTransport, repo_transport};
use empire_core::service::builds::SourceFetcher;
use empire_core::store::RepoConnection;
use empire_core::{Error, Result};
use tokio::process::Command;

use crate::repo::{GIT_LOCATION_VARS, ensure_repo, set_head};

/// How long one `git fetch` may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// The [`SourceFetcher`] of a gateway: repositories under `repos_dir`, made like pushed
/// ones (with the pre-receive hook running `hook_program`).
#[derive(Clone)]
pub struct GitFetcher {
    repos_dir: PathBuf,
    hook_program: PathBuf,
    https_token: Option<String>,
}

impl std::fmt::Debug for GitFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitFetcher")
            .field("repos_dir", &self.repos_dir)
            .field("https_token", &self.https_token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl GitFetcher {
    /// A fetcher into the repositories under `repos_dir`; `https_token` authenticates
    /// `https://` fetches (a GitHub, GitLab or Gitea access token).
    pub fn new(repos_dir: PathBuf, hook_program: PathBuf, https_token: Option<String>) -> Self {
        GitFetcher {
            repos_dir,
            hook_program,
            https_token: https_token.filter(|t| !t.trim().is_empty()),
        }
    }

    fn git(&self, repo: &Path) -> Command {
        let mut cmd = Command::new("git");
        cmd.current_dir(repo)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ALLOW_PROTOCOL", "https:http:ssh:git")
            .env("GCM_INTERACTIVE", "never");
        for var in GIT_LOCATION_VARS {
            cmd.env_remove(var);
        }
        cmd
    }

    /// Runs one `git fetch <url> <refspec>` with the connection's credentials.
    async fn fetch_once(
        &self,
        repo: &Path,
        connection: &RepoConnection,
        transport: RepoTransport,
        key_file: Option<&Path>,
        refspec: &str,
    ) -> Result<()> {
        let mut cmd = self.git(repo);
        cmd.args([
            "fetch",
            "--no-tags",
            "--no-write-fetch-head",
            "--quiet",
            "--",
        ])
        .arg(&connection.repo_url)
        .arg(refspec);
        match transport {
            RepoTransport::Ssh => {
                let known_hosts = self.repos_dir.join(".known_hosts");
                let mut ssh = String::from(
                    "ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new -o IdentitiesOnly=yes",
                );
                ssh.push_str(&format!(
                    " -o UserKnownHostsFile={}",
                    shell_quote(&known_hosts.to_string_lossy())
                ));
                if let Some(key) = key_file {
                    ssh.push_str(&format!(" -i {}", shell_quote(&key.to_string_lossy())));
                }
                cmd.env("GIT_SSH_COMMAND", ssh);
            }
            RepoTransport::Https => {
                if let Some(token) = &self.https_token {
                    use base64::Engine;
                    let basic = base64::engine::general_purpose::STANDARD
                        .encode(format!("x-access-token:{token}"));
                    // In the environment, not on the command line other users can read.
                    cmd.env("GIT_CONFIG_COUNT", "1")
                        .env("GIT_CONFIG_KEY_0", "http.extraHeader")
                        .env(
                            "GIT_CONFIG_VALUE_0",
                            format!("Authorization: Basic {basic}"),
                        );
                }
            }
            RepoTransport::Plain => {}
        }
        let output = tokio::time::timeout(FETCH_TIMEOUT, cmd.output())
            .await
            .map_err(|_| {
                Error::backend(
                    "git",
                    format!(
                        "fetching from {} took longer than {}s",
                        connection.repo_url,
                        FETCH_TIMEOUT.as_secs()
                    ),
                )
            })?
            .map_err(|e| Error::backend("git", format!("cannot run git fetch: {e}")))?;
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let said: Vec<&str> = stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let mut message = format!(
            "cannot fetch {refspec} from {}: {}",
            connection.repo_url,
            if said.is_empty() {
                format!("git fetch exited with {}", output.status)
            } else {
                said.join("; ")
            }
        );
        if transport == RepoTransport::Https && asked_for_credentials(&stderr) {
            message.push_str(if self.https_token.is_some() {
                " (the host did not accept the gateway's access token, --git-https-token)"
            } else {
                " (the host wants credentials and the gateway has no access token: \
                 --git-https-token or EMPIRE_GIT_HTTPS_TOKEN)"
            });
        }
        Err(Error::backend("git", message))
    }

    async fn has_commit(&self, repo: &Path, commit: &str) -> bool {
        self.git(repo)
            .args(["cat-file", "-e", &format!("{commit}^{{commit}}")])
            .status()
            .await
            .is_ok_and(|s| s.success())
    }
}

/// Whether git failed because an HTTP host answered 401: with prompts off it cannot ask
/// for a user name, or it says the credentials it sent failed.
fn asked_for_credentials(stderr: &str) -> bool {
    stderr.contains("could not read Username") || stderr.contains("Authentication failed")
}

/// `'text'` for `sh`, which runs GIT_SSH_COMMAND.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The deploy key written for one fetch, removed when dropped.
struct KeyFile(PathBuf);

impl KeyFile {
    fn write(dir: &Path, private: &str) -> io::Result<KeyFile> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("key-{}", uuid_like()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        io::Write::write_all(&mut file, private.as_bytes())?;
        Ok(KeyFile(path))
    }
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn uuid_like() -> String {
    use rand::Rng;
    let n: u128 = rand::rng().random();
    format!("{n:032x}")
}

fn is_commit_id(commit: &str) -> bool {
    (commit.len() == 40 || commit.len() == 64) && commit.bytes().all(|b| b.is_ascii_hexdigit())
}

#[async_trait]
impl SourceFetcher for GitFetcher {
    async fn fetch(
        &self,
        connection: &RepoConnection,
        commit: &str,
        progress: &Progress,
    ) -> Result<PathBuf> {
        if !is_commit_id(commit) {
            return Err(Error::invalid(
                "commit",
                format!("{commit:?} is not a commit id"),
            ));
        }
        let transport = repo_transport(&connection.repo_url)?;
        let (repos_dir, hook_program, app) = (
            self.repos_dir.clone(),
            self.hook_program.clone(),
            connection.app.clone(),
        );
        let repo =
            tokio::task::spawn_blocking(move || ensure_repo(&repos_dir, &app, &hook_program))
                .await
                .map_err(|e| Error::backend("git", format!("creating the repository: {e}")))?
                .map_err(|e| Error::backend("git", e))?;
        if self.has_commit(&repo, commit).await {
            progress.detail(format!("{} is already in the repository", &commit[..7]));
            return Ok(repo);
        }
        let key = match (&connection.deploy_key, transport) {
            (Some(key), RepoTransport::Ssh) => Some(
                KeyFile::write(&self.repos_dir.join(".deploy-keys"), &key.private).map_err(
                    |e| Error::backend("filesystem", format!("writing the deploy key: {e}")),
                )?,
            ),
            _ => None,
        };
        let key_path = key.as_ref().map(|k| k.0.as_path());
        // The pushed commit itself; hosts that refuse a fetch by id get the branch.
        let by_id = self
            .fetch_once(&repo, connection, transport, key_path, commit)
            .await;
        if by_id.is_err() || !self.has_commit(&repo, commit).await {
            let refspec = format!(
                "+refs/heads/{0}:refs/empire/connected/{0}",
                connection.branch
            );
            if let Err(err) = self
                .fetch_once(&repo, connection, transport, key_path, &refspec)
                .await
            {
                return Err(by_id.err().unwrap_or(err));
            }
            if !self.has_commit(&repo, commit).await {
                return Err(Error::backend(
                    "git",
                    format!(
                        "{} does not have commit {commit} (on {}): was it force-pushed away?",
                        connection.repo_url, connection.branch
                    ),
                ));
            }
        }
        Ok(repo)
    }

    async fn set_branch(&self, repo: &Path, branch: &str, commit: &str) -> Result<()> {
        let reference = format!("refs/heads/{branch}");
        let output = self
            .git(repo)
            .args(["update-ref", &reference, commit])
            .output()
            .await
            .map_err(|e| Error::backend("git", format!("cannot run git update-ref: {e}")))?;
        if !output.status.success() {
            return Err(Error::backend(
                "git",
                format!(
                    "cannot move {reference} to {commit}: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            ));
        }
        let repo = repo.to_path_buf();
        tokio::task::spawn_blocking(move || set_head(&repo, &reference))
            .await
            .map_err(|e| Error::backend("git", e))?
            .map_err(|e| Error::backend("git", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use empire_core::app::AppName;
    use std::process::Command as StdCommand;

    fn run(dir: &Path, args: &[&str]) -> String {
        let out = StdCommand::new("git")
            .current_dir(dir)
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn connection(url: &str) -> RepoConnection {
        RepoConnection {
            app: AppName::new("shop").unwrap(),
            repo_url: url.to_string(),
            branch: "main".to_string(),
            secret: "s3cret-s3cret".to_string(),
            deploy_key: None,
            created_at: time::OffsetDateTime::now_utc(),
        }
    }

    /// A source repository served by `git daemon` on a loopback port.
    struct Daemon(std::process::Child, u16);

    impl Drop for Daemon {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn daemon(base: &Path) -> Daemon {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let child = StdCommand::new("git")
            .args([
                "daemon",
                "--export-all",
                "--reuseaddr",
                "--listen=127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Daemon(child, port)
    }

    #[tokio::test]
    async fn fetches_the_pushed_commit_and_moves_the_branch_after() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        run(&src, &["init", "-q", "-b", "main"]);
        run(&src, &["commit", "-q", "--allow-empty", "-m", "one"]);
        let first = run(&src, &["rev-parse", "HEAD"]);
        run(&src, &["commit", "-q", "--allow-empty", "-m", "two"]);
        let second = run(&src, &["rev-parse", "HEAD"]);
        let served = daemon(dir.path());
        let url = format!("git://127.0.0.1:{}/src", served.1);

        let repos = dir.path().join("repos");
        let fetcher = GitFetcher::new(repos.clone(), PathBuf::from("/bin/true"), None);
        // An older commit than the branch's tip is fetched as asked.
        let repo = fetcher
            .fetch(&connection(&url), &first, &Progress::null())
            .await
            .unwrap();
        assert_eq!(repo, repos.join("shop.git"));
        run(&repo, &["cat-file", "-e", &format!("{first}^{{commit}}")]);
        // Fetching puts no branch in place: that waits for the deploy.
        assert!(run(&repo, &["for-each-ref", "refs/heads"]).is_empty());
        fetcher.set_branch(&repo, "main", &first).await.unwrap();
        assert_eq!(run(&repo, &["rev-parse", "refs/heads/main"]), first);
        assert_eq!(run(&repo, &["symbolic-ref", "HEAD"]), "refs/heads/main");

        fetcher
            .fetch(&connection(&url), &second, &Progress::null())
            .await
            .unwrap();
        run(&repo, &["cat-file", "-e", &format!("{second}^{{commit}}")]);

        // A commit the host does not have fails and says so.
        let missing = "0123456789012345678901234567890123456789";
        let err = fetcher
            .fetch(&connection(&url), missing, &Progress::null())
            .await
            .unwrap_err();
        assert!(err.to_string().contains(missing), "{err}");
    }

    #[tokio::test]
    async fn refuses_local_paths_and_bad_commits() {
        let dir = tempfile::tempdir().unwrap();
        let fetcher = GitFetcher::new(dir.path().to_path_buf(), PathBuf::from("/bin/true"), None);
        let err = fetcher
            .fetch(
                &connection("/etc"),
                "0123456789012345678901234567890123456789",
                &Progress::null(),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }), "{err:?}");
        let err = fetcher
            .fetch(
                &connection("git://127.0.0.1:1/x"),
                "HEAD",
                &Progress::null(),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }), "{err:?}");
    }
}
