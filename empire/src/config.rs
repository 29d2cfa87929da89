//! Settings: a flag beats its `EMPIRE_*` environment variable, which beats the key of
//! the same name in the `--config` TOML file, which beats the default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Deserialize;

/// Flags every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Where the store, repositories and host key live.
    #[arg(long, env = "EMPIRE_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// A TOML file with settings (keys named like the flags, with underscores).
    #[arg(long, env = "EMPIRE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Keep the store in PostgreSQL (`postgres://user@host/db`) instead of SQLite in the
    /// data dir; several gateways can share one database.
    #[arg(
        long,
        env = "EMPIRE_DATABASE_URL",
        global = true,
        hide_env_values = true
    )]
    pub database_url: Option<String>,
}

/// Flags of `empire server`.
#[derive(Debug, Args, Default)]
pub struct ServerArgs {
    /// SSH git listener.
    #[arg(long, env = "EMPIRE_SSH_LISTEN")]
    pub ssh_listen: Option<SocketAddr>,
    /// HTTP API listener.
    #[arg(long, env = "EMPIRE_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// Router listener.
    #[arg(long, env = "EMPIRE_ROUTER_LISTEN")]
    pub router_listen: Option<SocketAddr>,
    /// Apps answer at `<app>.<apps-domain>`.
    #[arg(long, env = "EMPIRE_APPS_DOMAIN")]
    pub apps_domain: Option<String>,
    /// SSH host key (OpenSSH private key); generated into the data dir when not given.
    #[arg(long, env = "EMPIRE_HOST_KEY")]
    pub host_key: Option<PathBuf>,
    /// The scheduler backend.
    #[arg(long, env = "EMPIRE_SCHEDULER")]
    pub scheduler: Option<String>,
    /// Refuse pushes to apps that do not exist yet.
    #[arg(long, env = "EMPIRE_NO_AUTOCREATE")]
    pub no_autocreate: bool,
    /// How long a push waits for another deploy of the same app (e.g. `15m`, `90s`).
    #[arg(long, env = "EMPIRE_LOCK_TIMEOUT")]
    pub lock_timeout: Option<String>,
    /// How long new processes have to become healthy (e.g. `60s`).
    #[arg(long, env = "EMPIRE_BOOT_TIMEOUT")]
    pub boot_timeout: Option<String>,
    /// How long SIGTERM waits for running deploys before exiting (e.g. `5m`).
    #[arg(long, env = "EMPIRE_DRAIN_TIMEOUT")]
    pub drain_timeout: Option<String>,
    /// The image buildpacks compile in (built by scripts/stack-images.sh).
    #[arg(long, env = "EMPIRE_STACK_BUILD_IMAGE")]
    pub stack_build_image: Option<String>,
    /// The image buildpack apps run on.
    #[arg(long, env = "EMPIRE_STACK_RUN_IMAGE")]
    pub stack_run_image: Option<String>,
    /// The directory of shipped buildpacks (the repository's `buildpacks/`).
    #[arg(long, env = "EMPIRE_BUILDPACKS_DIR")]
    pub buildpacks_dir: Option<PathBuf>,
    /// Push every built image to this registry (`HOST[:PORT][/PREFIX]`) and deploy it by
    /// digest.
    #[arg(long, env = "EMPIRE_REGISTRY")]
    pub registry: Option<String>,
    /// How to authenticate to the registry: `none`, `basic` or `ecr` (default: `basic`
    /// when a username is given, else `none`).
    #[arg(long, env = "EMPIRE_REGISTRY_AUTH")]
    pub registry_auth: Option<String>,
    /// The registry username (`--registry-auth basic`).
    #[arg(long, env = "EMPIRE_REGISTRY_USERNAME")]
    pub registry_username: Option<String>,
    /// The registry password (`--registry-auth basic`).
    #[arg(long, env = "EMPIRE_REGISTRY_PASSWORD", hide_env_values = true)]
    pub registry_password: Option<String>,
    /// `HOST:PORT` images are pushed to when it differs from the registry's name.
    #[arg(long, env = "EMPIRE_REGISTRY_ENDPOINT")]
    pub registry_endpoint: Option<String>,
    /// Refuse deploys of code or images without a deploy message
    /// (`git push -o message="…"`, `empire deploy -m "…"`).
    #[arg(long, env = "EMPIRE_REQUIRE_MESSAGE")]
    pub require_message: bool,
    /// How long one outgoing webhook attempt may take (e.g. `10s`).
    #[arg(long, env = "EMPIRE_WEBHOOK_TIMEOUT")]
    pub webhook_timeout: Option<String>,
    /// How many attempts an outgoing webhook delivery gets before it fails.
    #[arg(long, env = "EMPIRE_WEBHOOK_ATTEMPTS")]
    pub webhook_attempts: Option<u32>,
    /// The wait before an outgoing webhook's first retry; each retry waits twice as long
    /// (e.g. `5s`).
    #[arg(long, env = "EMPIRE_WEBHOOK_BACKOFF")]
    pub webhook_backoff: Option<String>,
    /// The gateway's public HTTP address (`https://empire.example.com`), under which
    /// `apps:connect` prints webhook URLs (default: the HTTP listener's).
    #[arg(long, env = "EMPIRE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// The largest webhook body accepted (`1m`, `512k` or bytes; default 1m).
    #[arg(long, env = "EMPIRE_WEBHOOK_MAX_BODY")]
    pub webhook_max_body: Option<String>,
    /// An access token to fetch connected `https://` repositories with.
    #[arg(long, env = "EMPIRE_GIT_HTTPS_TOKEN", hide_env_values = true)]
    pub git_https_token: Option<String>,
    /// The `ecs` scheduler's settings (`--scheduler ecs`).
    #[command(flatten)]
    pub ecs: crate::ecs_settings::EcsArgs,
}

/// The `--config` file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    ssh_listen: Option<SocketAddr>,
    http_listen: Option<SocketAddr>,
    router_listen: Option<SocketAddr>,
    apps_domain: Option<String>,
    host_key: Option<PathBuf>,
    scheduler: Option<String>,
    no_autocreate: Option<bool>,
    lock_timeout: Option<String>,
    boot_timeout: Option<String>,
    drain_timeout: Option<String>,
    stack_build_image: Option<String>,
    stack_run_image: Option<String>,
    buildpacks_dir: Option<PathBuf>,
    registry: Option<String>,
    registry_auth: Option<String>,
    registry_username: Option<String>,
    registry_password: Option<String>,
    registry_endpoint: Option<String>,
    require_message: Option<bool>,
    webhook_timeout: Option<String>,
    webhook_attempts: Option<u32>,
    webhook_backoff: Option<String>,
    public_url: Option<String>,
    webhook_max_body: Option<String>,
    git_https_token: Option<String>,
    /// The `[ecs]` table (`--scheduler ecs`).
    ecs: Option<crate::ecs_settings::EcsFileConfig>,
}

/// Which scheduler backend runs releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerKind {
    /// Containers on the local Docker engine behind the built-in router.
    Docker,
    /// ECS services behind load balancers (`ServerSettings::ecs` holds the settings).
    Ecs,
}

/// Fully resolved server settings.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub data_dir: PathBuf,
    pub ssh_listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub router_listen: SocketAddr,
    pub apps_domain: String,
    pub host_key: PathBuf,
    pub scheduler: SchedulerKind,
    pub autocreate: bool,
    pub lock_timeout: Duration,
    pub boot_timeout: Duration,
    pub drain_timeout: Duration,
    pub stack_build_image: Option<String>,
    pub stack_run_image: Option<String>,
    pub buildpacks_dir: Option<PathBuf>,
    /// Where built images are pushed, if anywhere.
    pub registry: Option<RegistrySettings>,
    /// Refuse deploys of code or images without a message.
    pub require_message: bool,
    /// How long one outgoing webhook attempt may take.
    pub webhook_timeout: Duration,
    /// How many attempts an outgoing webhook delivery gets.
    pub webhook_attempts: u32,
    /// The wait before an outgoing webhook's first retry.
    pub webhook_backoff: Duration,
    /// The public HTTP address webhook URLs are printed under.
    pub public_url: String,
    /// The largest webhook body accepted, in bytes.
    pub webhook_max_body: usize,
    /// The token connected `https://` repositories are fetched with.
    pub git_https_token: Option<String>,
    /// The `ecs` scheduler's settings, checked (with `--scheduler ecs`).
    pub ecs: Option<empire_deployer::EcsConfig>,
}

/// How registry credentials are obtained.
#[derive(Clone, PartialEq, Eq)]
pub enum RegistryAuthKind {
    /// No credentials.
    None,
    /// HTTP basic auth.
    Basic {
        /// The username.
        username: String,
        /// The password.
        password: String,
    },
    /// Tokens from Amazon ECR (AWS credentials from the environment).
    Ecr,
}

impl std::fmt::Debug for RegistryAuthKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegistryAuthKind::None => f.write_str("None"),
            RegistryAuthKind::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .finish_non_exhaustive(),
            RegistryAuthKind::Ecr => f.write_str("Ecr"),
        }
    }
}

/// `--registry` and its companions, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrySettings {
    /// `HOST[:PORT][/PREFIX]`.
    pub address: String,
    /// `HOST:PORT` images are pushed to when it differs from the registry's name.
    pub endpoint: Option<String>,
    /// The credentials.
    pub auth: RegistryAuthKind,
}

impl RegistrySettings {
    /// Resolves the registry flags; `None` without `--registry`.
    fn resolve(
        address: Option<String>,
        auth: Option<String>,
        username: Option<String>,
        password: Option<String>,
        endpoint: Option<String>,
    ) -> Result<Option<Self>> {
        let Some(address) = address.filter(|a| !a.trim().is_empty()) else {
            if auth.is_some() || username.is_some() || password.is_some() || endpoint.is_some() {
                bail!(
                    "--registry-auth, --registry-username, --registry-password and \
                     --registry-endpoint need --registry HOST[:PORT][/PREFIX]"
                );
            }
            return Ok(None);
        };
        let kind =
            auth.unwrap_or_else(|| if username.is_some() { "basic" } else { "none" }.to_string());
        let auth = match kind.as_str() {
            "none" | "ecr" if username.is_some() || password.is_some() => bail!(
                "--registry-username/--registry-password go with --registry-auth basic, not {kind}"
            ),
            "none" => RegistryAuthKind::None,
            "ecr" => RegistryAuthKind::Ecr,
            "basic" => match (username, password) {
                (Some(username), Some(password)) => RegistryAuthKind::Basic { username, password },
                _ => {
                    bail!("--registry-auth basic needs --registry-username and --registry-password")
                }
            },
            other => {
                bail!("unknown --registry-auth {other:?}: expected \"none\", \"basic\" or \"ecr\"")
            }
        };
        Ok(Some(RegistrySettings {
            address: address.trim().to_string(),
            endpoint: endpoint.filter(|e| !e.trim().is_empty()),
            auth,
        }))
    }
}

fn read_file_config(path: Option<&Path>) -> Result<FileConfig> {
    let Some(path) = path else {
        return Ok(FileConfig::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
}

/// Where the store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// SQLite in this file.
    Sqlite(PathBuf),
    /// PostgreSQL at this URL.
    Postgres(String),
}

/// The store: `--database-url` (flag, environment or file), else SQLite in the data dir.
pub fn store_location(global: &GlobalArgs) -> Result<StoreLocation> {
    let file = read_file_config(global.config.as_deref())?;
    match global.database_url.clone().or(file.database_url) {
        Some(url) => Ok(StoreLocation::Postgres(url)),
        None => Ok(StoreLocation::Sqlite(data_dir(global)?.join("empire.db"))),
    }
}

/// The data dir, absolute: flag or environment, else the config file, else `./.empire`.
pub fn data_dir(global: &GlobalArgs) -> Result<PathBuf> {
    let file = read_file_config(global.config.as_deref())?;
    let dir = global
        .data_dir
        .clone()
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from(".empire"));
    std::path::absolute(&dir).with_context(|| format!("resolving data dir {}", dir.display()))
}

impl ServerSettings {
    /// Resolves flags, environment, file and defaults.
    pub fn resolve(global: &GlobalArgs, args: ServerArgs) -> Result<Self> {
        let file = read_file_config(global.config.as_deref())?;
        let data_dir = data_dir(global)?;
        let scheduler = match args
            .scheduler
            .or(file.scheduler)
            .as_deref()
            .unwrap_or("docker")
        {
            "docker" => SchedulerKind::Docker,
            "ecs" => SchedulerKind::Ecs,
            other => bail!("unknown scheduler {other:?}: expected \"docker\" or \"ecs\""),
        };
        let ecs = match scheduler {
            SchedulerKind::Ecs => Some(crate::ecs_settings::resolve(args.ecs.clone(), file.ecs)?),
            SchedulerKind::Docker => None,
        };
        let addr = |s: &str| s.parse::<SocketAddr>().expect("valid default address");
        Ok(ServerSettings {
            ecs,
            host_key: args
                .host_key
                .or(file.host_key)
                .unwrap_or_else(|| data_dir.join("ssh_host_ed25519_key")),
            data_dir,
            ssh_listen: args
                .ssh_listen
                .or(file.ssh_listen)
                .unwrap_or_else(|| addr("0.0.0.0:2222")),
            http_listen: args
                .http_listen
                .or(file.http_listen)
                .unwrap_or_else(|| addr("0.0.0.0:8080")),
            router_listen: args
                .router_listen
                .or(file.router_listen)
                .unwrap_or_else(|| addr("0.0.0.0:8000")),
            apps_domain: args
                .apps_domain
                .or(file.apps_domain)
                .unwrap_or_else(|| "localhost".into()),
            scheduler,
            autocreate: !(args.no_autocreate || file.no_autocreate.unwrap_or(false)),
            lock_timeout: duration(
                "lock-timeout",
                args.lock_timeout.or(file.lock_timeout).as_deref(),
                Duration::from_secs(15 * 60),
            )?,
            boot_timeout: duration(
                "boot-timeout",
                args.boot_timeout.or(file.boot_timeout).as_deref(),
                Duration::from_secs(60),
            )?,
            drain_timeout: duration(
                "drain-timeout",
                args.drain_timeout.or(file.drain_timeout).as_deref(),
                Duration::from_secs(5 * 60),
            )?,
            stack_build_image: args.stack_build_image.or(file.stack_build_image),
            stack_run_image: args.stack_run_image.or(file.stack_run_image),
            buildpacks_dir: args.buildpacks_dir.or(file.buildpacks_dir),
            require_message: args.require_message || file.require_message.unwrap_or(false),
            webhook_timeout: duration(
                "webhook-timeout",
                args.webhook_timeout.or(file.webhook_timeout).as_deref(),
                Duration::from_secs(10),
            )?,
            webhook_attempts: match args.webhook_attempts.or(file.webhook_attempts) {
                Some(0) => bail!("invalid --webhook-attempts 0: give at least 1"),
                Some(n) => n,
                None => 8,
            },
            webhook_backoff: duration(
                "webhook-backoff",
                args.webhook_backoff.or(file.webhook_backoff).as_deref(),
                Duration::from_secs(5),
            )?,
            public_url: public_url(
                args.public_url.or(file.public_url),
                &args.http_listen.or(file.http_listen),
            )?,
            webhook_max_body: byte_size(
                "webhook-max-body",
                args.webhook_max_body.or(file.webhook_max_body).as_deref(),
                1024 * 1024,
            )?,
            git_https_token: args
                .git_https_token
                .or(file.git_https_token)
                .filter(|t| !t.trim().is_empty()),
            registry: RegistrySettings::resolve(
                args.registry.or(file.registry),
                args.registry_auth.or(file.registry_auth),
                args.registry_username.or(file.registry_username),
                args.registry_password.or(file.registry_password),
                args.registry_endpoint.or(file.registry_endpoint),
            )?,
        })
    }
}

/// Parses `90s`, `15m`, `1h`, `500ms` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(seconds).ok()
}

/// `--public-url`, else `http://` and the HTTP listener (loopback for a wildcard one).
fn public_url(value: Option<String>, listen: &Option<SocketAddr>) -> Result<String> {
    if let Some(url) = value.filter(|u| !u.trim().is_empty()) {
        let url = url.trim().trim_end_matches('/').to_string();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            bail!("invalid --public-url {url:?}: expected http://HOST[:PORT] or https://…");
        }
        return Ok(url);
    }
    let listen = listen.unwrap_or_else(|| "0.0.0.0:8080".parse().expect("valid address"));
    let host = match listen.ip() {
        ip if ip.is_unspecified() => "localhost".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    Ok(format!("http://{host}:{}", listen.port()))
}

/// A size in bytes: `1048576`, `512k`, `1m` (powers of 1024).
fn byte_size(flag: &str, value: Option<&str>, default: usize) -> Result<usize> {
    let Some(text) = value else {
        return Ok(default);
    };
    let lower = text.trim().to_ascii_lowercase();
    let lower = lower.trim_end_matches('b').trim_end_matches('i');
    let (digits, unit) = match lower.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => lower.split_at(i),
        None => (lower, ""),
    };
    let unit = match unit.trim() {
        "" => 1,
        "k" => 1024,
        "m" => 1024 * 1024,
        _ => bail!("invalid --{flag} {text:?}: expected bytes, or a size such as 512k or 1m"),
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .filter(|n| *n > 0)
        .with_context(|| format!("invalid --{flag} {text:?}: expected a size such as 512k or 1m"))
}

fn duration(flag: &str, value: Option<&str>, default: Duration) -> Result<Duration> {
    match value {
        None => Ok(default),
        Some(text) => parse_duration(text).with_context(|| {
            format!("invalid --{flag} {text:?}: expected a duration such as 90s, 15m or 1h")
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Global flags naming a config file with `toml` in a new data dir.
    fn with_config_file(toml: &str) -> (tempfile::TempDir, GlobalArgs) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("empire.toml");
        std::fs::write(&file, toml).unwrap();
        let global = GlobalArgs {
            config: Some(file),
            ..no_config_file(&dir)
        };
        (dir, global)
    }

    /// Global flags with `dir` as the data dir and no config file.
    fn no_config_file(dir: &tempfile::TempDir) -> GlobalArgs {
        GlobalArgs {
            data_dir: Some(dir.path().into()),
            config: None,
            database_url: None,
        }
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("5y"), None);
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let (_dir, global) =
            with_config_file("apps_domain = \"from-file.test\"\nssh_listen = \"127.0.0.1:2200\"\n");
        let args = ServerArgs {
            ssh_listen: Some("127.0.0.1:3300".parse().unwrap()),
            ..ServerArgs::default()
        };
        let settings = ServerSettings::resolve(&global, args).unwrap();
        assert_eq!(settings.ssh_listen.port(), 3300);
        assert_eq!(settings.apps_domain, "from-file.test");
        assert_eq!(settings.http_listen.port(), 8080);
    }

    #[test]
    fn resolves_registry_settings() {
        let (_dir, global) = with_config_file(
            "registry = \"127.0.0.1:5001/apps\"\nregistry_username = \"empire\"\n\
             registry_password = \"from-file\"\n",
        );
        let args = ServerArgs {
            registry_password: Some("from-flag".into()),
            ..ServerArgs::default()
        };
        let settings = ServerSettings::resolve(&global, args).unwrap();
        assert_eq!(
            settings.registry,
            Some(RegistrySettings {
                address: "127.0.0.1:5001/apps".into(),
                endpoint: None,
                auth: RegistryAuthKind::Basic {
                    username: "empire".into(),
                    password: "from-flag".into(),
                },
            })
        );

        let ecr = RegistrySettings::resolve(
            Some("123456789012.dkr.ecr.us-east-1.amazonaws.com/empire".into()),
            Some("ecr".into()),
            None,
            None,
            Some("127.0.0.1:5000".into()),
        )
        .unwrap()
        .unwrap();
        assert_eq!(ecr.auth, RegistryAuthKind::Ecr);
        assert_eq!(ecr.endpoint.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(
            RegistrySettings::resolve(None, None, None, None, None).unwrap(),
            None
        );
        let anonymous =
            RegistrySettings::resolve(Some("127.0.0.1:5000".into()), None, None, None, None)
                .unwrap()
                .unwrap();
        assert_eq!(anonymous.auth, RegistryAuthKind::None);

        for (auth, user, password, address) in [
            (Some("basic"), Some("u"), None, Some("r.example.com")),
            (Some("ecr"), Some("u"), Some("p"), Some("r.example.com")),
            (Some("s3"), None, None, Some("r.example.com")),
            (Some("basic"), Some("u"), Some("p"), None),
        ] {
            let err = RegistrySettings::resolve(
                address.map(String::from),
                auth.map(String::from),
                user.map(String::from),
                password.map(String::from),
                None,
            )
            .unwrap_err();
            assert!(err.to_string().contains("--registry"), "{err}");
        }
    }

    #[test]
    fn resolves_deploy_message_and_outgoing_webhook_settings() {
        let (dir, global) = with_config_file(
            "require_message = true\nwebhook_backoff = \"2s\"\nwebhook_attempts = 3\n",
        );
        let args = ServerArgs {
            webhook_backoff: Some("250ms".into()),
            ..ServerArgs::default()
        };
        let settings = ServerSettings::resolve(&global, args).unwrap();
        assert!(settings.require_message);
        assert_eq!(settings.webhook_backoff, Duration::from_millis(250));
        assert_eq!(settings.webhook_attempts, 3);
        assert_eq!(settings.webhook_timeout, Duration::from_secs(10));

        let defaults = no_config_file(&dir);
        let settings = ServerSettings::resolve(&defaults, ServerArgs::default()).unwrap();
        assert!(!settings.require_message);
        assert_eq!(settings.webhook_attempts, 8);
        let zero = ServerArgs {
            webhook_attempts: Some(0),
            ..ServerArgs::default()
        };
        let err = ServerSettings::resolve(&defaults, zero).unwrap_err();
        assert!(err.to_string().contains("--webhook-attempts"), "{err}");
    }

    #[test]
    fn resolves_incoming_webhook_settings() {
        let (dir, global) = with_config_file(
            "webhook_max_body = \"2m\"\npublic_url = \"https://empire.example.com/\"\n\
             git_https_token = \"from-file\"\n",
        );
        let settings = ServerSettings::resolve(&global, ServerArgs::default()).unwrap();
        assert_eq!(settings.webhook_max_body, 2 * 1024 * 1024);
        assert_eq!(settings.public_url, "https://empire.example.com");
        assert_eq!(settings.git_https_token.as_deref(), Some("from-file"));
        let flags = ServerArgs {
            webhook_max_body: Some("512k".into()),
            git_https_token: Some("from-flag".into()),
            ..ServerArgs::default()
        };
        let settings = ServerSettings::resolve(&global, flags).unwrap();
        assert_eq!(settings.webhook_max_body, 512 * 1024);
        assert_eq!(settings.git_https_token.as_deref(), Some("from-flag"));

        // Defaults: 1 MiB, and the HTTP listener's address (loopback for a wildcard).
        let bare = no_config_file(&dir);
        let settings = ServerSettings::resolve(&bare, ServerArgs::default()).unwrap();
        assert_eq!(settings.webhook_max_body, 1024 * 1024);
        assert_eq!(settings.public_url, "http://localhost:8080");
        assert_eq!(settings.git_https_token, None);
        let listen = ServerArgs {
            http_listen: Some("127.0.0.1:9999".parse().unwrap()),
            ..ServerArgs::default()
        };
        let settings = ServerSettings::resolve(&bare, listen).unwrap();
        assert_eq!(settings.public_url, "http://127.0.0.1:9999");
        assert_eq!(byte_size("x", Some("4096"), 1).unwrap(), 4096);
        assert_eq!(byte_size("x", Some("1MiB"), 1).unwrap(), 1024 * 1024);
        for bad in ["", "0", "1g", "-1", "k"] {
            let args = ServerArgs {
                webhook_max_body: Some(bad.into()),
                ..ServerArgs::default()
            };
            let err = ServerSettings::resolve(&bare, args).unwrap_err();
            assert!(
                err.to_string().contains("--webhook-max-body"),
                "{bad:?}: {err}"
            );
        }
        let args = ServerArgs {
            public_url: Some("empire.example.com".into()),
            ..ServerArgs::default()
        };
        let err = ServerSettings::resolve(&bare, args).unwrap_err();
        assert!(err.to_string().contains("--public-url"), "{err}");
    }

    #[test]
    fn refuses_unknown_file_keys() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("empire.toml");
        std::fs::write(&file, "ssh_port = 22\n").unwrap();
        let err = read_file_config(Some(&file)).unwrap_err();
        assert!(format!("{err:#}").contains("ssh_port"), "{err:#}");
    }
}
