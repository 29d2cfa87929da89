//! `empire server`: wires the store, builder, scheduler, pipeline, gitd, router and API.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use async_trait::async_trait;
use empire_builder::{DockerBuilder, EcrSettings, Registry, RegistryAuth, RegistryConfig};
use empire_core::app::AppName;
use empire_core::pipeline::{DeployPipeline, Pipeline, PipelineConfig};
use empire_core::scheduler::Scheduler;
use empire_core::service::{AppData, Platform};
use empire_deployer::{
    DockerScheduler, DockerSchedulerOptions, ImageRegistry, RegistryLogin, Router,
};
use empire_gitd::{GitServer, GitServerConfig, HookServer};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::admin::open_store;
use crate::api::{ApiConfig, ApiState};
use crate::config::{
    GlobalArgs, RegistryAuthKind, RegistrySettings, SchedulerKind, ServerArgs, ServerSettings,
};

/// Runs the gateway until SIGTERM or SIGINT, then drains running deploys.
pub async fn run(global: &GlobalArgs, args: ServerArgs) -> Result<()> {
    let settings = ServerSettings::resolve(global, args)?;
    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("creating data dir {}", settings.data_dir.display()))?;
    let store = open_store(global).await?;
    let gateway_id = gateway_id(&settings.data_dir)?;

    let host_key = empire_gitd::load_or_generate_host_key(&settings.host_key)
        .with_context(|| format!("loading the SSH host key {}", settings.host_key.display()))?;

    let router = Router::new(settings.apps_domain.clone());
    // One registry for both: the builder pushes to it, the scheduler pulls from it what
    // the engine lacks, with the same login.
    let registry = match &settings.registry {
        Some(registry) => Some(registry_of(registry).await?),
        None => None,
    };
    let scheduler: Arc<dyn Scheduler> = match settings.scheduler {
        SchedulerKind::Docker => DockerScheduler::connect(
            router.clone(),
            DockerSchedulerOptions {
                boot_timeout: settings.boot_timeout,
                apps_domain: settings.apps_domain.clone(),
                router_port: settings.router_listen.port(),
                namespace: gateway_id.clone(),
                registry: registry
                    .clone()
                    .map(|r| Arc::new(PullFrom(r)) as Arc<dyn ImageRegistry>),
                ..DockerSchedulerOptions::default()
            },
        )
        .await
        .map(Arc::new)
        .context("connecting to the Docker engine (is dockerd running? DOCKER_HOST?)")?,
        SchedulerKind::Ecs => {
            ecs_scheduler(&settings, router.clone(), &gateway_id, &registry).await?
        }
    };
    let builder = DockerBuilder::connect()
        .await
        .context("connecting the builder to the Docker engine")?;
    let mut buildpacks = builder.buildpack_config().clone();
    if let Some(image) = &settings.stack_build_image {
        buildpacks.build_image = image.clone();
    }
    if let Some(image) = &settings.stack_run_image {
        buildpacks.run_image = image.clone();
    }
    if let Some(dir) = &settings.buildpacks_dir {
        buildpacks.buildpacks_dir = dir.clone();
    }
    let mut builder = builder.with_buildpack_config(buildpacks);
    if let Some(registry) = registry {
        builder = builder.with_registry(registry);
    }
    let builder = Arc::new(builder);
    let pipeline = Arc::new(DeployPipeline::new(
        store.clone(),
        builder.clone(),
        scheduler.clone(),
        PipelineConfig {
            gateway_id: gateway_id.clone(),
            lock_timeout: settings.lock_timeout,
            url_template: Some(app_url_template(&settings)),
            require_message: settings.require_message,
            ..PipelineConfig::default()
        },
    ));
    pipeline
        .recover()
        .await
        .context("restoring the apps that were running")?;
    let platform = Arc::new(
        Platform::new(
            store.clone(),
            scheduler.clone(),
            pipeline.clone(),
            Arc::new(AppFiles {
                repos_dir: settings.data_dir.join("repos"),
                builder: builder.clone(),
            }),
        )
        .with_builds(
            webhook_builds(&settings, &gateway_id, store.clone(), pipeline.clone()).await?,
        ),
    );
    let build_tasks = platform
        .builds_runner()
        .map(|b| b.tasks().clone())
        .unwrap_or_default();
    platform
        .restore_domains()
        .await
        .context("restoring the apps' custom domains")?;

    let shutdown = CancellationToken::new();
    // Outgoing webhooks: deliveries queued with their events, resumed after a restart.
    let outgoing_task = tokio::spawn(
        crate::outgoing::Dispatcher::new(
            store.clone(),
            crate::outgoing::DispatchConfig {
                owner: gateway_id.clone(),
                timeout: settings.webhook_timeout,
                max_attempts: settings.webhook_attempts,
                backoff: settings.webhook_backoff,
                ..crate::outgoing::DispatchConfig::default()
            },
        )
        .run(shutdown.clone()),
    );
    let ssh_listener = bind(settings.ssh_listen, "SSH").await?;
    let http_listener = bind(settings.http_listen, "HTTP").await?;
    let router_listener = bind(settings.router_listen, "router").await?;
    let hook_socket = settings.data_dir.join("hook.sock");
    let hook_listener = empire_gitd::hook::bind(&hook_socket)
        .with_context(|| format!("binding the hook socket {}", hook_socket.display()))?;

    let hooks = Arc::new(HookServer::new(pipeline.clone() as Arc<dyn Pipeline>));
    let hooks_task = tokio::spawn({
        let hooks = hooks.clone();
        let shutdown = shutdown.clone();
        async move { hooks.serve(hook_listener, shutdown).await }
    });
    let git = GitServer::new(
        GitServerConfig {
            repos_dir: settings.data_dir.join("repos"),
            hook_program: std::env::current_exe().context("locating the empire binary")?,
            hook_socket: hook_socket.clone(),
            autocreate: settings.autocreate,
            keepalive: Duration::from_secs(15),
        },
        host_key,
        store.clone(),
        pipeline.clone(),
    )
    .with_platform(platform.clone());
    let sessions = git.sessions();
    let host_fingerprint = git.host_key_fingerprint();
    let git_task = tokio::spawn(git.run(ssh_listener, shutdown.clone()));
    let router_task = tokio::spawn(router.clone().serve(router_listener, shutdown.clone()));
    let api = ApiState::new(
        platform,
        ApiConfig {
            app_url_template: Some(app_url_template(&settings)),
            ssh_port: settings.ssh_listen.port(),
            webhook_max_body: Some(settings.webhook_max_body),
        },
        shutdown.clone(),
    );
    let api_tasks = api.tasks().clone();
    let http_task = tokio::spawn(crate::http::serve(http_listener, api, shutdown.clone()));

    print_banner(&settings, &host_fingerprint);

    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = sigterm.recv() => {}
        _ = sigint.recv() => {}
    }
    let running = hooks.active() + api_tasks.len();
    eprintln!(
        "Shutting down: no new pushes; waiting up to {}s for {running} running deploy(s)",
        settings.drain_timeout.as_secs()
    );
    shutdown.cancel();
    let drained = tokio::time::timeout(settings.drain_timeout, async {
        hooks.drain(settings.drain_timeout).await;
        // Deploys, config changes, scaling, restarts and rollbacks started by the API.
        api_tasks.close();
        api_tasks.wait().await;
        // Builds started by webhooks.
        build_tasks.close();
        build_tasks.wait().await;
        // Let git report each finished push to its client before the sessions close.
        sessions.close();
        sessions.wait().await;
    })
    .await;
    if drained.is_err() {
        eprintln!("Drain timeout reached with pushes still running; exiting");
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = hooks_task.await;
        let _ = git_task.await;
        let _ = http_task.await;
        let _ = outgoing_task.await;
    })
    .await;
    // Build and slug containers the last builds left to remove in the background.
    let _ = tokio::time::timeout(Duration::from_secs(10), builder.finish_removals()).await;
    router_task.abort();
    let _ = std::fs::remove_file(&hook_socket);
    Ok(())
}

/// The runner of webhook builds: commits fetched with git into the apps' repositories
/// and deployed by the pipeline. Builds a previous run left unfinished are failed.
async fn webhook_builds(
    settings: &ServerSettings,
    gateway_id: &str,
    store: Arc<dyn empire_core::store::Store>,
    pipeline: Arc<DeployPipeline>,
) -> Result<Arc<empire_core::service::builds::Builds>> {
    let fetcher = empire_gitd::GitFetcher::new(
        settings.data_dir.join("repos"),
        std::env::current_exe().context("locating the empire binary")?,
        settings.git_https_token.clone(),
    );
    let builds = empire_core::service::builds::Builds::new(
        store,
        pipeline,
        Arc::new(fetcher),
        empire_core::service::builds::BuildsConfig {
            webhook_base_url: Some(settings.public_url.clone()),
            gateway_id: Some(gateway_id.to_string()),
        },
    );
    builds
        .recover()
        .await
        .context("failing the webhook builds a previous run left unfinished")?;
    Ok(builds)
}

/// What an app keeps outside the store and the scheduler: its git repository, build
/// cache and local images.
struct AppFiles {
    repos_dir: std::path::PathBuf,
    builder: Arc<DockerBuilder>,
}

#[async_trait]
impl AppData for AppFiles {
    async fn remove(&self, app: &AppName) -> empire_core::Result<()> {
        self.builder.remove_cache(app).await?;
        self.builder.prune_images(app, &[]).await?;
        self.builder.prune_registry_tags(app, &[]).await?;
        let repo = self.repos_dir.join(format!("{app}.git"));
        match tokio::fs::remove_dir_all(&repo).await {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(empire_core::Error::backend(
                "filesystem",
                format!("removing {}: {err}", repo.display()),
            )),
        }
    }
}

/// The registry built images are pushed to. ECR credentials come from the standard AWS
/// sources (`AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT_URL`, an instance role, …).
async fn registry_of(settings: &RegistrySettings) -> Result<Registry> {
    let auth = match &settings.auth {
        RegistryAuthKind::None => RegistryAuth::None,
        RegistryAuthKind::Basic { username, password } => RegistryAuth::Basic {
            username: username.clone(),
            password: password.clone(),
        },
        RegistryAuthKind::Ecr => RegistryAuth::Ecr(EcrSettings::default()),
    };
    Ok(Registry::new(RegistryConfig {
        address: settings.address.clone(),
        endpoint: settings.endpoint.clone(),
        auth,
    })
    .await?)
}

/// The builder's registry as the docker scheduler pulls from it: the same name,
/// endpoint and login (an ECR token is fetched once for both).
#[derive(Debug)]
struct PullFrom(Registry);

#[async_trait]
impl ImageRegistry for PullFrom {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn endpoint(&self) -> &str {
        self.0.endpoint()
    }

    async fn login(&self, renew: bool) -> Result<Option<RegistryLogin>, String> {
        let login = self.0.pull_login(renew).await?;
        Ok(login.map(|(username, password)| RegistryLogin { username, password }))
    }
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the {what} listener on {addr}"))
}

/// The gateway's id, generated into the data dir on first start so a restart knows which
/// containers and deploys were its own.
fn gateway_id(data_dir: &Path) -> Result<String> {
    let path = data_dir.join("gateway-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        _ => {
            let id = format!("empire-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
            std::fs::write(&path, format!("{id}\n"))
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(id)
        }
    }
}

fn app_url_template(settings: &ServerSettings) -> String {
    let port = settings.router_listen.port();
    if port == 80 {
        format!("http://{{app}}.{}/", settings.apps_domain)
    } else {
        format!("http://{{app}}.{}:{port}/", settings.apps_domain)
    }
}

fn print_banner(settings: &ServerSettings, host_fingerprint: &str) {
    let ssh_port = settings.ssh_listen.port();
    println!("Empire is running");
    println!("  data dir   {}", settings.data_dir.display());
    println!(
        "  ssh git    {} (host key {host_fingerprint})",
        settings.ssh_listen
    );
    println!("  http api   http://{}/", settings.http_listen);
    println!(
        "  router     {} → {}",
        settings.router_listen,
        app_url_template(settings).replace("{app}", "<app>")
    );
    if let Some(registry) = &settings.registry {
        let via = registry
            .endpoint
            .as_deref()
            .map(|endpoint| format!(" via {endpoint}"))
            .unwrap_or_default();
        let auth = match registry.auth {
            RegistryAuthKind::None => "none",
            RegistryAuthKind::Basic { .. } => "basic",
            RegistryAuthKind::Ecr => "ecr",
        };
        println!("  registry   {}{via} (auth {auth})", registry.address);
    }
    println!();
    println!(
        "Add your key:  empire --data-dir {} keys add you ~/.ssh/id_ed25519.pub",
        settings.data_dir.display()
    );
    println!("Then push:     git remote add empire ssh://git@localhost:{ssh_port}/<app>.git");
    println!("               git push empire main");
}

/// `--scheduler ecs`: ECS services for releases; attached one-off processes still run
/// on this gateway's Docker engine (with the registry login to pull the release image).
async fn ecs_scheduler(
    settings: &ServerSettings,
    router: Arc<Router>,
    gateway_id: &str,
    registry: &Option<Registry>,
) -> Result<Arc<dyn Scheduler>> {
    let Some(config) = settings.ecs.clone() else {
        anyhow::bail!("--scheduler ecs: the ECS settings are missing");
    };
    if registry.is_none() {
        anyhow::bail!(
            "--scheduler ecs needs --registry: ECS pulls release images from a registry (ECR)"
        );
    }
    let local = DockerScheduler::connect(
        router,
        DockerSchedulerOptions {
            apps_domain: settings.apps_domain.clone(),
            namespace: gateway_id.to_string(),
            registry: registry
                .clone()
                .map(|r| Arc::new(PullFrom(r)) as Arc<dyn ImageRegistry>),
            ..DockerSchedulerOptions::default()
        },
    )
    .await
    .context("connecting to the Docker engine for attached runs (is dockerd running?)")?;
    let scheduler = empire_deployer::ecs::EcsScheduler::connect(config)
        .await
        .context("setting up the ecs scheduler")?
        .with_local_runner(Arc::new(local));
    Ok(Arc::new(scheduler))
}
