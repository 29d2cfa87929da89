//! What each client command does: calls to the API and what they print.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use hyper::Method;
use serde_json::{Map, Value, json};

use super::client::{ApiClient, Auth, Call, next_chunk, segment, stream_to_stdout};
use super::output::{self, and_list, header, key_values, table, text};
use super::types::{App, Dyno, Formation, Key, Release, typed};
use super::{AppArgs, ClientCommand, netrc, run, session};

/// Runs one command; answers the exit status.
pub async fn dispatch(command: ClientCommand) -> Result<i32> {
    use ClientCommand as C;
    match command {
        C::Login { user, token } => login(user, token).await?,
        C::Logout => logout()?,
        C::Whoami { output } => whoami(output.json).await?,
        C::Apps { output } => apps(output.json).await?,
        C::Create {
            name,
            remote,
            no_remote,
            output,
        } => create(name, &remote, no_remote, output.json).await?,
        C::Destroy { target, confirm } => destroy(&target, confirm).await?,
        C::Info { target, output } => info(&target, output.json).await?,
        C::Config {
            target,
            shell,
            output,
        } => config(&target, shell, output.json).await?,
        C::ConfigGet { target, key } => config_get(&target, &key).await?,
        C::ConfigSet {
            target,
            vars,
            output,
        } => config_set(&target, &vars, output.json).await?,
        C::ConfigUnset {
            target,
            keys,
            output,
        } => config_unset(&target, &keys, output.json).await?,
        C::Releases {
            target,
            num,
            output,
        } => releases(&target, num, output.json).await?,
        C::ReleasesInfo {
            target,
            version,
            output,
        } => release_info(&target, version.as_deref(), output.json).await?,
        C::Rollback {
            target,
            version,
            output,
        } => rollback(&target, version.as_deref(), output.json).await?,
        C::Ps { target, output } => ps(&target, output.json).await?,
        C::Scale {
            target,
            changes,
            output,
        } => scale(&target, &changes, output.json).await?,
        C::Restart { target, dyno } => restart(&target, dyno.as_deref()).await?,
        C::Run {
            target,
            detach,
            size,
            no_tty,
            json,
            command,
        } => {
            let client = session::client()?;
            let app = app_of(&target)?;
            let line = run::command_line(&command);
            if detach {
                run::detached(&client, &app, &line, size.as_deref(), json).await?;
            } else {
                let tty = !no_tty && run::wants_tty();
                return run::attached(&client, &app, &line, size.as_deref(), tty).await;
            }
        }
        C::Logs {
            target,
            num,
            process,
            follow,
        } => logs(&target, num, process, follow).await?,
        C::Domains { target, output } => domains(&target, output.json).await?,
        C::DomainsAdd {
            target,
            hostname,
            output,
        } => domains_add(&target, &hostname, output.json).await?,
        C::DomainsRemove { target, hostname } => domains_remove(&target, &hostname).await?,
        C::Access { target, output } => access(&target, output.json).await?,
        C::AccessAdd { target, user } => access_add(&target, &user).await?,
        C::AccessRemove { target, user } => access_remove(&target, &user).await?,
        C::Deploy {
            target,
            image,
            message,
        } => deploy(&target, &image, message).await?,
        C::KeysAdd { file, output } => keys_add(file, output.json).await?,
        C::KeysRemove { key } => keys_remove(&key).await?,
        C::Webhooks(command) => super::webhooks::run(command).await?,
        C::Builds(command) => super::builds::run(command).await?,
    }
    Ok(0)
}

fn app_of(target: &AppArgs) -> Result<String> {
    session::app(target.app.as_deref(), &target.remote)
}

/// The client and the app of a command that works on one app.
fn for_app(target: &AppArgs) -> Result<(ApiClient, String)> {
    let client = session::client()?;
    let app = app_of(target)?;
    Ok((client, app))
}

fn app_path(app: &str, rest: &str) -> String {
    format!("/apps/{}{rest}", segment(app))
}

fn flush() {
    let _ = std::io::stdout().flush();
}

/// Prints `<label>... `, runs `action`, then `done` or `failed` on the same line; prints
/// nothing when `quiet` (`--json`).
async fn announce<T>(
    label: &str,
    quiet: bool,
    action: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    if !quiet {
        out!("{label}... ");
        flush();
    }
    let result = action.await;
    if !quiet {
        outln!("{}", if result.is_ok() { "done" } else { "failed" });
    }
    result
}

/// Prints `-----> what...` now, so a slow operation shows what it is doing.
fn step(what: &str) {
    outln!("-----> {what}...");
    flush();
}

/// `       done, v3` after a step, with the app's current release when it has one.
async fn done_with_release(client: &ApiClient, app: &str) {
    let current = client
        .get_as::<App>(&app_path(app, ""))
        .await
        .ok()
        .and_then(|a| a.current_release);
    match current {
        Some(version) => outln!("       done, v{version}"),
        None => outln!("       done"),
    }
}

fn array(value: &Value) -> &[Value] {
    value.as_array().map(Vec::as_slice).unwrap_or_default()
}

fn version_of(text: &str) -> Result<u32> {
    text.trim()
        .trim_start_matches('v')
        .parse()
        .with_context(|| format!("{text:?} is not a release version: write v3 or 3"))
}

fn when(created_at: Option<&str>) -> String {
    created_at.map(output::ago).unwrap_or_default()
}

// ---- login ----------------------------------------------------------------------------

async fn login(user: Option<String>, token: Option<String>) -> Result<()> {
    let server = session::server()?;
    let interactive = std::io::stdin().is_terminal();
    let mut piped: Option<std::vec::IntoIter<String>> = None;
    let mut next_piped = |what: &str| -> Result<String> {
        let lines = match &mut piped {
            Some(lines) => lines,
            None => {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("reading the credentials from stdin")?;
                let lines: Vec<String> = text
                    .lines()
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty())
                    .collect();
                piped.insert(lines.into_iter())
            }
        };
        lines.next().with_context(|| {
            format!("no {what} given: pass --{what}, or give it on a line of stdin")
        })
    };
    let user = match user {
        Some(user) => user,
        None if interactive => {
            eprintln!("Enter your Empire credentials for {}.", server.url());
            eprint!("User: ");
            let _ = std::io::stderr().flush();
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the user name")?;
            line.trim().to_string()
        }
        None => next_piped("user")?,
    };
    let token = match token {
        Some(token) => token,
        None if interactive => {
            eprint!("Token: ");
            let _ = std::io::stderr().flush();
            run::read_hidden_line()?
        }
        None => next_piped("token")?,
    };
    let (user, token) = (user.trim().to_string(), token.trim().to_string());
    if user.is_empty() {
        bail!("no user name given");
    }
    if token.is_empty() {
        bail!("no token given (`empire tokens create {user}` on the gateway makes one)");
    }
    let client = ApiClient::new(
        server.clone(),
        Some(Auth {
            user: user.clone(),
            token: token.clone(),
        }),
    );
    let account = match client.get("/account").await {
        Ok(account) => account,
        Err(err) => match err.downcast_ref::<super::ApiFailure>() {
            Some(failure) if failure.status == hyper::StatusCode::UNAUTHORIZED => {
                bail!("{} refused the token: {}", server.url(), failure.message)
            }
            _ => return Err(err),
        },
    };
    let name = text(&account, "name");
    if name != user {
        bail!("that token belongs to {name}, not {user}");
    }
    let path = netrc::path()?;
    let updated = netrc::upsert(&netrc::read(&path)?, &server.host, &user, &token);
    netrc::write(&path, &updated)?;
    outln!("Logged in as {user}");
    eprintln!("Saved the token for {} in {}", server.host, path.display());
    Ok(())
}

fn logout() -> Result<()> {
    let server = session::server()?;
    let path = netrc::path()?;
    let (text, found) = netrc::remove(&netrc::read(&path)?, &server.host);
    if found {
        netrc::write(&path, &text)?;
        outln!("Logged out of {}", server.host);
    } else {
        outln!("Not logged in to {}", server.host);
    }
    Ok(())
}

async fn whoami(json: bool) -> Result<()> {
    let client = session::client()?;
    let account = client.get("/account").await?;
    if json {
        output::json(&account);
    } else {
        outln!("{}", text(&account, "name"));
    }
    Ok(())
}

// ---- apps -----------------------------------------------------------------------------

async fn apps(json: bool) -> Result<()> {
    let client = session::client()?;
    let list = client.get("/apps").await?;
    if json {
        output::json(&list);
        return Ok(());
    }
    let apps: Vec<App> = typed(&list)?;
    if apps.is_empty() {
        outln!("You have no apps. Create one with `empire create <name>`.");
        return Ok(());
    }
    header("Apps");
    let mut names: Vec<&str> = apps.iter().map(|a| a.name.as_str()).collect();
    names.sort_unstable();
    for name in names {
        outln!("{name}");
    }
    Ok(())
}

async fn create(name: Option<String>, remote: &str, no_remote: bool, json: bool) -> Result<()> {
    let client = session::client()?;
    let name = name.unwrap_or_else(|| {
        let id = uuid::Uuid::new_v4().simple().to_string();
        format!("app-{}", &id[..8])
    });
    if !json {
        out!("Creating {name}... ");
        flush();
    }
    let created = match client.post("/apps", json!({ "name": name })).await {
        Ok(created) => created,
        Err(err) => {
            if !json {
                outln!("failed");
            }
            return Err(err);
        }
    };
    let app: App = typed(&created)?;
    if json {
        output::json(&created);
    } else {
        outln!("done");
        let urls: Vec<&str> = [app.web_url.as_deref(), app.git_url.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        outln!("{}", urls.join(" | "));
    }
    if !no_remote
        && let Some(git_url) = &app.git_url
        && session::in_git_repo()
        && session::remote_app(remote).is_none()
    {
        session::add_remote(remote, git_url)?;
        if !json {
            outln!("Git remote {remote} added");
        }
    }
    Ok(())
}

async fn destroy(target: &AppArgs, confirm: Option<String>) -> Result<()> {
    let (client, app) = for_app(target)?;
    let confirm = match confirm {
        Some(confirm) => confirm,
        None if std::io::stdin().is_terminal() => {
            eprintln!(" !     This destroys {app}: its releases, processes, domains and images.");
            eprint!(" !     To go on, type the app name ({app}): ");
            let _ = std::io::stderr().flush();
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            line.trim().to_string()
        }
        None => bail!(
            "destroying {app} removes its releases, processes, domains and images for good: \
             pass --confirm {app}"
        ),
    };
    if confirm != app {
        bail!("--confirm {confirm} does not match the app {app}: nothing was destroyed");
    }
    let path = app_path(&app, "");
    let call = Call::new(Method::DELETE, &path).header("x-heroku-confirm", &confirm);
    announce(
        &format!("Destroying {app} (including all processes)"),
        false,
        client.call(call),
    )
    .await?;
    Ok(())
}

async fn info(target: &AppArgs, json: bool) -> Result<()> {
    let (client, app) = for_app(target)?;
    let value = client.get(&app_path(&app, "")).await?;
    if json {
        output::json(&value);
        return Ok(());
    }
    let found: App = typed(&value)?;
    let formation: Vec<Formation> = client
        .get_as(&app_path(&app, "/formation"))
        .await
        .unwrap_or_default();
    let dynos = formation
        .iter()
        .map(|f| format!("{}: {}", f.kind, f.quantity))
        .collect::<Vec<_>>()
        .join(", ");
    header(&found.name);
    let created = found
        .created_at
        .as_deref()
        .map(|at| format!("{at} ({})", output::ago(at)))
        .unwrap_or_default();
    let pairs = vec![
        ("Git URL".to_string(), found.git_url.unwrap_or_default()),
        ("Web URL".to_string(), found.web_url.unwrap_or_default()),
        (
            "Current Release".to_string(),
            found
                .current_release
                .map_or("none yet".to_string(), |v| format!("v{v}")),
        ),
        ("Dynos".to_string(), dynos),
        ("Created".to_string(), created),
    ];
    out!("{}", key_values(&pairs));
    Ok(())
}

// ---- config ---------------------------------------------------------------------------

fn config_pairs(config: &Value) -> Vec<(String, String)> {
    config
        .as_object()
        .map(|map| {
            map.iter()
                .map(|(k, v)| (k.clone(), v.as_str().map_or(v.to_string(), str::to_string)))
                .collect()
        })
        .unwrap_or_default()
}

async fn config(target: &AppArgs, shell: bool, json: bool) -> Result<()> {
    let (client, app) = for_app(target)?;
    let config = client.get(&app_path(&app, "/config-vars")).await?;
    if json {
        output::json(&config);
        return Ok(());
    }
    let pairs = config_pairs(&config);
    if shell {
        for (key, value) in pairs {
            outln!("{key}={}", shell_value(&value));
        }
        return Ok(());
    }
    header(&format!("{app} Config Vars"));
    if pairs.is_empty() {
        outln!("{app} has no config vars.");
    }
    out!("{}", key_values(&pairs));
    Ok(())
}

fn shell_value(value: &str) -> String {
    let plain = value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_./:,+@%=".contains(&b));
    if plain && !value.is_empty() {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

async fn config_get(target: &AppArgs, key: &str) -> Result<()> {
    let (client, app) = for_app(target)?;
    let config = client.get(&app_path(&app, "/config-vars")).await?;
    outln!("{}", text(&config, key));
    Ok(())
}

async fn config_set(target: &AppArgs, vars: &[String], json: bool) -> Result<()> {
    let mut changes = Map::new();
    for pair in vars {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("{pair:?} is not KEY=value"))?;
        if key.is_empty() {
            bail!("{pair:?} has no key: write KEY=value");
        }
        changes.insert(key.to_string(), Value::String(value.to_string()));
    }
    let (client, app) = for_app(target)?;
    let keys: Vec<String> = changes.keys().cloned().collect();
    if !json {
        step(&format!("Setting {} and restarting {app}", keys.join(", ")));
    }
    let config = client
        .patch(&app_path(&app, "/config-vars"), Value::Object(changes))
        .await?;
    if json {
        output::json(&config);
        return Ok(());
    }
    done_with_release(&client, &app).await;
    let pairs: Vec<(String, String)> = config_pairs(&config)
        .into_iter()
        .filter(|(k, _)| keys.contains(k))
        .collect();
    out!("{}", key_values(&pairs));
    Ok(())
}

async fn config_unset(target: &AppArgs, keys: &[String], json: bool) -> Result<()> {
    let (client, app) = for_app(target)?;
    let changes: Map<String, Value> = keys.iter().map(|k| (k.clone(), Value::Null)).collect();
    if !json {
        step(&format!(
            "Unsetting {} and restarting {app}",
            keys.join(", ")
        ));
    }
    let config = client
        .patch(&app_path(&app, "/config-vars"), Value::Object(changes))
        .await?;
    if json {
        output::json(&config);
    } else {
        done_with_release(&client, &app).await;
    }
    Ok(())
}

// ---- releases -------------------------------------------------------------------------

async fn releases(target: &AppArgs, num: usize, json: bool) -> Result<()> {
    let (client, app) = for_app(target)?;
    let list = client.get(&app_path(&app, "/releases")).await?;
    let mut items: Vec<Value> = array(&list).to_vec();
    items.sort_by_key(|r| std::cmp::Reverse(r["version"].as_u64().unwrap_or(0)));
    items.truncate(num);
    if json {
        output::json(&Value::Array(items));
        return Ok(());
    }
    let releases: Vec<Release> = items.iter().map(typed).collect::<Result<_>>()?;
    let current = releases.iter().find(|r| r.current).map(|r| r.version);
    match current {
        Some(v) => header(&format!("{app} Releases - Current: v{v}")),
        None => header(&format!("{app} Releases")),
    }
    if releases.is_empty() {
        outln!("{app} has no releases yet.");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = releases
        .iter()
        .map(|r| {
            let description = match r.status.as_str() {
                "succeeded" | "" => r.description.clone(),
                status => format!("{} ({status})", r.description),
            };
            vec![
                format!("v{}", r.version),
                description,
                r.user.name.clone(),
                when(r.created_at.as_deref()),
            ]
        })
        .collect();
    out!("{}", table(&rows));
    Ok(())
}

async fn release_info(target: &AppArgs, version: Option<&str>, json: bool) -> Result<()> {
    let (client, app) = for_app(target)?;
    let version = match version {
        Some(v) => version_of(v)?,
        None => client
            .get_as::<App>(&app_path(&app, ""))
            .await?
            .current_release
            .with_context(|| format!("{app} has no releases yet"))?,
    };
    let value = client
        .get(&app_path(&app, &format!("/releases/{version}")))
        .await?;
    if json {
        output::json(&value);
        return Ok(());
    }
    let release: Release = typed(&value)?;
    header(&format!("Release v{}", release.version));
    let mut status = release.status.clone();
    if release.current {
        status.push_str(" (current)");
    }
    let mut pairs = vec![
        ("By".to_string(), release.user.name.clone()),
        ("Change".to_string(), release.description.clone()),
        ("Status".to_string(), status),
        (
            "When".to_string(),
            release
                .created_at
                .as_deref()
                .map(|at| format!("{at} ({})", output::ago(at)))
                .unwrap_or_default(),
        ),
    ];
    if let Some(commit) = &release.commit {
        pairs.push(("Commit".to_string(), commit.clone()));
    }
    if let Some(image) = &release.image {
        pairs.push(("Image".to_string(), image.clone()));
    }
    if let Some(types) = &release.process_types
        && !types.is_empty()
    {
        let names: Vec<&str> = types.keys().map(String::as_str).collect();
        pairs.push(("Processes".to_string(), names.join(", ")));
    }
    if let Some(failure) = &release.failure {
        pairs.push(("Failure".to_string(), failure.clone()));
    }
    out!("{}", key_values(&pairs));
    if let Ok(config) = client
        .get(&app_path(&app, &format!("/config-vars/{version}")))
        .await
    {
        let pairs = config_pairs(&config);
        if !pairs.is_empty() {
            outln!();
            header(&format!("v{version} Config Vars"));
            out!("{}", key_values(&pairs));
        }
    }
    let log = client
        .get_text(&app_path(&app, &format!("/releases/{version}/log")))
        .await?;
    outln!();
    header(&format!("v{version} Build Log"));
    if log.trim().is_empty() {
        outln!("(no log)");
    } else {
        out!("{log}");
        if !log.ends_with('\n') {
            outln!();
        }
    }
    Ok(())
}

async fn rollback(target: &AppArgs, version: Option<&str>, json: bool) -> Result<()> {
    let (client, app) = for_app(target)?;
    let version = match version {
        Some(v) => version_of(v)?,
        None => {
            let list: Vec<Release> = client.get_as(&app_path(&app, "/releases")).await?;
            let current = list
                .iter()
                .find(|r| r.current)
                .map(|r| r.version)
                .with_context(|| format!("{app} has no current release to roll back from"))?;
            list.iter()
                .filter(|r| r.version < current && r.status == "succeeded")
                .map(|r| r.version)
                .max()
                .with_context(|| {
                    format!("{app} has no good release before v{current} to roll back to")
                })?
        }
    };
    if !json {
        step(&format!("Rolling back {app} to v{version}"));
    }
    let release = client
        .post(
            &app_path(&app, "/releases"),
            json!({ "release": version.to_string() }),
        )
        .await?;
    if json {
        output::json(&release);
        return Ok(());
    }
    let release: Release = typed(&release)?;
    outln!("       done, v{}", release.version);
    outln!(
        "Rolled back {app} to v{version} as v{}: its image and config vars.",
        release.version
    );
    Ok(())
}

// ---- processes ------------------------------------------------------------------------

async fn ps(target: &AppArgs, json: bool) -> Result<()> {
    let (client, app) = for_app(target)?;
    let list = client.get(&app_path(&app, "/dynos")).await?;
    if json {
        output::json(&list);
        return Ok(());
    }
    let dynos: Vec<Dyno> = typed(&list)?;
    if dynos.is_empty() {
        outln!("No processes run for {app}.");
        return Ok(());
    }
    let mut groups: BTreeMap<(u8, String), Vec<&Dyno>> = BTreeMap::new();
    for dyno in &dynos {
        let order = match dyno.kind.as_str() {
            "web" => 0,
            "run" => 2,
            _ => 1,
        };
        groups
            .entry((order, dyno.kind.clone()))
            .or_default()
            .push(dyno);
    }
    let mut first = true;
    for ((_, kind), mut members) in groups {
        members.sort_by_key(|d| instance_order(&d.name));
        if !first {
            outln!();
        }
        first = false;
        let size = members
            .iter()
            .find_map(|d| d.size.clone())
            .map(|s| format!(" ({s})"))
            .unwrap_or_default();
        let command = members
            .iter()
            .find_map(|d| d.command.clone())
            .map(|c| format!(": {c}"))
            .unwrap_or_default();
        header(&format!("{kind}{size}{command} ({})", members.len()));
        let rows: Vec<Vec<String>> = members
            .iter()
            .map(|d| {
                let release = d
                    .release
                    .as_ref()
                    .and_then(|r| r.version)
                    .map(|v| format!("v{v}"))
                    .unwrap_or_default();
                vec![
                    format!("{}:", d.name),
                    d.state.clone(),
                    release,
                    when(d.created_at.as_deref()),
                ]
            })
            .collect();
        out!("{}", table(&rows));
    }
    Ok(())
}

/// `web.10` after `web.9`.
fn instance_order(name: &str) -> (String, u64, String) {
    match name.rsplit_once('.') {
        Some((kind, n)) => match n.parse() {
            Ok(n) => (kind.to_string(), n, String::new()),
            Err(_) => (kind.to_string(), u64::MAX, n.to_string()),
        },
        None => (name.to_string(), 0, String::new()),
    }
}

/// `web=3`, `web=3:2X`, `web=2X` → a formation update.
pub fn scale_update(change: &str) -> Result<Value> {
    let (kind, spec) = change
        .split_once('=')
        .with_context(|| format!("{change:?} is not TYPE=COUNT[:SIZE] (e.g. web=3 or web=2:2X)"))?;
    if kind.is_empty() || spec.is_empty() {
        bail!("{change:?} is not TYPE=COUNT[:SIZE] (e.g. web=3 or web=2:2X)");
    }
    let (count, size) = match spec.split_once(':') {
        Some((count, size)) => (Some(count), Some(size)),
        None if spec.bytes().all(|b| b.is_ascii_digit()) => (Some(spec), None),
        None => (None, Some(spec)),
    };
    let mut update = json!({ "process": kind });
    if let Some(count) = count.filter(|c| !c.is_empty()) {
        let quantity: u32 = count
            .parse()
            .with_context(|| format!("{count:?} in {change:?} is not a count"))?;
        update["quantity"] = json!(quantity);
    }
    if let Some(size) = size.filter(|s| !s.is_empty()) {
        update["size"] = json!(size);
    }
    Ok(update)
}

async fn scale(target: &AppArgs, changes: &[String], json: bool) -> Result<()> {
    let (client, app) = for_app(target)?;
    let path = app_path(&app, "/formation");
    if changes.is_empty() {
        let value = client.get(&path).await?;
        if json {
            output::json(&value);
            return Ok(());
        }
        let formation: Vec<Formation> = typed(&value)?;
        if formation.is_empty() {
            outln!("{app} has no process types yet: deploy it first.");
        }
        let words: Vec<String> = formation
            .iter()
            .map(|f| format!("{}={}:{}", f.kind, f.quantity, f.size))
            .collect();
        outln!("{}", words.join(" "));
        return Ok(());
    }
    let updates = changes
        .iter()
        .map(|c| scale_update(c))
        .collect::<Result<Vec<_>>>()?;
    if !json {
        step(&format!("Scaling processes of {app}"));
    }
    let answer = client.patch(&path, json!({ "updates": updates })).await?;
    if json {
        output::json(&answer);
        return Ok(());
    }
    let formation: Vec<Formation> = typed(&answer)?;
    let now: Vec<String> = formation
        .iter()
        .map(|f| format!("{} at {}:{}", f.kind, f.quantity, f.size))
        .collect();
    outln!("       done, now running {}", and_list(&now));
    Ok(())
}

async fn restart(target: &AppArgs, dyno: Option<&str>) -> Result<()> {
    let (client, app) = for_app(target)?;
    let (what, path) = match dyno {
        Some(d) if d.contains('.') => (
            d.to_string(),
            app_path(&app, &format!("/dynos/{}", segment(d))),
        ),
        Some(d) => (
            format!("{d} processes"),
            app_path(&app, &format!("/dynos/{}", segment(d))),
        ),
        None => ("all processes".to_string(), app_path(&app, "/dynos")),
    };
    step(&format!("Restarting {what} of {app}"));
    client.delete(&path).await?;
    outln!("       done");
    Ok(())
}

async fn logs(target: &AppArgs, num: u32, process: Option<String>, follow: bool) -> Result<()> {
    let (client, app) = for_app(target)?;
    let mut body = json!({ "lines": num, "tail": follow });
    if let Some(process) = process {
        body["dyno"] = json!(process);
    }
    let response = client
        .checked(Call::new(Method::POST, &app_path(&app, "/log-sessions")).json(body))
        .await?;
    stream_to_stdout(&mut response.into_body()).await?;
    Ok(())
}

// ---- domains and access ---------------------------------------------------------------

async fn domains(target: &AppArgs, json: bool) -> Result<()> {
    let (client, app) = for_app(target)?;
    let list = client.get(&app_path(&app, "/domains")).await?;
    if json {
        output::json(&list);
        return Ok(());
    }
    header(&format!("{app} Custom Domains"));
    if array(&list).is_empty() {
        outln!("{app} has no custom domains.");
        return Ok(());
    }
    let mut rows = vec![vec!["Domain Name".to_string(), "Added".to_string()]];
    for domain in array(&list) {
        rows.push(vec![
            text(domain, "hostname"),
            when(domain["created_at"].as_str()),
        ]);
    }
    out!("{}", table(&rows));
    Ok(())
}

async fn domains_add(target: &AppArgs, hostname: &str, json: bool) -> Result<()> {
    let (client, app) = for_app(target)?;
    let domain = announce(
        &format!("Adding {hostname} to {app}"),
        json,
        client.post(&app_path(&app, "/domains"), json!({ "hostname": hostname })),
    )
    .await?;
    if json {
        output::json(&domain);
    }
    Ok(())
}

async fn domains_remove(target: &AppArgs, hostname: &str) -> Result<()> {
    let (client, app) = for_app(target)?;
    announce(
        &format!("Removing {hostname} from {app}"),
        false,
        client.delete(&app_path(&app, &format!("/domains/{}", segment(hostname)))),
    )
    .await?;
    Ok(())
}

async fn access(target: &AppArgs, json: bool) -> Result<()> {
    let (client, app) = for_app(target)?;
    let list = client.get(&app_path(&app, "/collaborators")).await?;
    if json {
        output::json(&list);
        return Ok(());
    }
    header(&format!("{app} Access"));
    for collaborator in array(&list) {
        let name = collaborator["user"]["name"]
            .as_str()
            .map_or_else(|| text(collaborator, "id"), str::to_string);
        outln!("{name}");
    }
    Ok(())
}

async fn access_add(target: &AppArgs, user: &str) -> Result<()> {
    let (client, app) = for_app(target)?;
    announce(
        &format!("Adding {user} access to {app}"),
        false,
        client.put(&app_path(
            &app,
            &format!("/collaborators/{}", segment(user)),
        )),
    )
    .await?;
    Ok(())
}

async fn access_remove(target: &AppArgs, user: &str) -> Result<()> {
    let (client, app) = for_app(target)?;
    let path = app_path(&app, &format!("/collaborators/{}", segment(user)));
    announce(
        &format!("Removing {user} access from {app}"),
        false,
        client.delete(&path),
    )
    .await?;
    Ok(())
}

// ---- deploy ---------------------------------------------------------------------------

async fn deploy(target: &AppArgs, image: &str, message: Option<String>) -> Result<()> {
    let client = session::client()?;
    let app = match &target.app {
        Some(app) => Some(app.clone()),
        None => session::remote_app(&target.remote),
    };
    let path = match &app {
        Some(app) => app_path(app, "/deploys"),
        None => "/deploys".to_string(),
    };
    let mut call = Call::new(Method::POST, &path).json(json!({ "image": image }));
    if let Some(message) = message {
        call = call.header("commit-message", message);
    }
    let response = client.checked(call).await?;
    let mut body = response.into_body();
    let mut pending: Vec<u8> = Vec::new();
    let mut state = DeployState::default();
    while let Some(chunk) = next_chunk(&mut body).await? {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            state.line(&line);
        }
    }
    if !pending.is_empty() {
        state.line(&pending);
    }
    if let Some(error) = state.error {
        bail!("{error}");
    }
    if !state.finished {
        bail!("the deploy stream ended before the deploy did: see `empire releases`");
    }
    Ok(())
}

/// What a deploy stream said so far.
#[derive(Debug, Default)]
struct DeployState {
    error: Option<String>,
    finished: bool,
}

impl DeployState {
    /// One line of the stream: `{"stream": …}` and `{"status": …}` are shown,
    /// `{"error": …}` is kept for the end, `{"aux": …}` (the release and URL, which the
    /// progress already showed) is passed over.
    fn line(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        let Ok(message) = serde_json::from_str::<Value>(text) else {
            outln!("{text}");
            flush();
            return;
        };
        if let Some(stream) = message["stream"].as_str() {
            out!("{stream}");
        } else if let Some(status) = message["status"].as_str() {
            outln!("{status}");
            self.finished = true;
        } else if let Some(error) = message["error"].as_str() {
            self.error = Some(error.to_string());
        }
        flush();
    }
}

// ---- keys -----------------------------------------------------------------------------

/// `empire keys`: the SSH keys of the logged-in user.
pub async fn keys(json: bool) -> Result<()> {
    let client = session::client()?;
    let list = client.get("/account/keys").await?;
    if json {
        output::json(&list);
        return Ok(());
    }
    let keys: Vec<Key> = typed(&list)?;
    header("SSH Keys");
    if keys.is_empty() {
        outln!("You have no SSH keys. Add one with `empire keys:add`.");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![
                k.fingerprint.clone(),
                k.public_key
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                k.comment.clone(),
            ]
        })
        .collect();
    out!("{}", table(&rows));
    Ok(())
}

fn default_key_file() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set: give the key file")?;
    let ssh = Path::new(&home).join(".ssh");
    ["id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub"]
        .iter()
        .map(|name| ssh.join(name))
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "no public key in {} (id_ed25519.pub, id_ecdsa.pub, id_rsa.pub): make one with \
                 `ssh-keygen -t ed25519` or give the file",
                ssh.display()
            )
        })
}

async fn keys_add(file: Option<PathBuf>, json: bool) -> Result<()> {
    let file = match file {
        Some(file) => file,
        None => default_key_file()?,
    };
    let public_key = if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the key from stdin")?;
        text
    } else {
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?
    };
    let client = session::client()?;
    if !json {
        out!("Uploading {} SSH key... ", file.display());
        flush();
    }
    let key = match client
        .post("/account/keys", json!({ "public_key": public_key.trim() }))
        .await
    {
        Ok(key) => key,
        Err(err) => {
            if !json {
                outln!("failed");
            }
            return Err(err);
        }
    };
    if json {
        output::json(&key);
    } else {
        outln!("done, {}", text(&key, "fingerprint"));
    }
    Ok(())
}

async fn keys_remove(key: &str) -> Result<()> {
    let client = session::client()?;
    let fingerprint = if key.starts_with("SHA256:") || key.starts_with("MD5:") {
        key.to_string()
    } else {
        let keys: Vec<Key> = client.get_as("/account/keys").await?;
        let matching: Vec<&Key> = keys.iter().filter(|k| k.comment == key).collect();
        match matching.as_slice() {
            [one] => one.fingerprint.clone(),
            [] => {
                bail!("you have no SSH key {key:?}: give its fingerprint as `empire keys` shows it")
            }
            _ => bail!("several of your SSH keys have the comment {key:?}: give the fingerprint"),
        }
    };
    announce(
        &format!("Removing {fingerprint} SSH key"),
        false,
        client.delete(&format!("/account/keys/{}", segment(&fingerprint))),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_scale_changes() {
        assert_eq!(
            scale_update("web=3").unwrap(),
            json!({ "process": "web", "quantity": 3 })
        );
        assert_eq!(
            scale_update("worker=2:2X").unwrap(),
            json!({ "process": "worker", "quantity": 2, "size": "2X" })
        );
        assert_eq!(
            scale_update("web=2X").unwrap(),
            json!({ "process": "web", "size": "2X" })
        );
        for bad in ["web", "=3", "web=", "web=-1:2X", "web=x:2X"] {
            assert!(scale_update(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn orders_instances_by_number() {
        let mut names = vec!["web.10", "web.2", "web.1"];
        names.sort_by_key(|n| instance_order(n));
        assert_eq!(names, ["web.1", "web.2", "web.10"]);
    }

    #[test]
    fn reads_versions() {
        assert_eq!(version_of("v3").unwrap(), 3);
        assert_eq!(version_of("12").unwrap(), 12);
        assert!(version_of("latest").is_err());
    }

    #[test]
    fn quotes_config_values_for_a_shell() {
        assert_eq!(shell_value("abc"), "abc");
        assert_eq!(shell_value("a b"), "'a b'");
        assert_eq!(shell_value(""), "''");
        assert_eq!(shell_value("it's"), r"'it'\''s'");
    }
}
