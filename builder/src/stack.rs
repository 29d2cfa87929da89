//! The stacks buildpack builds run on: the images, the user, the paths inside them, and
//! the launcher every slug image starts its processes through.
//!
//! Both stack images are built from Debian packages by `buildpacks/stack/build.sh`
//! (`scripts/stack-images.sh` builds them when missing).

use std::collections::BTreeMap;
use std::path::PathBuf;

/// The build stack: the runtimes and tools buildpacks compile with.
pub const STACK_BUILD_IMAGE: &str = "empire/stack-build:bookworm";

/// The run stack: what a slug needs to run, and nothing to build with.
pub const STACK_RUN_IMAGE: &str = "empire/stack-run:bookworm";

/// The stack's name, given to buildpacks as `$STACK`.
pub const STACK_NAME: &str = "bookworm";

/// The non-root user buildpacks and apps run as (uid and gid 1000 in both stacks).
pub const STACK_USER: &str = "empire";

/// Where the source is compiled and the slug lives (`BUILD_DIR`, and `/app` at run time).
pub const APP_DIR: &str = "/app";

/// Where the app's cache volume is mounted during a build (`CACHE_DIR`).
pub const CACHE_DIR: &str = "/cache";

/// Where the app's config vars are written, one file per var (`ENV_DIR`).
pub const ENV_DIR: &str = "/empire/env";

/// Where the buildpacks of a build are copied, one directory each.
pub const BUILDPACKS_DIR: &str = "/empire/buildpacks";

/// The CA bundle copied into the build container (the gateway's bundle plus the app's
/// `EMPIRE_CA_BUNDLE`).
pub const CA_BUNDLE_PATH: &str = "/empire/ca-certificates.crt";

/// The launcher in every slug image: its ENTRYPOINT.
pub const LAUNCHER_PATH: &str = "/empire/launch";

/// The label that marks an image whose ENTRYPOINT is the launcher: the scheduler keeps
/// the image's ENTRYPOINT and passes a process's command as its CMD.
pub const LAUNCHER_LABEL: &str = "empire.launcher";

/// The system CA bundle of a Debian gateway, copied into build containers by default.
pub const DEFAULT_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The launcher: changes to `/app`, sources `/app/.profile.d/*.sh` (as Heroku does, with
/// bash), then runs the command. One argument is a shell command line (`$PORT` expands);
/// several are an argv run as they are.
pub const LAUNCHER_SCRIPT: &str = r#"#!/bin/bash
# Empire's slug launcher: the ENTRYPOINT of buildpack-built images.
cd /app || exit 1
for profile in /app/.profile.d/*.sh; do
    if [ -r "$profile" ]; then
        . "$profile"
    fi
done
unset profile
if [ "$#" -eq 0 ]; then
    echo "launch: no command given" >&2
    exit 64
fi
if [ "$#" -eq 1 ]; then
    exec /bin/sh -c "$1"
fi
exec "$@"
"#;

/// How buildpack builds are set up: which stack images, where the shipped buildpacks
/// are, and which CA bundle build containers trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildpackConfig {
    /// The build stack image (`--stack-build-image`).
    pub build_image: String,
    /// The run stack image (`--stack-run-image`).
    pub run_image: String,
    /// The directory holding the shipped buildpacks (`go/`, `nodejs/`, …).
    pub buildpacks_dir: PathBuf,
    /// The gateway's CA bundle, copied into build containers; `None` to copy none (then
    /// only an app's `EMPIRE_CA_BUNDLE` is added to the stack's own certificates).
    pub ca_bundle: Option<PathBuf>,
}

impl Default for BuildpackConfig {
    /// The stack images above, `$EMPIRE_BUILDPACKS_DIR` or the repository's
    /// `buildpacks/`, and the system CA bundle when it exists.
    fn default() -> Self {
        let buildpacks_dir = std::env::var_os("EMPIRE_BUILDPACKS_DIR")
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(default_buildpacks_dir);
        let ca_bundle = PathBuf::from(DEFAULT_CA_BUNDLE);
        BuildpackConfig {
            build_image: STACK_BUILD_IMAGE.to_string(),
            run_image: STACK_RUN_IMAGE.to_string(),
            buildpacks_dir,
            ca_bundle: ca_bundle.is_file().then_some(ca_bundle),
        }
    }
}

/// The `buildpacks/` directory of the source tree this crate was built from.
pub fn default_buildpacks_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../buildpacks"))
}

/// Expands `$NAME` and `${NAME}` in a `config_vars` value from bin/release against the
/// run stack's environment (`PATH: /app/bin:$PATH`); unknown names expand to nothing, and
/// a `$` not followed by a name stays as it is.
pub fn expand_env(value: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, consumed) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) if is_name(&braced[..end]) => (&braced[..end], end + 2),
                _ => ("", 0),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if is_name(&after[..end]) {
                (&after[..end], end)
            } else {
                ("", 0)
            }
        };
        if consumed == 0 {
            out.push('$');
            rest = after;
        } else {
            out.push_str(env.get(name).map(String::as_str).unwrap_or(""));
            rest = &after[consumed..];
        }
    }
    out.push_str(rest);
    out
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Splits `NAME=value` entries of an image's environment into a map.
pub fn env_map(entries: &[String]) -> BTreeMap<String, String> {
    entries
        .iter()
        .filter_map(|entry| entry.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_names_from_the_stack_environment() {
        let env = BTreeMap::from([
            ("PATH".to_string(), "/usr/bin:/bin".to_string()),
            ("HOME".to_string(), "/app".to_string()),
        ]);
        assert_eq!(
            expand_env("/app/.venv/bin:$PATH", &env),
            "/app/.venv/bin:/usr/bin:/bin"
        );
        assert_eq!(expand_env("${HOME}/x", &env), "/app/x");
        assert_eq!(expand_env("$MISSING-y", &env), "-y");
        assert_eq!(expand_env("cost: $5 and $", &env), "cost: $5 and $");
        assert_eq!(expand_env("${not closed", &env), "${not closed");
        assert_eq!(expand_env("plain", &env), "plain");
    }

    #[test]
    fn splits_image_environments() {
        let env = env_map(&["A=1".into(), "B=x=y".into(), "broken".into()]);
        assert_eq!(env.get("A").map(String::as_str), Some("1"));
        assert_eq!(env.get("B").map(String::as_str), Some("x=y"));
        assert_eq!(env.len(), 2);
    }

    #[test]
    fn the_default_buildpacks_dir_holds_the_shipped_buildpacks() {
        let dir = default_buildpacks_dir();
        for name in crate::buildpack::SHIPPED_ORDER {
            assert!(
                dir.join(name).join("bin/compile").is_file(),
                "{name} is missing from {}",
                dir.display()
            );
        }
    }
}
