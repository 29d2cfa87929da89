//! `~/.netrc`: where `empire login` keeps the API token, as curl, git and Heroku's CLI
//! read it (`machine <host> login <user> password <token>`).
//!
//! Only the entry of one host is ever rewritten; every other entry, comment and macro
//! stays as it was.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The login and password of one `machine` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// `login`.
    pub login: Option<String>,
    /// `password`.
    pub password: Option<String>,
}

/// `$HOME/.netrc`.
pub fn path() -> Result<PathBuf> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("HOME is not set, so there is no ~/.netrc to keep credentials in")?;
    Ok(PathBuf::from(home).join(".netrc"))
}

/// The entry for `host` in `text` (the first one; `default` when there is none).
pub fn lookup(text: &str, host: &str) -> Option<Entry> {
    let entries = parse(text);
    entries
        .iter()
        .find(|e| e.kind == Kind::Machine(host.to_string()))
        .or_else(|| entries.iter().find(|e| e.kind == Kind::Default))
        .map(|e| e.entry.clone())
}

/// `text` with the entries of `host` replaced by one
/// `machine <host> login <login> password <password>` line (before a `default` entry,
/// which must stay last).
pub fn upsert(text: &str, host: &str, login: &str, password: &str) -> String {
    let (rest, _) = remove(text, host);
    let line = format!("machine {host} login {login} password {password}\n");
    let entries = parse(&rest);
    match entries.iter().find(|e| e.kind == Kind::Default) {
        Some(default) => format!("{}{line}{}", &rest[..default.start], &rest[default.start..]),
        None => {
            let mut out = rest;
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&line);
            out
        }
    }
}

/// `text` without the entries of `host`, and whether there was one.
pub fn remove(text: &str, host: &str) -> (String, bool) {
    let entries = parse(text);
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    let mut found = false;
    for entry in &entries {
        if entry.kind == Kind::Machine(host.to_string()) {
            out.push_str(&text[at..entry.start]);
            at = entry.end;
            found = true;
        }
    }
    out.push_str(&text[at..]);
    (out, found)
}

/// Reads the file at `path` (empty when it does not exist).
pub fn read(path: &Path) -> Result<String> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes `text` to `path` with mode 0600, replacing the file in one step.
pub fn write(path: &Path, text: &str) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let temp = dir.join(format!(".netrc.empire-{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Machine(String),
    Default,
    Macdef,
}

/// One entry: where it starts and ends in the text (up to the next entry) and its
/// fields.
#[derive(Debug)]
struct Parsed {
    kind: Kind,
    start: usize,
    end: usize,
    entry: Entry,
}

/// Whitespace-separated tokens with their byte offsets; `#` comments run to the end of
/// the line; a `macdef` body runs to the next blank line.
fn parse(text: &str) -> Vec<Parsed> {
    let bytes = text.as_bytes();
    let mut entries: Vec<Parsed> = Vec::new();
    let mut pos = 0;
    let next_token = |pos: &mut usize| -> Option<(usize, usize)> {
        loop {
            while *pos < bytes.len() && bytes[*pos].is_ascii_whitespace() {
                *pos += 1;
            }
            if *pos >= bytes.len() {
                return None;
            }
            if bytes[*pos] == b'#' {
                while *pos < bytes.len() && bytes[*pos] != b'\n' {
                    *pos += 1;
                }
                continue;
            }
            let start = *pos;
            while *pos < bytes.len() && !bytes[*pos].is_ascii_whitespace() {
                *pos += 1;
            }
            return Some((start, *pos));
        }
    };
    let mut field: Option<&str> = None;
    while let Some((start, end)) = next_token(&mut pos) {
        let token = &text[start..end];
        if let Some(name) = field.take() {
            if let Some(current) = entries.last_mut() {
                match name {
                    "machine" => current.kind = Kind::Machine(token.to_string()),
                    "login" => current.entry.login = Some(token.to_string()),
                    "password" => current.entry.password = Some(token.to_string()),
                    _ => {}
                }
            }
            continue;
        }
        match token {
            "machine" | "default" | "macdef" => {
                if let Some(last) = entries.last_mut() {
                    last.end = start;
                }
                entries.push(Parsed {
                    kind: match token {
                        "default" => Kind::Default,
                        "macdef" => Kind::Macdef,
                        _ => Kind::Machine(String::new()),
                    },
                    start,
                    end: text.len(),
                    entry: Entry::default(),
                });
                if token == "machine" {
                    field = Some("machine");
                } else if token == "macdef" {
                    // The name, then the body up to a blank line.
                    let _ = next_token(&mut pos);
                    pos = match text[pos..].find("\n\n") {
                        Some(at) => pos + at + 2,
                        None => text.len(),
                    };
                }
            }
            "login" | "password" | "account" => field = Some(token),
            _ => {}
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# my machines\nmachine github.com login me password ghp_x\n\
                        machine localhost\n  login alice\n  password emp_old\n\
                        macdef init\nmachine localhost login evil password no\n\n\
                        machine other.example login bob password emp_b\n";

    #[test]
    fn finds_entries_by_host() {
        let found = lookup(TEXT, "localhost").unwrap();
        assert_eq!(found.login.as_deref(), Some("alice"));
        assert_eq!(found.password.as_deref(), Some("emp_old"));
        assert_eq!(
            lookup(TEXT, "other.example").unwrap().password.as_deref(),
            Some("emp_b")
        );
        assert_eq!(lookup(TEXT, "nowhere"), None);
        let with_default = "machine a login x password y\ndefault login d password dp\n";
        assert_eq!(
            lookup(with_default, "b").unwrap().login.as_deref(),
            Some("d")
        );
    }

    #[test]
    fn replaces_one_host_and_keeps_the_rest() {
        let updated = upsert(TEXT, "localhost", "alice", "emp_new");
        assert!(updated.starts_with("# my machines\nmachine github.com login me password ghp_x\n"));
        assert!(updated.contains("macdef init\nmachine localhost login evil password no\n\n"));
        assert!(updated.contains("machine other.example login bob password emp_b\n"));
        assert!(updated.ends_with("machine localhost login alice password emp_new\n"));
        assert!(!updated.contains("emp_old"));
        assert_eq!(
            lookup(&updated, "localhost").unwrap().password.as_deref(),
            Some("emp_new")
        );
        // Again: still one entry.
        let again = upsert(&updated, "localhost", "alice", "emp_3");
        assert_eq!(again.matches("login alice").count(), 1, "{again}");

        assert_eq!(upsert("", "h", "u", "p"), "machine h login u password p\n");
        assert_eq!(
            upsert("machine a login b password c", "h", "u", "p"),
            "machine a login b password c\nmachine h login u password p\n"
        );
        let with_default = upsert("default login d password dp\n", "h", "u", "p");
        assert_eq!(
            with_default,
            "machine h login u password p\ndefault login d password dp\n"
        );
    }

    #[test]
    fn removes_a_host() {
        let (text, found) = remove(TEXT, "localhost");
        assert!(found);
        assert!(!text.contains("emp_old"));
        assert!(text.contains("machine github.com"));
        let (same, found) = remove(&text, "localhost");
        assert!(!found);
        assert_eq!(same, text);
    }

    #[test]
    fn writes_the_file_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(".netrc");
        write(&file, "machine h login u password p\n").unwrap();
        assert_eq!(read(&file).unwrap(), "machine h login u password p\n");
        let mode = fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(read(&dir.path().join("missing")).unwrap(), "");
    }
}
