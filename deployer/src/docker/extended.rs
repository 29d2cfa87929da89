//! What the docker scheduler makes of the extended Procfile's settings beyond cron
//! (see [`super::cron`]):
//!
//! - `noservice`: the process type gets no container (its quantity is 0); it runs only
//!   as `run`.
//! - `healthcheck`: the health-gated rollout probes that HTTP path (any status below
//!   500 passes) instead of a TCP connect.
//! - `environment`: merged over the release's config for that process type's containers.
//! - `ports`: the docker scheduler routes HTTP to `$PORT` of `web` only; other ports are
//!   for the ecs scheduler, and a deploy says so in a warning line.

use std::borrow::Cow;

use empire_core::progress::Progress;
use empire_core::schedule::Schedule;
use empire_core::scheduler::{DeploySpec, PortMapping, ProcessSpec};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// `spec` with the process's own environment over its config (borrowed when it has none).
pub(super) fn with_environment<'a>(
    spec: &'a DeploySpec,
    process: &ProcessSpec,
) -> Cow<'a, DeploySpec> {
    if process.environment.is_empty() {
        return Cow::Borrowed(spec);
    }
    let mut spec = spec.clone();
    spec.config.extend(process.environment.clone());
    Cow::Owned(spec)
}

/// `spec` with no instance of a cron or noservice process type (the pipeline already
/// gives them a quantity of 0; a caller that did not is not obeyed).
pub(super) fn services_only(spec: &DeploySpec) -> Cow<'_, DeploySpec> {
    if spec
        .processes
        .iter()
        .all(|p| p.is_service() || p.quantity == 0)
    {
        return Cow::Borrowed(spec);
    }
    let mut spec = spec.clone();
    for p in &mut spec.processes {
        if !p.is_service() {
            p.quantity = 0;
        }
    }
    Cow::Owned(spec)
}

fn port(p: &PortMapping) -> String {
    let default = if p.listener == 443 { "https" } else { "http" };
    let mut text = format!("{}:{}", p.listener, p.container);
    if p.protocol != default {
        text.push('/');
        text.push_str(&p.protocol);
    }
    text
}

/// The lines a deploy prints about the process types that are not plain services.
pub(super) fn notes(spec: &DeploySpec, now: OffsetDateTime) -> Vec<String> {
    let mut lines = Vec::new();
    for p in &spec.processes {
        if !p.ports.is_empty() {
            let ports: Vec<String> = p.ports.iter().map(port).collect();
            lines.push(format!(
                "Warning: {} declares ports {}; the docker scheduler ignores them and routes HTTP to $PORT of web only",
                p.name,
                ports.join(", ")
            ));
        }
        if let Some(text) = &p.cron {
            let next = Schedule::parse(text)
                .ok()
                .and_then(|s| s.next_after(now))
                .and_then(|t| t.format(&Rfc3339).ok())
                .map(|t| format!("; next at {t}"))
                .unwrap_or_else(|| "; it fires no more".into());
            lines.push(format!(
                "{} runs on its schedule \"{text}\" (UTC) as one-off processes{next}",
                p.name
            ));
        }
        if p.noservice {
            lines.push(format!(
                "{} runs no service (noservice); start it with run",
                p.name
            ));
        }
    }
    lines
}

/// Prints [`notes`].
pub(super) fn print_notes(spec: &DeploySpec, progress: &Progress) {
    for line in notes(spec, OffsetDateTime::now_utc()) {
        progress.detail(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use empire_core::app::AppName;
    use std::collections::BTreeMap;

    fn spec(processes: Vec<ProcessSpec>) -> DeploySpec {
        DeploySpec {
            app: AppName::new("shop").unwrap(),
            release: 2,
            image: "empire/shop:v2".into(),
            config: BTreeMap::from([
                ("GREETING".to_string(), "config".to_string()),
                ("KEEP".to_string(), "kept".to_string()),
            ]),
            processes,
        }
    }

    #[test]
    fn the_process_environment_goes_over_the_config() {
        let mut clock = ProcessSpec::new("clock", Some("./tick".into()), 0);
        clock.environment = BTreeMap::from([("GREETING".to_string(), "own".to_string())]);
        let web = ProcessSpec::new("web", None, 1);
        let s = spec(vec![web.clone(), clock.clone()]);
        assert!(matches!(with_environment(&s, &web), Cow::Borrowed(_)));
        let merged = with_environment(&s, &clock);
        assert_eq!(merged.config["GREETING"], "own");
        assert_eq!(merged.config["KEEP"], "kept");
        assert_eq!(s.config["GREETING"], "config");
    }

    #[test]
    fn cron_and_noservice_types_never_get_instances() {
        let mut console = ProcessSpec::new("console", Some("sh".into()), 2);
        console.noservice = true;
        let web = ProcessSpec::new("web", None, 3);
        let s = spec(vec![web.clone(), console]);
        let only = services_only(&s);
        let counts: Vec<u32> = only.processes.iter().map(|p| p.quantity).collect();
        assert_eq!(counts, [3, 0]);
        let plain = spec(vec![web]);
        assert!(matches!(services_only(&plain), Cow::Borrowed(_)));
    }

    #[test]
    fn notes_warn_about_ports_and_say_when_cron_runs() {
        let mut web = ProcessSpec::new("web", None, 1);
        web.ports = vec![
            PortMapping {
                listener: 80,
                container: 5000,
                protocol: "http".into(),
            },
            PortMapping {
                listener: 443,
                container: 5000,
                protocol: "https".into(),
            },
            PortMapping {
                listener: 5678,
                container: 5678,
                protocol: "tcp".into(),
            },
        ];
        let mut clock = ProcessSpec::new("clock", Some("./tick".into()), 0);
        clock.cron = Some("*/5 * * * *".into());
        let mut console = ProcessSpec::new("console", Some("sh".into()), 0);
        console.noservice = true;
        // 2026-11-18 11:06:40 UTC.
        let now = OffsetDateTime::from_unix_timestamp(1_795_000_000).unwrap();
        assert_eq!(
            notes(&spec(vec![web, clock, console]), now),
            [
                "Warning: web declares ports 80:5000, 443:5000, 5678:5678/tcp; the docker scheduler ignores them and routes HTTP to $PORT of web only",
                "clock runs on its schedule \"*/5 * * * *\" (UTC) as one-off processes; next at 2026-11-18T11:10:00Z",
                "console runs no service (noservice); start it with run",
            ]
        );
        assert!(notes(&spec(vec![ProcessSpec::new("web", None, 1)]), now).is_empty());
    }
}
