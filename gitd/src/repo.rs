//! The apps' bare repositories.
//!
//! A repository on disk is a cache, not the truth: a gateway that lacks one creates it
//! empty on the first push, and the client then sends the whole history. Each repository
//! gets a `pre-receive` hook that runs `<hook_program> hook pre-receive`, which hands the
//! push to the daemon (see [`crate::hook`]).

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use empire_core::app::AppName;

/// Environment variables that would point a git command at another repository; they
/// are removed from every git command gitd runs.
pub(crate) const GIT_LOCATION_VARS: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_QUARANTINE_PATH",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_CEILING_DIRECTORIES",
];

/// Where an app's bare repository lives: `<repos_dir>/<app>.git`.
pub fn repo_path(repos_dir: &Path, app: &AppName) -> PathBuf {
    repos_dir.join(format!("{app}.git"))
}

/// Creates `<repos_dir>/<app>.git` as a bare repository if it is missing, turns on push
/// options (`git push -o no-cache`) and (re)writes its `pre-receive` hook to run
/// `<hook_program> hook pre-receive`. Returns the repository's path. Idempotent, and safe
/// when two pushes create the same repository at once.
pub fn ensure_repo(repos_dir: &Path, app: &AppName, hook_program: &Path) -> io::Result<PathBuf> {
    fs::create_dir_all(repos_dir).map_err(|e| with_path(e, "create", repos_dir))?;
    let path = repo_path(repos_dir, app);
    if !path.join("HEAD").is_file() {
        create_bare(repos_dir, app, &path)?;
    }
    ensure_push_options(&path)?;
    write_hook(&path, hook_program)?;
    Ok(path)
}

/// Points the repository's `HEAD` at `reference` (the branch just deployed), so a clone
/// checks out what runs.
pub(crate) fn set_head(repo: &Path, reference: &str) -> io::Result<()> {
    let current = git_command(repo)
        .args(["symbolic-ref", "-q", "HEAD"])
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run git symbolic-ref: {e}")))?;
    if current.status.success() && current.stdout.trim_ascii() == reference.as_bytes() {
        return Ok(());
    }
    git(repo, &["symbolic-ref", "HEAD", reference], "set HEAD of")
}

/// Initialises the repository in a temporary directory beside its final place and renames
/// it into place, so a concurrent push never sees a half-made repository.
fn create_bare(repos_dir: &Path, app: &AppName, path: &Path) -> io::Result<()> {
    let tmp = repos_dir.join(format!(".{app}.git.tmp-{:016x}", rand::random::<u64>()));
    let result = (|| {
        let output = git_command(repos_dir)
            .args([
                "init",
                "--bare",
                "-q",
                "--initial-branch=main",
                "--template=",
            ])
            .arg(&tmp)
            .output()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run git init: {e}")))?;
        if !output.status.success() {
            return Err(io::Error::other(format!(
                "git init --bare {} failed: {}",
                tmp.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        ensure_push_options(&tmp)?;
        match fs::rename(&tmp, path) {
            Ok(()) => Ok(()),
            // Another push created it first: use theirs.
            Err(_) if path.join("HEAD").is_file() => Ok(()),
            Err(e) => Err(with_path(e, "move into place", path)),
        }
    })();
    if tmp.exists() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

/// Sets `receive.advertisePushOptions=true` unless it is set already. `git config`
/// takes a lock on the config file, so a concurrent writer is waited out and retried.
fn ensure_push_options(repo: &Path) -> io::Result<()> {
    let mut attempt = 0;
    loop {
        let current = git_command(repo)
            .args(["config", "--get", "receive.advertisePushOptions"])
            .output()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run git config: {e}")))?;
        if current.status.success() && current.stdout.trim_ascii() == b"true" {
            return Ok(());
        }
        match git(
            repo,
            &["config", "receive.advertisePushOptions", "true"],
            "enable push options in",
        ) {
            Ok(()) => return Ok(()),
            Err(_) if attempt < 5 => {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(20 * attempt));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Writes `hooks/pre-receive` unless it already has exactly the right content.
fn write_hook(repo: &Path, hook_program: &Path) -> io::Result<()> {
    let hooks = repo.join("hooks");
    fs::create_dir_all(&hooks).map_err(|e| with_path(e, "create", &hooks))?;
    let hook = hooks.join("pre-receive");
    let script = hook_script(hook_program);
    let current = fs::read(&hook).ok();
    let executable = fs::metadata(&hook)
        .map(|m| m.permissions().mode() & 0o111 == 0o111)
        .unwrap_or(false);
    if current.as_deref() == Some(script.as_slice()) && executable {
        return Ok(());
    }
    let tmp = hooks.join(format!(".pre-receive.tmp-{:016x}", rand::random::<u64>()));
    let written = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o755)
            .open(&tmp)?;
        file.write_all(&script)?;
        file.sync_all()?;
        fs::rename(&tmp, &hook)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map_err(|e| with_path(e, "write", &hook))
}

/// The hook script: `exec '<program>' hook pre-receive`, the path single-quoted for sh.
pub(crate) fn hook_script(hook_program: &Path) -> Vec<u8> {
    let mut script =
        b"#!/bin/sh\n# Written by empire: hands the push to the empire daemon.\nexec ".to_vec();
    script.extend_from_slice(&sh_quote(hook_program.as_os_str()));
    script.extend_from_slice(b" hook pre-receive\n");
    script
}

/// Single-quotes a word for sh: `'` becomes `'\''`.
fn sh_quote(word: &OsStr) -> Vec<u8> {
    let mut out = vec![b'\''];
    for &b in word.as_bytes() {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    out
}

/// A `git` command with a clean environment for repository location.
fn git_command(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir).stdin(Stdio::null());
    for var in GIT_LOCATION_VARS {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs `git -C <repo> <args>` and turns a failure into an error naming `what` and the
/// repository.
fn git(repo: &Path, args: &[&str], what: &str) -> io::Result<()> {
    let output = git_command(repo)
        .args(args)
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run git: {e}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "cannot {what} {}: git {} failed: {}",
            repo.display(),
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

fn with_path(err: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(
        err.kind(),
        format!("cannot {what} {}: {err}", path.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git_out(dir: &Path, args: &[&str]) -> String {
        let out = git_command(dir).args(args).output().unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    #[test]
    fn creates_a_bare_repository_with_the_hook() {
        let dir = tempfile::tempdir().unwrap();
        let repos = dir.path().join("repos");
        let app = AppName::new("web").unwrap();
        let program = Path::new("/opt/empire/bin/empire");
        let path = ensure_repo(&repos, &app, program).unwrap();
        assert_eq!(path, repos.join("web.git"));
        assert_eq!(
            git_out(&path, &["rev-parse", "--is-bare-repository"]),
            "true"
        );
        assert_eq!(
            git_out(&path, &["config", "receive.advertisePushOptions"]),
            "true"
        );
        assert_eq!(git_out(&path, &["symbolic-ref", "HEAD"]), "refs/heads/main");
        let hook = path.join("hooks/pre-receive");
        let script = fs::read_to_string(&hook).unwrap();
        assert!(script.starts_with("#!/bin/sh\n"), "{script}");
        assert!(
            script.ends_with("exec '/opt/empire/bin/empire' hook pre-receive\n"),
            "{script}"
        );
        let mode = fs::metadata(&hook).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        // No leftovers from the atomic creation.
        let names: Vec<_> = fs::read_dir(&repos)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["web.git"]);
    }

    #[test]
    fn is_idempotent_and_rewrites_the_hook() {
        let dir = tempfile::tempdir().unwrap();
        let app = AppName::new("api").unwrap();
        let first = ensure_repo(dir.path(), &app, Path::new("/usr/bin/empire")).unwrap();
        fs::write(first.join("marker"), "kept").unwrap();
        let second = ensure_repo(dir.path(), &app, Path::new("/usr/local/bin/empire")).unwrap();
        assert_eq!(first, second);
        assert_eq!(fs::read_to_string(second.join("marker")).unwrap(), "kept");
        let script = fs::read_to_string(second.join("hooks/pre-receive")).unwrap();
        assert!(script.contains("exec '/usr/local/bin/empire' hook pre-receive"));
        // A hook someone made non-executable is repaired.
        fs::set_permissions(
            second.join("hooks/pre-receive"),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        ensure_repo(dir.path(), &app, Path::new("/usr/local/bin/empire")).unwrap();
        let mode = fs::metadata(second.join("hooks/pre-receive"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111);
    }

    #[test]
    fn quotes_the_hook_program_for_sh() {
        let script = hook_script(Path::new("/tmp/it's here/$(id) `x`/empire"));
        let text = String::from_utf8(script).unwrap();
        assert!(
            text.ends_with("exec '/tmp/it'\\''s here/$(id) `x`/empire' hook pre-receive\n"),
            "{text}"
        );
        // And sh really runs that path with those arguments.
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join("it's a $(dir) `x`");
        fs::create_dir_all(&odd).unwrap();
        let program = odd.join("prog");
        fs::write(&program, "#!/bin/sh\necho \"ran with: $*\"\n").unwrap();
        fs::set_permissions(&program, fs::Permissions::from_mode(0o755)).unwrap();
        let hook = dir.path().join("hook");
        fs::write(&hook, hook_script(&program)).unwrap();
        let out = Command::new("sh").arg(&hook).output().unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "ran with: hook pre-receive\n"
        );
    }

    #[test]
    fn concurrent_creation_is_safe() {
        let dir = tempfile::tempdir().unwrap();
        let app = AppName::new("race").unwrap();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let repos = dir.path().to_path_buf();
                let app = app.clone();
                std::thread::spawn(move || ensure_repo(&repos, &app, Path::new("/bin/empire")))
            })
            .collect();
        for h in handles {
            let path = h.join().unwrap().unwrap();
            assert_eq!(path, dir.path().join("race.git"));
        }
        assert_eq!(
            git_out(
                &dir.path().join("race.git"),
                &["rev-parse", "--is-bare-repository"]
            ),
            "true"
        );
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["race.git"]);
    }
}
