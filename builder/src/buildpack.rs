//! Buildpacks in the Heroku buildpack API v2: which ones a build uses (`BUILDPACK_URL`,
//! `.buildpacks`, or detection over the shipped ones), fetching git buildpacks, reading
//! what `bin/release` prints, and merging its process types with the Procfile.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use empire_core::procfile;

/// The shipped buildpacks (directories of `buildpacks/`) in the order detection tries
/// them: the first whose `bin/detect` passes builds the app.
pub const SHIPPED_ORDER: &[&str] = &["go", "nodejs", "python", "static", "procfile"];

/// The config var that names the buildpack to use.
pub const BUILDPACK_URL_VAR: &str = "BUILDPACK_URL";

/// The file at the root of a commit that lists buildpacks, one a line, run in order.
pub const BUILDPACKS_FILE: &str = ".buildpacks";

/// Everything that can go wrong in a buildpack build.
#[derive(Debug, thiserror::Error)]
pub enum BuildpackError {
    /// `.buildpacks` or `BUILDPACK_URL` is not usable.
    #[error("{source_name}: {message}")]
    Selection {
        /// Where the bad entry came from (`.buildpacks line 2`, `BUILDPACK_URL`).
        source_name: String,
        /// What is wrong.
        message: String,
    },
    /// A buildpack name is not one of the shipped buildpacks.
    #[error("unknown buildpack {name:?}: the shipped buildpacks are {}", known.join(", "))]
    Unknown {
        /// The name asked for.
        name: String,
        /// The shipped buildpacks.
        known: Vec<String>,
    },
    /// A git buildpack could not be cloned or its ref checked out.
    #[error("fetching buildpack {url}: {message}")]
    Fetch {
        /// The URL (credentials hidden).
        url: String,
        /// What git said.
        message: String,
    },
    /// No shipped buildpack's `bin/detect` passed.
    #[error(
        "no buildpack detected this app (tried {}): add a Dockerfile, a .buildpacks file or set BUILDPACK_URL",
        tried.join(", ")
    )]
    NoneDetected {
        /// Every buildpack tried, in order.
        tried: Vec<String>,
    },
    /// `bin/compile` failed.
    #[error(
        "buildpack {buildpack}: bin/compile failed with exit code {code}{}",
        tail_text(tail)
    )]
    Compile {
        /// The buildpack (a shipped name or its URL).
        buildpack: String,
        /// The exit code.
        code: i64,
        /// The last lines of its output.
        tail: Vec<String>,
    },
    /// `bin/release` failed or printed something that is not the expected YAML.
    #[error("buildpack {buildpack}: bin/release {message}")]
    Release {
        /// The buildpack.
        buildpack: String,
        /// What went wrong.
        message: String,
    },
    /// A stack image is not on the engine.
    #[error(
        "the stack image {image} is missing: build it with scripts/stack-images.sh (from Debian packages)"
    )]
    StackMissing {
        /// The image.
        image: String,
    },
    /// A step inside the build container failed for a reason of the gateway's.
    #[error("{action}: {message}")]
    Container {
        /// What was being done.
        action: String,
        /// The output or reason.
        message: String,
    },
    /// A Docker call failed.
    #[error("{action}: {source}")]
    Docker {
        /// What was being done.
        action: String,
        /// What bollard said.
        #[source]
        source: bollard::errors::Error,
    },
    /// Reading buildpacks or the CA bundle on the gateway failed.
    #[error("{action}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

impl BuildpackError {
    /// Whether the user can fix this by changing what they push or their config.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            BuildpackError::Selection { .. }
                | BuildpackError::Unknown { .. }
                | BuildpackError::Fetch { .. }
                | BuildpackError::NoneDetected { .. }
                | BuildpackError::Compile { .. }
                | BuildpackError::Release { .. }
        )
    }

    pub(crate) fn docker(action: impl Into<String>, source: bollard::errors::Error) -> Self {
        BuildpackError::Docker {
            action: action.into(),
            source,
        }
    }
}

fn tail_text(tail: &[String]) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("\n{}", tail.join("\n"))
    }
}

/// A buildpack named by `BUILDPACK_URL` or a `.buildpacks` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildpackRef {
    /// One of the shipped buildpacks, by directory name (`python`).
    Shipped(String),
    /// A git repository the gateway clones: `https://…`, `git://…`, `ssh://…`,
    /// `git@host:path`, `file:///…` or an absolute local path, with an optional `#ref`
    /// (branch, tag or commit).
    Git {
        /// The repository URL or path.
        url: String,
        /// The ref to check out; the default branch when `None`.
        reference: Option<String>,
    },
}

impl BuildpackRef {
    /// Parses one buildpack reference.
    pub fn parse(text: &str) -> Result<BuildpackRef, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("empty buildpack reference".to_string());
        }
        if is_shipped_name(text) {
            return Ok(BuildpackRef::Shipped(text.to_string()));
        }
        let is_url = ["https://", "http://", "git://", "ssh://", "file://"]
            .iter()
            .any(|scheme| text.starts_with(scheme))
            || text.starts_with('/')
            || (text.starts_with("git@") && text.contains(':'));
        if !is_url {
            return Err(format!(
                "{text:?} is neither a shipped buildpack name nor a git URL (https://, git://, ssh://, git@host:path, file:// or an absolute path)"
            ));
        }
        let (url, reference) = match text.rsplit_once('#') {
            Some((url, reference)) => (url, Some(reference)),
            None => (text, None),
        };
        if url.is_empty() {
            return Err(format!("{text:?} has no URL before '#'"));
        }
        let reference = match reference.map(str::trim) {
            Some("") => return Err(format!("{text:?} has an empty ref after '#'")),
            Some(r) if r.starts_with('-') || r.contains(char::is_whitespace) => {
                return Err(format!("{text:?} has an invalid ref {r:?}"));
            }
            other => other.map(str::to_string),
        };
        Ok(BuildpackRef::Git {
            url: url.to_string(),
            reference,
        })
    }

    /// How the buildpack is named in output: the shipped name, or the URL with any
    /// credentials hidden (and its `#ref`).
    pub fn label(&self) -> String {
        match self {
            BuildpackRef::Shipped(name) => name.clone(),
            BuildpackRef::Git { url, reference } => match reference {
                Some(r) => format!("{}#{r}", redact_url(url)),
                None => redact_url(url),
            },
        }
    }
}

/// Shipped buildpacks are named by a plain lowercase word (`python`, `my-pack`).
fn is_shipped_name(text: &str) -> bool {
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Hides the user-info of a URL (`https://user:token@host/…` → `https://***@host/…`).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_string(),
    }
}

/// Parses a `.buildpacks` file: one buildpack a line, in the order they run; blank lines
/// and `#` comments are skipped.
pub fn parse_buildpacks_file(text: &str) -> Result<Vec<BuildpackRef>, BuildpackError> {
    let mut refs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parsed = BuildpackRef::parse(line).map_err(|message| BuildpackError::Selection {
            source_name: format!("{BUILDPACKS_FILE} line {}", n + 1),
            message,
        })?;
        refs.push(parsed);
    }
    if refs.is_empty() {
        return Err(BuildpackError::Selection {
            source_name: BUILDPACKS_FILE.to_string(),
            message: "it names no buildpack".to_string(),
        });
    }
    Ok(refs)
}

/// Which buildpacks a build runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Chosen by the app: all of them run, in order.
    Explicit {
        /// Where the choice came from (`BUILDPACK_URL` or `.buildpacks`).
        from: &'static str,
        /// The buildpacks.
        buildpacks: Vec<BuildpackRef>,
    },
    /// The first shipped buildpack whose `bin/detect` passes, in [`SHIPPED_ORDER`].
    Detect,
}

/// Chooses the buildpacks: the `BUILDPACK_URL` config var, else the commit's
/// `.buildpacks`, else detection.
pub fn select(
    buildpack_url: Option<&str>,
    buildpacks_file: Option<&str>,
) -> Result<Selection, BuildpackError> {
    if let Some(url) = buildpack_url.map(str::trim).filter(|u| !u.is_empty()) {
        let parsed = BuildpackRef::parse(url).map_err(|message| BuildpackError::Selection {
            source_name: BUILDPACK_URL_VAR.to_string(),
            message,
        })?;
        return Ok(Selection::Explicit {
            from: BUILDPACK_URL_VAR,
            buildpacks: vec![parsed],
        });
    }
    if let Some(text) = buildpacks_file {
        return Ok(Selection::Explicit {
            from: BUILDPACKS_FILE,
            buildpacks: parse_buildpacks_file(text)?,
        });
    }
    Ok(Selection::Detect)
}

/// The shipped buildpack `name` in `dir`, checked to have `bin/compile`.
pub fn shipped_dir(dir: &Path, name: &str) -> Result<PathBuf, BuildpackError> {
    let path = dir.join(name);
    if path.join("bin/compile").is_file() {
        return Ok(path);
    }
    let mut known: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.path().join("bin/compile").is_file())
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    known.sort();
    Err(BuildpackError::Unknown {
        name: name.to_string(),
        known,
    })
}

/// Clones a git buildpack into `into` with the git CLI (the gateway's git, its
/// credentials helpers and known hosts), then checks out `reference` if one is given.
pub async fn fetch_git(
    url: &str,
    reference: Option<&str>,
    into: &Path,
) -> Result<(), BuildpackError> {
    let shown = match reference {
        Some(r) => format!("{}#{r}", redact_url(url)),
        None => redact_url(url),
    };
    let run = |args: Vec<std::ffi::OsString>| {
        let shown = shown.clone();
        async move {
            let output = tokio::process::Command::new("git")
                .args(&args)
                .env("GIT_TERMINAL_PROMPT", "0")
                .stdin(std::process::Stdio::null())
                .output()
                .await
                .map_err(|err| BuildpackError::Fetch {
                    url: shown.clone(),
                    message: format!("running git: {err}"),
                })?;
            if output.status.success() {
                return Ok(());
            }
            let stderr = String::from_utf8_lossy(&output.stderr);
            let message = stderr
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(redact_url_in_line)
                .collect::<Vec<_>>()
                .join("; ");
            Err(BuildpackError::Fetch {
                url: shown,
                message: if message.is_empty() {
                    format!("git exited with {}", output.status)
                } else {
                    message
                },
            })
        }
    };
    run(vec![
        "clone".into(),
        "--quiet".into(),
        "--".into(),
        url.into(),
        into.as_os_str().to_os_string(),
    ])
    .await?;
    if let Some(reference) = reference {
        run(vec![
            "-C".into(),
            into.as_os_str().to_os_string(),
            "-c".into(),
            "advice.detachedHead=false".into(),
            "checkout".into(),
            "--quiet".into(),
            reference.into(),
            "--".into(),
        ])
        .await?;
    }
    if !into.join("bin/compile").is_file() {
        return Err(BuildpackError::Fetch {
            url: shown,
            message: "the repository has no bin/compile".to_string(),
        });
    }
    Ok(())
}

fn redact_url_in_line(line: &str) -> String {
    line.split(' ')
        .map(|word| {
            let trimmed = word.trim_matches(|c| c == '\'' || c == '"');
            if trimmed.contains("://") {
                word.replace(trimmed, &redact_url(trimmed))
            } else {
                word.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a buildpack's `bin/release` declared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReleaseInfo {
    /// `default_process_types`: process type → command.
    pub default_process_types: BTreeMap<String, String>,
    /// `config_vars`: baked into the image as its environment.
    pub config_vars: BTreeMap<String, String>,
}

impl ReleaseInfo {
    /// Adds `later`'s entries over these (the later buildpack wins per key).
    pub fn merge(&mut self, later: ReleaseInfo) {
        self.default_process_types
            .extend(later.default_process_types);
        self.config_vars.extend(later.config_vars);
    }
}

/// Parses the YAML `bin/release` prints (`default_process_types`, `config_vars`; other
/// keys such as `addons` are ignored). Empty output declares nothing.
pub fn parse_release(text: &str) -> Result<ReleaseInfo, String> {
    if text.trim().is_empty() {
        return Ok(ReleaseInfo::default());
    }
    let value: serde_norway::Value =
        serde_norway::from_str(text).map_err(|err| format!("printed invalid YAML: {err}"))?;
    let top = match value {
        serde_norway::Value::Null => return Ok(ReleaseInfo::default()),
        serde_norway::Value::Mapping(map) => map,
        _ => return Err("printed YAML that is not a mapping".to_string()),
    };
    let mut info = ReleaseInfo::default();
    for (key, value) in top {
        let Some(key) = key.as_str() else { continue };
        let target = match key {
            "default_process_types" => &mut info.default_process_types,
            "config_vars" => &mut info.config_vars,
            _ => continue,
        };
        *target = string_map(key, value)?;
    }
    Ok(info)
}

fn string_map(what: &str, value: serde_norway::Value) -> Result<BTreeMap<String, String>, String> {
    use serde_norway::Value;
    let map = match value {
        Value::Null => return Ok(BTreeMap::new()),
        Value::Mapping(map) => map,
        _ => return Err(format!("printed a {what} that is not a mapping")),
    };
    let mut out = BTreeMap::new();
    for (key, value) in map {
        let key = scalar(&key).ok_or_else(|| format!("printed a {what} key that is not text"))?;
        let value = match value {
            Value::Null => String::new(),
            other => scalar(&other)
                .ok_or_else(|| format!("printed a {what} value for {key:?} that is not text"))?,
        };
        out.insert(key, value);
    }
    Ok(out)
}

fn scalar(value: &serde_norway::Value) -> Option<String> {
    use serde_norway::Value;
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Tagged(tagged) => scalar(&tagged.value),
        _ => None,
    }
}

/// The process types of a slug as Procfile text: the app's Procfile wins per type, and
/// the buildpacks' `default_process_types` add the types it lacks. `None` when neither
/// declares any (the image's CMD then runs as `web`). A Procfile that does not parse is
/// returned as it is, so the pipeline reports its error.
pub fn merge_procfile(
    procfile: Option<&str>,
    defaults: &BTreeMap<String, String>,
) -> Option<String> {
    let defaults: Vec<(&String, String)> = defaults
        .iter()
        .map(|(name, command)| (name, one_line(command)))
        .filter(|(name, command)| is_process_name(name) && !command.is_empty())
        .collect();
    let Some(text) = procfile else {
        if defaults.is_empty() {
            return None;
        }
        let mut out = String::new();
        for (name, command) in defaults {
            out.push_str(&format!("{name}: {command}\n"));
        }
        return Some(out);
    };
    let Ok(parsed) = procfile::parse(text) else {
        return Some(text.to_string());
    };
    let declared: Vec<&str> = parsed.processes.iter().map(|(n, _)| n.as_str()).collect();
    let missing: Vec<_> = defaults
        .into_iter()
        .filter(|(name, _)| !declared.contains(&name.as_str()))
        .collect();
    if missing.is_empty() {
        return Some(text.to_string());
    }
    let mut out = text.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    for (name, command) in missing {
        out.push_str(&format!("{name}: {command}\n"));
    }
    Some(out)
}

fn one_line(command: &str) -> String {
    command
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn is_process_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Whether `name` can be a file in ENV_DIR and an environment variable.
pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(url: &str, reference: Option<&str>) -> BuildpackRef {
        BuildpackRef::Git {
            url: url.to_string(),
            reference: reference.map(str::to_string),
        }
    }

    #[test]
    fn parses_buildpacks_files() {
        let text = "# build the assets first\nnodejs\n\n  python  \nhttps://github.com/heroku/heroku-buildpack-ruby#v250\nfile:///srv/bp.git\n/srv/local-bp\ngit@example.com:team/bp.git#main\n";
        assert_eq!(
            parse_buildpacks_file(text).unwrap(),
            vec![
                BuildpackRef::Shipped("nodejs".into()),
                BuildpackRef::Shipped("python".into()),
                git(
                    "https://github.com/heroku/heroku-buildpack-ruby",
                    Some("v250")
                ),
                git("file:///srv/bp.git", None),
                git("/srv/local-bp", None),
                git("git@example.com:team/bp.git", Some("main")),
            ]
        );
    }

    #[test]
    fn rejects_bad_buildpacks_files() {
        let err = parse_buildpacks_file("python\nRuby Pack\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            ".buildpacks line 2: \"Ruby Pack\" is neither a shipped buildpack name nor a git URL (https://, git://, ssh://, git@host:path, file:// or an absolute path)"
        );
        assert!(err.is_user_error());
        let err = parse_buildpacks_file("# nothing\n\n").unwrap_err();
        assert_eq!(err.to_string(), ".buildpacks: it names no buildpack");
        let err = parse_buildpacks_file("https://x/y#\n").unwrap_err();
        assert!(err.to_string().contains("empty ref"), "{err}");
        let err = parse_buildpacks_file("https://x/y#--upload-pack=evil\n").unwrap_err();
        assert!(err.to_string().contains("invalid ref"), "{err}");
    }

    #[test]
    fn selection_prefers_buildpack_url_then_the_file() {
        assert_eq!(
            select(Some("go"), Some("python\n")).unwrap(),
            Selection::Explicit {
                from: "BUILDPACK_URL",
                buildpacks: vec![BuildpackRef::Shipped("go".into())]
            }
        );
        assert_eq!(
            select(Some("  "), Some("python\nstatic\n")).unwrap(),
            Selection::Explicit {
                from: ".buildpacks",
                buildpacks: vec![
                    BuildpackRef::Shipped("python".into()),
                    BuildpackRef::Shipped("static".into())
                ]
            }
        );
        assert_eq!(select(None, None).unwrap(), Selection::Detect);
        assert_eq!(
            select(Some("not a url"), None).unwrap_err().to_string(),
            "BUILDPACK_URL: \"not a url\" is neither a shipped buildpack name nor a git URL (https://, git://, ssh://, git@host:path, file:// or an absolute path)"
        );
    }

    #[test]
    fn labels_hide_credentials() {
        assert_eq!(
            git("https://bot:s3cret@git.example.com/bp.git", Some("v1")).label(),
            "https://***@git.example.com/bp.git#v1"
        );
        assert_eq!(git("/srv/bp", None).label(), "/srv/bp");
        assert_eq!(BuildpackRef::Shipped("go".into()).label(), "go");
        assert_eq!(
            redact_url_in_line("fatal: repository 'https://u:p@h/x/' not found"),
            "fatal: repository 'https://***@h/x/' not found"
        );
    }

    #[test]
    fn parses_release_yaml() {
        let text = "---\naddons:\n  - heroku-postgresql\nconfig_vars:\n  PATH: /app/.venv/bin:$PATH\n  WEB_CONCURRENCY: 2\n  DEBUG: false\ndefault_process_types:\n  web: \"python app.py --port $PORT\"\n  worker: 'celery -A app worker'\n";
        let info = parse_release(text).unwrap();
        assert_eq!(
            info.default_process_types,
            BTreeMap::from([
                ("web".to_string(), "python app.py --port $PORT".to_string()),
                ("worker".to_string(), "celery -A app worker".to_string()),
            ])
        );
        assert_eq!(
            info.config_vars,
            BTreeMap::from([
                ("PATH".to_string(), "/app/.venv/bin:$PATH".to_string()),
                ("WEB_CONCURRENCY".to_string(), "2".to_string()),
                ("DEBUG".to_string(), "false".to_string()),
            ])
        );
        assert_eq!(parse_release("").unwrap(), ReleaseInfo::default());
        assert_eq!(parse_release("---\n").unwrap(), ReleaseInfo::default());
        assert_eq!(
            parse_release("default_process_types: {}\n").unwrap(),
            ReleaseInfo::default()
        );
        assert!(
            parse_release("just text")
                .unwrap_err()
                .contains("not a mapping")
        );
        assert!(
            parse_release("default_process_types: [web]\n")
                .unwrap_err()
                .contains("default_process_types that is not a mapping")
        );
        assert!(parse_release("config_vars: {A: [1]}\n").is_err());
        assert!(
            parse_release("default_process_types:\n  web: \"unclosed\n")
                .unwrap_err()
                .starts_with("printed invalid YAML")
        );
    }

    #[test]
    fn later_buildpacks_win_in_release_merges() {
        let mut info =
            parse_release("default_process_types:\n  web: a\n  worker: w\nconfig_vars:\n  X: 1\n")
                .unwrap();
        info.merge(
            parse_release("default_process_types:\n  web: b\nconfig_vars:\n  Y: 2\n").unwrap(),
        );
        assert_eq!(info.default_process_types["web"], "b");
        assert_eq!(info.default_process_types["worker"], "w");
        assert_eq!(info.config_vars.len(), 2);
    }

    #[test]
    fn merges_procfiles_with_default_process_types() {
        let defaults = BTreeMap::from([
            ("web".to_string(), "npm-less start".to_string()),
            ("worker".to_string(), "node worker.js".to_string()),
            ("bad name".to_string(), "x".to_string()),
            ("empty".to_string(), "  ".to_string()),
        ]);
        // The Procfile wins for web; worker is added.
        assert_eq!(
            merge_procfile(Some("web: node server.js"), &defaults).as_deref(),
            Some("web: node server.js\nworker: node worker.js\n")
        );
        // Nothing to add: the Procfile is kept exactly (comments and all).
        let full = "# mine\nweb: a\nworker: b\n";
        assert_eq!(merge_procfile(Some(full), &defaults).as_deref(), Some(full));
        // No Procfile: the defaults, in name order.
        assert_eq!(
            merge_procfile(None, &defaults).as_deref(),
            Some("web: npm-less start\nworker: node worker.js\n")
        );
        // Neither: the image's CMD runs.
        assert_eq!(merge_procfile(None, &BTreeMap::new()), None);
        // A broken Procfile passes through for the pipeline to report.
        assert_eq!(
            merge_procfile(Some("::nonsense"), &defaults).as_deref(),
            Some("::nonsense")
        );
        // Multi-line default commands become one line.
        let multi = BTreeMap::from([("web".to_string(), "a &&\n  b\n".to_string())]);
        assert_eq!(
            merge_procfile(None, &multi).as_deref(),
            Some("web: a && b\n")
        );
    }

    #[test]
    fn finds_shipped_buildpacks() {
        let dir = crate::stack::default_buildpacks_dir();
        assert!(shipped_dir(&dir, "python").is_ok());
        let err = shipped_dir(&dir, "ruby").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown buildpack \"ruby\": the shipped buildpacks are go, nodejs, procfile, python, static"
        );
    }

    #[test]
    fn env_names() {
        assert!(is_env_name("MY_VAR"));
        assert!(is_env_name("_x1"));
        assert!(!is_env_name("1X"));
        assert!(!is_env_name("A/B"));
        assert!(!is_env_name(""));
        assert!(!is_env_name(".."));
    }
}
