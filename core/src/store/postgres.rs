//! The PostgreSQL store: several gateways share one database.
//!
//! A [`PostgresStore`] holds a small pool of connections (`deadpool-postgres` over
//! `tokio-postgres`). Connections are made without TLS: point it at a server on
//! loopback or on a private network you trust (a `sslmode=require` URL fails to connect).
//!
//! Every method is one transaction (READ COMMITTED). What two gateways could race on is
//! settled by row locks in the database, never in the process:
//! - release numbering is `UPDATE apps SET last_version = last_version + 1 … RETURNING`,
//!   so concurrent deploys of one app wait for each other's number;
//! - leases are one `INSERT … ON CONFLICT … DO UPDATE … WHERE expired or ours`, compared
//!   against the database clock (`now()`), so no gateway's clock matters;
//! - state changes lock the app row, then the release row (always in that order);
//! - the first user (an admin) is created under a table lock.
//!
//! A transaction that still ends in a deadlock or serialization failure is retried a few
//! times. The schema is migrated on [`PostgresStore::connect`], under an advisory lock so
//! that gateways starting together migrate once; applied migrations are listed in
//! `schema_migrations`.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime,
};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{Json, ToSql};
use tokio_postgres::{NoTls, Row};

use super::errors::{
    bad_transition, collaborator_not_found, domain_not_found, domain_taken, image_fixed,
    lease_lost, release_not_found, release_succeeded, token_not_found, token_taken, unknown_token,
};
use super::{LeaseHolder, ReleaseBuild, Store, validate};
use crate::app::{App, AppName};
use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::event::{Event, NewEvent};
use crate::formation::{ProcessFormation, ProcessSize};
use crate::release::{ConfigVars, NewRelease, ProcessTypes, Release, ReleaseStatus};
use crate::user::{ApiToken, SshKey, User};

/// The schema migrations, applied in order and recorded in `schema_migrations`.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_init",
        include_str!("migrations/postgres/0001_init.sql"),
    ),
    (
        "0002_builds",
        include_str!("migrations/postgres/0002_builds.sql"),
    ),
    (
        "0003_webhooks",
        include_str!("migrations/postgres/0003_webhooks.sql"),
    ),
];

/// The advisory lock key migrations run under ("empire" in ASCII).
const MIGRATION_LOCK: i64 = 0x0000_656d_7069_7265;

/// Connections per store (per gateway).
const POOL_SIZE: usize = 8;

/// How often a transaction that deadlocked or failed to serialize is tried.
const ATTEMPTS: u32 = 5;

/// The PostgreSQL implementation of [`super::Store`], for several gateways sharing one
/// database.
///
/// Holds a pool of up to 8 connections, made without TLS (use a server on loopback or a
/// network you trust). Cloning is cheap and shares the pool.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    target: String,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgresStore({})", self.target)
    }
}

/// What a step inside a transaction can fail with: a store error, or a database error
/// that may be worth a retry.
#[derive(Debug)]
enum Fail {
    Core(Error),
    Db(tokio_postgres::Error),
}

type PgResult<T> = std::result::Result<T, Fail>;

impl From<Error> for Fail {
    fn from(err: Error) -> Self {
        Fail::Core(err)
    }
}

impl From<tokio_postgres::Error> for Fail {
    fn from(err: tokio_postgres::Error) -> Self {
        Fail::Db(err)
    }
}

impl From<PoolError> for Fail {
    fn from(err: PoolError) -> Self {
        match err {
            PoolError::Backend(err) => Fail::Db(err),
            other => Fail::Core(Error::Store(format!(
                "no PostgreSQL connection: {}",
                describe(&other)
            ))),
        }
    }
}

impl From<Fail> for Error {
    fn from(fail: Fail) -> Self {
        match fail {
            Fail::Core(err) => err,
            Fail::Db(err) => Error::from(err),
        }
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(err: tokio_postgres::Error) -> Self {
        match err.as_db_error() {
            Some(db) => Error::Store(format!("postgres: {} ({})", db.message(), db.code().code())),
            None => Error::Store(format!("postgres: {}", describe(&err))),
        }
    }
}

impl Fail {
    /// A deadlock or serialization failure: the whole transaction may simply run again.
    fn is_retryable(&self) -> bool {
        matches!(self, Fail::Db(err) if matches!(
            err.code(),
            Some(code) if *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED
        ))
    }
}

/// An error with its chain of causes, `outer: inner: …`.
fn describe(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Pins the error type of an async block to [`Fail`].
async fn step<T>(f: impl Future<Output = PgResult<T>>) -> PgResult<T> {
    f.await
}

/// Runs `$body` (a block ending in `Ok(…)`, with `?` on store and database errors) in a
/// transaction bound to `$tx`, commits it, and runs it again on a deadlock or
/// serialization failure. The body may run more than once: it must not move captures.
macro_rules! transaction {
    ($store:expr, |$tx:ident| $body:block) => {{
        let mut attempt = 1;
        loop {
            let outcome = step(async {
                let mut client = $store.pool.get().await?;
                let $tx = client.transaction().await?;
                let value = step(async { $body }).await?;
                $tx.commit().await?;
                Ok(value)
            })
            .await;
            match outcome {
                Err(fail) if fail.is_retryable() && attempt < ATTEMPTS => {
                    tracing::debug!(attempt, error = ?fail, "retrying a store transaction");
                    attempt += 1;
                }
                other => break other.map_err(Error::from),
            }
        }
    }};
}

/// Runs `$body` on a pooled connection bound to `$client`, outside a transaction (one
/// statement, or reads that need no common snapshot).
macro_rules! read {
    ($store:expr, |$client:ident| $body:block) => {{
        step(async {
            let $client = $store.pool.get().await?;
            step(async { $body }).await
        })
        .await
        .map_err(Error::from)
    }};
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

async fn query(c: &impl GenericClient, sql: &str, params: Params<'_>) -> PgResult<Vec<Row>> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query(&statement, params).await?)
}

async fn query_opt(c: &impl GenericClient, sql: &str, params: Params<'_>) -> PgResult<Option<Row>> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query_opt(&statement, params).await?)
}

async fn query_one(c: &impl GenericClient, sql: &str, params: Params<'_>) -> PgResult<Row> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query_one(&statement, params).await?)
}

async fn execute(c: &impl GenericClient, sql: &str, params: Params<'_>) -> PgResult<u64> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.execute(&statement, params).await?)
}

/// A version as the database stores it (INTEGER).
fn version_param(app: &AppName, version: u32) -> PgResult<i32> {
    validate::version(version).ok_or_else(|| release_not_found(app, version).into())
}

/// A u32 read from an INTEGER column.
fn unsigned(row: &Row, idx: usize) -> PgResult<u32> {
    let value: i32 = row.try_get(idx)?;
    u32::try_from(value)
        .map_err(|_| Error::Store(format!("negative value {value} in column {idx}")).into())
}

fn opt_unsigned(row: &Row, idx: usize) -> PgResult<Option<u32>> {
    let value: Option<i32> = row.try_get(idx)?;
    value
        .map(|v| {
            u32::try_from(v).map_err(|_| {
                Fail::Core(Error::Store(format!("negative value {v} in column {idx}")))
            })
        })
        .transpose()
}

fn app_name_at(row: &Row, idx: usize) -> PgResult<AppName> {
    Ok(AppName::new(row.try_get(idx)?)?)
}

/// PostgreSQL text cannot hold NUL; a build log might.
fn without_nul(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        text.replace('\0', "\u{fffd}").into()
    } else {
        text.into()
    }
}

/// A TTL in seconds, for `make_interval(secs => …)`.
fn seconds(ttl: Duration) -> f64 {
    ttl.as_secs_f64()
}

const USER_COLUMNS: &str = "id, name, admin, created_at";

fn user_row(row: &Row) -> PgResult<User> {
    Ok(User {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        admin: row.try_get(2)?,
        created_at: row.try_get(3)?,
    })
}

const KEY_SELECT: &str = "SELECT k.fingerprint, k.public_key, u.name, k.created_at \
     FROM keys k JOIN users u ON u.id = k.user_id";

fn key_row(row: &Row) -> PgResult<SshKey> {
    Ok(SshKey {
        fingerprint: row.try_get(0)?,
        public_key: row.try_get(1)?,
        user: row.try_get(2)?,
        created_at: row.try_get(3)?,
    })
}

const APP_COLUMNS: &str = "a.id, a.name, a.current_release, a.created_at";

fn app_row(row: &Row) -> PgResult<App> {
    Ok(App {
        id: row.try_get(0)?,
        name: app_name_at(row, 1)?,
        current_release: opt_unsigned(row, 2)?,
        created_at: row.try_get(3)?,
    })
}

const RELEASE_SELECT: &str = "SELECT a.name, r.version, r.status, r.image, r.image_id, \
     r.process_types, r.procfile, r.config, r.commit_sha, r.user_name, r.description, \
     r.failure, r.created_at FROM releases r JOIN apps a ON a.id = r.app_id";

fn release_row(row: &Row) -> PgResult<Release> {
    let status: &str = row.try_get(2)?;
    let Json(process_types): Json<ProcessTypes> = row.try_get(5)?;
    let Json(config): Json<ConfigVars> = row.try_get(7)?;
    Ok(Release {
        app: app_name_at(row, 0)?,
        version: unsigned(row, 1)?,
        status: status.parse()?,
        image: row.try_get(3)?,
        image_id: row.try_get(4)?,
        process_types,
        procfile: row.try_get(6)?,
        config,
        commit: row.try_get(8)?,
        user: row.try_get(9)?,
        description: row.try_get(10)?,
        failure: row.try_get(11)?,
        created_at: row.try_get(12)?,
    })
}

const DOMAIN_SELECT: &str =
    "SELECT d.hostname, a.name, d.created_at FROM domains d JOIN apps a ON a.id = d.app_id";

fn domain_row(row: &Row) -> PgResult<Domain> {
    Ok(Domain {
        hostname: row.try_get(0)?,
        app: app_name_at(row, 1)?,
        created_at: row.try_get(2)?,
    })
}

const EVENT_SELECT: &str = "SELECT id, app_name, user_name, action, release_version, message, \
     created_at, data FROM events";

fn event_row(row: &Row) -> PgResult<Event> {
    let app: Option<&str> = row.try_get(1)?;
    Ok(Event {
        id: row.try_get(0)?,
        app: app.map(AppName::new).transpose()?,
        user: row.try_get(2)?,
        action: row.try_get(3)?,
        release: opt_unsigned(row, 4)?,
        message: row.try_get(5)?,
        data: {
            let Json(data) = row.try_get(7)?;
            data
        },
        created_at: row.try_get(6)?,
    })
}

fn rows<T>(rows: Vec<Row>, f: impl Fn(&Row) -> PgResult<T>) -> PgResult<Vec<T>> {
    rows.iter().map(f).collect()
}

async fn user_id(c: &impl GenericClient, name: &str) -> PgResult<i64> {
    match query_opt(c, "SELECT id FROM users WHERE name = $1", &[&name]).await? {
        Some(row) => Ok(row.try_get(0)?),
        None => Err(Error::not_found("user", name).into()),
    }
}

async fn app_id(c: &impl GenericClient, app: &AppName) -> PgResult<i64> {
    match query_opt(c, "SELECT id FROM apps WHERE name = $1", &[&app.as_str()]).await? {
        Some(row) => Ok(row.try_get(0)?),
        None => Err(Error::not_found("app", app.as_str()).into()),
    }
}

/// The app's id, with its row locked against deletion until the transaction ends.
async fn app_id_kept(c: &impl GenericClient, app: &AppName) -> PgResult<i64> {
    match query_opt(
        c,
        "SELECT id FROM apps WHERE name = $1 FOR KEY SHARE",
        &[&app.as_str()],
    )
    .await?
    {
        Some(row) => Ok(row.try_get(0)?),
        None => Err(Error::not_found("app", app.as_str()).into()),
    }
}

/// A release's row id and status, found without locking; NotFound names the app or the
/// release.
async fn release_id(
    c: &impl GenericClient,
    app: &AppName,
    version: u32,
) -> PgResult<(i64, ReleaseStatus)> {
    let v = version_param(app, version)?;
    let found = query_opt(
        c,
        "SELECT r.id, r.status FROM releases r JOIN apps a ON a.id = r.app_id \
         WHERE a.name = $1 AND r.version = $2",
        &[&app.as_str(), &v],
    )
    .await?;
    match found {
        Some(row) => {
            let status: &str = row.try_get(1)?;
            Ok((row.try_get(0)?, status.parse()?))
        }
        None => {
            app_id(c, app).await?;
            Err(release_not_found(app, version).into())
        }
    }
}

/// A release's row id, its app's id and its status, with the app row and then the
/// release row locked for update (the one lock order every writer follows).
async fn release_locked(
    c: &impl GenericClient,
    app: &AppName,
    version: u32,
) -> PgResult<(i64, i64, ReleaseStatus)> {
    let app_id = match query_opt(
        c,
        "SELECT id FROM apps WHERE name = $1 FOR NO KEY UPDATE",
        &[&app.as_str()],
    )
    .await?
    {
        Some(row) => row.try_get::<_, i64>(0)?,
        None => return Err(Error::not_found("app", app.as_str()).into()),
    };
    let v = version_param(app, version)?;
    let row = query_opt(
        c,
        "SELECT id, status FROM releases WHERE app_id = $1 AND version = $2 FOR UPDATE",
        &[&app_id, &v],
    )
    .await?
    .ok_or_else(|| Fail::from(release_not_found(app, version)))?;
    let status: &str = row.try_get(1)?;
    Ok((row.try_get(0)?, app_id, status.parse()?))
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user[:password]@host[:port]/db`,
    /// or `key=value` pairs; no TLS) and brings its schema up to date.
    pub async fn connect(url: &str) -> Result<PostgresStore> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| Error::invalid("database url", describe(&e)))?;
        if config.get_application_name().is_none() {
            config.application_name("empire");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let target = target(&config);
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(Duration::from_secs(15)))
            .wait_timeout(Some(Duration::from_secs(60)))
            .build()
            .map_err(|e| Error::Store(format!("cannot make a connection pool: {e}")))?;
        let store = PostgresStore { pool, target };
        let mut client = store.pool.get().await.map_err(|e| {
            Error::Store(format!(
                "cannot connect to PostgreSQL at {}: {}",
                store.target,
                describe(&e)
            ))
        })?;
        migrate(&mut client).await?;
        Ok(store)
    }
}

/// `host:port/db`, for messages (never the password).
fn target(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{db}")
}

/// Applies the migrations the database has not seen, in one transaction under an
/// advisory lock: a second gateway starting at the same time waits, then finds them
/// applied.
async fn migrate(client: &mut deadpool_postgres::Client) -> Result<()> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (\
             version    TEXT        PRIMARY KEY, \
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .await?;
    let applied: Vec<String> = tx
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<std::result::Result<_, _>>()?;
    if let Some(unknown) = applied
        .iter()
        .find(|v| !MIGRATIONS.iter().any(|(name, _)| name == v))
    {
        return Err(Error::Store(format!(
            "the database schema has migration {unknown}, newer than this empire knows"
        )));
    }
    for (name, sql) in MIGRATIONS {
        if applied.iter().any(|v| v == name) {
            continue;
        }
        tx.batch_execute(sql)
            .await
            .map_err(|e| Error::Store(format!("migration {name} failed: {}", Error::from(e))))?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[name],
        )
        .await?;
        tracing::debug!(migration = name, "applied store migration");
    }
    tx.commit().await?;
    Ok(())
}

#[async_trait]
impl Store for PostgresStore {
    async fn create_user(&self, name: &str, admin: bool) -> Result<User> {
        validate::not_blank("user name", name)?;
        transaction!(self, |tx| {
            // One creator at a time, so exactly one first user is made an admin.
            tx.batch_execute("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE")
                .await?;
            let row = query_opt(
                &tx,
                &format!(
                    "INSERT INTO users (name, admin) \
                     SELECT $1, $2 OR NOT EXISTS (SELECT 1 FROM users) \
                     ON CONFLICT (name) DO NOTHING RETURNING {USER_COLUMNS}"
                ),
                &[&name, &admin],
            )
            .await?;
            match row {
                Some(row) => user_row(&row),
                None => Err(Error::Conflict(format!("user {name} already exists")).into()),
            }
        })
    }

    async fn user(&self, name: &str) -> Result<User> {
        read!(self, |c| {
            match query_opt(
                &c,
                &format!("SELECT {USER_COLUMNS} FROM users WHERE name = $1"),
                &[&name],
            )
            .await?
            {
                Some(row) => user_row(&row),
                None => Err(Error::not_found("user", name).into()),
            }
        })
    }

    async fn users(&self) -> Result<Vec<User>> {
        read!(self, |c| {
            let found = query(
                &c,
                &format!("SELECT {USER_COLUMNS} FROM users ORDER BY name"),
                &[],
            )
            .await?;
            rows(found, user_row)
        })
    }

    async fn add_key(&self, user: &str, fingerprint: &str, public_key: &str) -> Result<SshKey> {
        transaction!(self, |tx| {
            let user_id = user_id(&tx, user).await?;
            let inserted = query_opt(
                &tx,
                "INSERT INTO keys (fingerprint, public_key, user_id) VALUES ($1, $2, $3) \
                 ON CONFLICT (fingerprint) DO NOTHING RETURNING created_at",
                &[&fingerprint, &public_key, &user_id],
            )
            .await?;
            match inserted {
                Some(row) => Ok(SshKey {
                    fingerprint: fingerprint.to_string(),
                    public_key: public_key.to_string(),
                    user: user.to_string(),
                    created_at: row.try_get(0)?,
                }),
                None => {
                    let owner = query_opt(
                        &tx,
                        "SELECT u.name FROM keys k JOIN users u ON u.id = k.user_id \
                         WHERE k.fingerprint = $1",
                        &[&fingerprint],
                    )
                    .await?
                    .map(|row| row.try_get::<_, String>(0))
                    .transpose()?
                    .unwrap_or_else(|| "another user".to_string());
                    Err(Error::Conflict(format!(
                        "key {fingerprint} is already registered to user {owner}"
                    ))
                    .into())
                }
            }
        })
    }

    async fn key(&self, fingerprint: &str) -> Result<SshKey> {
        read!(self, |c| {
            match query_opt(
                &c,
                &format!("{KEY_SELECT} WHERE k.fingerprint = $1"),
                &[&fingerprint],
            )
            .await?
            {
                Some(row) => key_row(&row),
                None => Err(Error::not_found("key", fingerprint).into()),
            }
        })
    }

    async fn keys(&self, user: Option<&str>) -> Result<Vec<SshKey>> {
        read!(self, |c| {
            let found = match user {
                Some(user) => {
                    let user_id = user_id(&c, user).await?;
                    query(
                        &c,
                        &format!("{KEY_SELECT} WHERE k.user_id = $1 ORDER BY k.id"),
                        &[&user_id],
                    )
                    .await?
                }
                None => query(&c, &format!("{KEY_SELECT} ORDER BY u.name, k.id"), &[]).await?,
            };
            rows(found, key_row)
        })
    }

    async fn remove_key(&self, fingerprint: &str) -> Result<()> {
        read!(self, |c| {
            let removed = execute(
                &c,
                "DELETE FROM keys WHERE fingerprint = $1",
                &[&fingerprint],
            )
            .await?;
            if removed == 0 {
                return Err(Error::not_found("key", fingerprint).into());
            }
            Ok(())
        })
    }

    async fn create_app(&self, name: &AppName, owner: &str) -> Result<App> {
        transaction!(self, |tx| {
            let exists = query_opt(&tx, "SELECT 1 FROM apps WHERE name = $1", &[&name.as_str()])
                .await?
                .is_some();
            if exists {
                return Err(Error::Conflict(format!("app {name} already exists")).into());
            }
            let owner_id = user_id(&tx, owner).await?;
            let row = query_opt(
                &tx,
                &format!(
                    "INSERT INTO apps AS a (name, owner_id) VALUES ($1, $2) \
                     ON CONFLICT (name) DO NOTHING RETURNING {APP_COLUMNS}"
                ),
                &[&name.as_str(), &owner_id],
            )
            .await?
            .ok_or_else(|| Fail::from(Error::Conflict(format!("app {name} already exists"))))?;
            let app = app_row(&row)?;
            execute(
                &tx,
                "INSERT INTO collaborators (app_id, user_id) VALUES ($1, $2)",
                &[&app.id, &owner_id],
            )
            .await?;
            Ok(app)
        })
    }

    async fn app(&self, name: &AppName) -> Result<App> {
        read!(self, |c| {
            match query_opt(
                &c,
                &format!("SELECT {APP_COLUMNS} FROM apps a WHERE a.name = $1"),
                &[&name.as_str()],
            )
            .await?
            {
                Some(row) => app_row(&row),
                None => Err(Error::not_found("app", name.as_str()).into()),
            }
        })
    }

    async fn apps(&self) -> Result<Vec<App>> {
        read!(self, |c| {
            let found = query(
                &c,
                &format!("SELECT {APP_COLUMNS} FROM apps a ORDER BY a.name"),
                &[],
            )
            .await?;
            rows(found, app_row)
        })
    }

    async fn delete_app(&self, name: &AppName) -> Result<()> {
        transaction!(self, |tx| {
            // Releases, logs, formation, domains and collaborators go with the app (ON
            // DELETE CASCADE); its events stay.
            let deleted =
                execute(&tx, "DELETE FROM apps WHERE name = $1", &[&name.as_str()]).await?;
            if deleted == 0 {
                return Err(Error::not_found("app", name.as_str()).into());
            }
            execute(&tx, "DELETE FROM leases WHERE app = $1", &[&name.as_str()]).await?;
            Ok(())
        })
    }

    async fn create_release(&self, app: &AppName, release: NewRelease) -> Result<Release> {
        validate::config(&release.config)?;
        let process_types = ProcessTypes::new();
        transaction!(self, |tx| {
            // The row lock taken here orders concurrent deploys of the app, whichever
            // gateway runs them.
            let row = query_opt(
                &tx,
                "UPDATE apps SET last_version = last_version + 1 WHERE name = $1 \
                 RETURNING id, last_version",
                &[&app.as_str()],
            )
            .await?
            .ok_or_else(|| Fail::from(Error::not_found("app", app.as_str())))?;
            let app_id: i64 = row.try_get(0)?;
            let version = unsigned(&row, 1)?;
            let created = query_one(
                &tx,
                "INSERT INTO releases (app_id, version, status, process_types, config, \
                 commit_sha, user_name, description) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING created_at",
                &[
                    &app_id,
                    &row.try_get::<_, i32>(1)?,
                    &ReleaseStatus::Pending.as_str(),
                    &Json(&process_types),
                    &Json(&release.config),
                    &release.commit,
                    &release.user,
                    &release.description,
                ],
            )
            .await?;
            Ok(Release {
                app: app.clone(),
                version,
                status: ReleaseStatus::Pending,
                image: None,
                image_id: None,
                process_types: process_types.clone(),
                procfile: None,
                config: release.config.clone(),
                commit: release.commit.clone(),
                user: release.user.clone(),
                description: release.description.clone(),
                failure: None,
                created_at: created.try_get(0)?,
            })
        })
    }

    async fn release(&self, app: &AppName, version: u32) -> Result<Release> {
        read!(self, |c| {
            let v = version_param(app, version)?;
            let found = query_opt(
                &c,
                &format!("{RELEASE_SELECT} WHERE a.name = $1 AND r.version = $2"),
                &[&app.as_str(), &v],
            )
            .await?;
            match found {
                Some(row) => release_row(&row),
                None => {
                    app_id(&c, app).await?;
                    Err(release_not_found(app, version).into())
                }
            }
        })
    }

    async fn releases(&self, app: &AppName) -> Result<Vec<Release>> {
        read!(self, |c| {
            let app_id = app_id(&c, app).await?;
            let found = query(
                &c,
                &format!("{RELEASE_SELECT} WHERE r.app_id = $1 ORDER BY r.version DESC"),
                &[&app_id],
            )
            .await?;
            rows(found, release_row)
        })
    }

    async fn releases_in_progress(&self) -> Result<Vec<Release>> {
        read!(self, |c| {
            let found = query(
                &c,
                &format!(
                    "{RELEASE_SELECT} WHERE r.status IN ('pending', 'building', 'deploying') \
                     ORDER BY a.name, r.version"
                ),
                &[],
            )
            .await?;
            rows(found, release_row)
        })
    }

    async fn set_release_build(
        &self,
        app: &AppName,
        version: u32,
        build: &ReleaseBuild,
    ) -> Result<()> {
        transaction!(self, |tx| {
            let (id, _, status) = release_locked(&tx, app, version).await?;
            if !status.is_in_progress() {
                return Err(image_fixed(app, version, status).into());
            }
            execute(
                &tx,
                "UPDATE releases SET image = $1, image_id = $2, procfile = $3, \
                 process_types = $4, updated_at = now() WHERE id = $5",
                &[
                    &build.image,
                    &build.image_id,
                    &build.procfile.as_deref().map(without_nul),
                    &Json(&build.process_types),
                    &id,
                ],
            )
            .await?;
            Ok(())
        })
    }

    async fn set_release_status(
        &self,
        app: &AppName,
        version: u32,
        status: ReleaseStatus,
        failure: Option<&str>,
    ) -> Result<()> {
        let failure = failure.map(without_nul);
        transaction!(self, |tx| {
            let (id, app_id, current) = release_locked(&tx, app, version).await?;
            current
                .check_transition(status)
                .map_err(|_| bad_transition(app, version, current, status))?;
            execute(
                &tx,
                "UPDATE releases SET status = $1, failure = $2, updated_at = now() \
                 WHERE id = $3",
                &[&status.as_str(), &failure, &id],
            )
            .await?;
            if status == ReleaseStatus::Succeeded {
                // The release's config becomes the app's, for the next deploy.
                execute(
                    &tx,
                    "UPDATE apps SET current_release = r.version, config = r.config \
                     FROM releases r WHERE r.id = $1 AND apps.id = $2",
                    &[&id, &app_id],
                )
                .await?;
            }
            Ok(())
        })
    }

    async fn append_deploy_log(&self, app: &AppName, version: u32, text: &str) -> Result<()> {
        let text = without_nul(text);
        transaction!(self, |tx| {
            let (id, _) = release_id(&tx, app, version).await?;
            if !text.is_empty() {
                execute(
                    &tx,
                    "INSERT INTO deploy_logs (release_id, text) VALUES ($1, $2)",
                    &[&id, &text],
                )
                .await?;
            }
            Ok(())
        })
    }

    async fn deploy_log(&self, app: &AppName, version: u32) -> Result<String> {
        read!(self, |c| {
            let (id, _) = release_id(&c, app, version).await?;
            let row = query_one(
                &c,
                "SELECT string_agg(text, '' ORDER BY id) FROM deploy_logs WHERE release_id = $1",
                &[&id],
            )
            .await?;
            Ok(row.try_get::<_, Option<String>>(0)?.unwrap_or_default())
        })
    }

    async fn try_acquire_lease(
        &self,
        app: &AppName,
        owner: &str,
        user: &str,
        ttl: Duration,
    ) -> Result<Option<LeaseHolder>> {
        let ttl = seconds(ttl);
        transaction!(self, |tx| {
            // Taken if free, lapsed (by the database clock) or already ours. Should the
            // holder give it back between the two statements, try again.
            let mut holder = None;
            for _ in 0..3 {
                let taken = execute(
                    &tx,
                    "INSERT INTO leases (app, owner, user_name, expires_at) \
                     VALUES ($1, $2, $3, now() + make_interval(secs => $4)) \
                     ON CONFLICT (app) DO UPDATE SET owner = excluded.owner, \
                     user_name = excluded.user_name, expires_at = excluded.expires_at \
                     WHERE leases.expires_at < now() OR leases.owner = excluded.owner",
                    &[&app.as_str(), &owner, &user, &ttl],
                )
                .await?;
                if taken == 1 {
                    return Ok(None);
                }
                let row = query_opt(
                    &tx,
                    "SELECT owner, user_name, expires_at FROM leases WHERE app = $1",
                    &[&app.as_str()],
                )
                .await?;
                if let Some(row) = row {
                    holder = Some(LeaseHolder {
                        owner: row.try_get(0)?,
                        user: row.try_get(1)?,
                        expires_at: row.try_get(2)?,
                    });
                    break;
                }
            }
            match holder {
                Some(holder) => Ok(Some(holder)),
                None => Err(Error::Store(format!(
                    "the deploy lease of {app} changed hands too often to be taken"
                ))
                .into()),
            }
        })
    }

    async fn renew_lease(&self, app: &AppName, owner: &str, ttl: Duration) -> Result<()> {
        let ttl = seconds(ttl);
        read!(self, |c| {
            let renewed = execute(
                &c,
                "UPDATE leases SET expires_at = now() + make_interval(secs => $1) \
                 WHERE app = $2 AND owner = $3",
                &[&ttl, &app.as_str(), &owner],
            )
            .await?;
            if renewed == 0 {
                return Err(lease_lost(app).into());
            }
            Ok(())
        })
    }

    async fn release_lease(&self, app: &AppName, owner: &str) -> Result<()> {
        read!(self, |c| {
            execute(
                &c,
                "DELETE FROM leases WHERE app = $1 AND owner = $2",
                &[&app.as_str(), &owner],
            )
            .await?;
            Ok(())
        })
    }

    async fn delete_release(&self, app: &AppName, version: u32) -> Result<()> {
        transaction!(self, |tx| {
            let (id, _, status) = release_locked(&tx, app, version).await?;
            if status == ReleaseStatus::Succeeded {
                return Err(release_succeeded(app, version).into());
            }
            // Its deploy log goes with it; the version is not handed out again.
            execute(&tx, "DELETE FROM releases WHERE id = $1", &[&id]).await?;
            Ok(())
        })
    }

    async fn app_config(&self, app: &AppName) -> Result<ConfigVars> {
        read!(self, |c| {
            match query_opt(
                &c,
                "SELECT config FROM apps WHERE name = $1",
                &[&app.as_str()],
            )
            .await?
            {
                Some(row) => {
                    let Json(config): Json<ConfigVars> = row.try_get(0)?;
                    Ok(config)
                }
                None => Err(Error::not_found("app", app.as_str()).into()),
            }
        })
    }

    async fn set_app_config(&self, app: &AppName, config: &ConfigVars) -> Result<()> {
        validate::config(config)?;
        read!(self, |c| {
            let updated = execute(
                &c,
                "UPDATE apps SET config = $1 WHERE name = $2",
                &[&Json(config), &app.as_str()],
            )
            .await?;
            if updated == 0 {
                return Err(Error::not_found("app", app.as_str()).into());
            }
            Ok(())
        })
    }

    async fn formation(&self, app: &AppName) -> Result<Vec<ProcessFormation>> {
        read!(self, |c| {
            let app_id = app_id(&c, app).await?;
            let found = query(
                &c,
                "SELECT process, quantity, cpu_shares, memory_bytes FROM formation \
                 WHERE app_id = $1 ORDER BY process COLLATE \"C\"",
                &[&app_id],
            )
            .await?;
            rows(found, |row| {
                let memory: i64 = row.try_get(3)?;
                Ok(ProcessFormation {
                    process: row.try_get(0)?,
                    quantity: unsigned(row, 1)?,
                    size: ProcessSize {
                        cpu_shares: unsigned(row, 2)?,
                        memory_bytes: u64::try_from(memory)
                            .map_err(|_| Error::Store(format!("negative memory size {memory}")))?,
                    },
                })
            })
        })
    }

    async fn set_formation(&self, app: &AppName, entries: &[ProcessFormation]) -> Result<()> {
        validate::formation(entries)?;
        transaction!(self, |tx| {
            let app_id = app_id_kept(&tx, app).await?;
            for entry in entries {
                // validate::formation checked these fit.
                let quantity = i32::try_from(entry.quantity).unwrap_or(i32::MAX);
                let cpu_shares = i32::try_from(entry.size.cpu_shares).unwrap_or(i32::MAX);
                let memory = i64::try_from(entry.size.memory_bytes).unwrap_or(i64::MAX);
                execute(
                    &tx,
                    "INSERT INTO formation (app_id, process, quantity, cpu_shares, \
                     memory_bytes) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (app_id, process) DO UPDATE SET \
                     quantity = excluded.quantity, cpu_shares = excluded.cpu_shares, \
                     memory_bytes = excluded.memory_bytes",
                    &[&app_id, &entry.process, &quantity, &cpu_shares, &memory],
                )
                .await?;
            }
            Ok(())
        })
    }

    async fn add_domain(&self, app: &AppName, hostname: &str) -> Result<Domain> {
        let hostname = validate::hostname(hostname)?;
        transaction!(self, |tx| {
            let app_id = app_id_kept(&tx, app).await?;
            // Should the holder let it go between the two statements, try again.
            for _ in 0..3 {
                let inserted = query_opt(
                    &tx,
                    "INSERT INTO domains (hostname, app_id) VALUES ($1, $2) \
                     ON CONFLICT (hostname) DO NOTHING RETURNING created_at",
                    &[&hostname, &app_id],
                )
                .await?;
                if let Some(row) = inserted {
                    return Ok(Domain {
                        hostname: hostname.clone(),
                        app: app.clone(),
                        created_at: row.try_get(0)?,
                    });
                }
                let holder = query_opt(
                    &tx,
                    "SELECT a.name FROM domains d JOIN apps a ON a.id = d.app_id \
                     WHERE d.hostname = $1",
                    &[&hostname],
                )
                .await?;
                if let Some(holder) = holder {
                    let holder: &str = holder.try_get(0)?;
                    return Err(domain_taken(&hostname, holder).into());
                }
            }
            Err(Error::Store(format!(
                "hostname {hostname} changed hands too often to be attached"
            ))
            .into())
        })
    }

    async fn domains(&self, app: Option<&AppName>) -> Result<Vec<Domain>> {
        read!(self, |c| {
            let found = match app {
                Some(app) => {
                    let app_id = app_id(&c, app).await?;
                    query(
                        &c,
                        &format!("{DOMAIN_SELECT} WHERE d.app_id = $1 ORDER BY d.hostname"),
                        &[&app_id],
                    )
                    .await?
                }
                None => query(&c, &format!("{DOMAIN_SELECT} ORDER BY d.hostname"), &[]).await?,
            };
            rows(found, domain_row)
        })
    }

    async fn remove_domain(&self, app: &AppName, hostname: &str) -> Result<()> {
        let hostname =
            validate::hostname(hostname).unwrap_or_else(|_| hostname.trim().to_ascii_lowercase());
        transaction!(self, |tx| {
            let app_id = app_id(&tx, app).await?;
            let removed = execute(
                &tx,
                "DELETE FROM domains WHERE hostname = $1 AND app_id = $2",
                &[&hostname, &app_id],
            )
            .await?;
            if removed == 0 {
                return Err(domain_not_found(&hostname, app).into());
            }
            Ok(())
        })
    }

    async fn create_token(&self, user: &str, digest: &str, description: &str) -> Result<ApiToken> {
        let digest = validate::digest(digest)?;
        let description = without_nul(description);
        transaction!(self, |tx| {
            let user_id = user_id(&tx, user).await?;
            let row = query_opt(
                &tx,
                "INSERT INTO tokens (user_id, digest, description) VALUES ($1, $2, $3) \
                 ON CONFLICT (digest) DO NOTHING RETURNING id, created_at",
                &[&user_id, &digest, &description],
            )
            .await?
            .ok_or_else(|| Fail::from(token_taken()))?;
            Ok(ApiToken {
                id: row.try_get(0)?,
                user: user.to_string(),
                description: description.to_string(),
                created_at: row.try_get(1)?,
            })
        })
    }

    async fn user_by_token(&self, digest: &str) -> Result<User> {
        // A malformed digest matches no token: it is not found, like a revoked one.
        let digest = digest.to_ascii_lowercase();
        read!(self, |c| {
            match query_opt(
                &c,
                "SELECT u.id, u.name, u.admin, u.created_at FROM tokens t \
                 JOIN users u ON u.id = t.user_id WHERE t.digest = $1",
                &[&without_nul(&digest)],
            )
            .await?
            {
                Some(row) => user_row(&row),
                None => Err(unknown_token().into()),
            }
        })
    }

    async fn tokens(&self, user: &str) -> Result<Vec<ApiToken>> {
        read!(self, |c| {
            let user_id = user_id(&c, user).await?;
            let found = query(
                &c,
                "SELECT id, description, created_at FROM tokens WHERE user_id = $1 ORDER BY id",
                &[&user_id],
            )
            .await?;
            rows(found, |row| {
                Ok(ApiToken {
                    id: row.try_get(0)?,
                    user: user.to_string(),
                    description: row.try_get(1)?,
                    created_at: row.try_get(2)?,
                })
            })
        })
    }

    async fn revoke_token(&self, user: &str, id: i64) -> Result<()> {
        transaction!(self, |tx| {
            let user_id = user_id(&tx, user).await?;
            let removed = execute(
                &tx,
                "DELETE FROM tokens WHERE id = $1 AND user_id = $2",
                &[&id, &user_id],
            )
            .await?;
            if removed == 0 {
                return Err(token_not_found(user, id).into());
            }
            Ok(())
        })
    }

    async fn add_collaborator(&self, app: &AppName, user: &str) -> Result<()> {
        transaction!(self, |tx| {
            let app_id = app_id_kept(&tx, app).await?;
            let user_id = user_id(&tx, user).await?;
            execute(
                &tx,
                "INSERT INTO collaborators (app_id, user_id) VALUES ($1, $2) \
                 ON CONFLICT DO NOTHING",
                &[&app_id, &user_id],
            )
            .await?;
            Ok(())
        })
    }

    async fn remove_collaborator(&self, app: &AppName, user: &str) -> Result<()> {
        transaction!(self, |tx| {
            let app_id = app_id(&tx, app).await?;
            let user_id = user_id(&tx, user).await?;
            let removed = execute(
                &tx,
                "DELETE FROM collaborators WHERE app_id = $1 AND user_id = $2",
                &[&app_id, &user_id],
            )
            .await?;
            if removed == 0 {
                return Err(collaborator_not_found(user, app).into());
            }
            Ok(())
        })
    }

    async fn collaborators(&self, app: &AppName) -> Result<Vec<String>> {
        read!(self, |c| {
            let app_id = app_id(&c, app).await?;
            let found = query(
                &c,
                "SELECT u.name FROM collaborators c JOIN users u ON u.id = c.user_id \
                 WHERE c.app_id = $1 ORDER BY u.name",
                &[&app_id],
            )
            .await?;
            rows(found, |row| Ok(row.try_get(0)?))
        })
    }

    async fn is_collaborator(&self, app: &AppName, user: &str) -> Result<bool> {
        read!(self, |c| {
            match query_opt(
                &c,
                "SELECT EXISTS (SELECT 1 FROM collaborators c JOIN users u ON u.id = c.user_id \
                 WHERE c.app_id = a.id AND u.name = $2) FROM apps a WHERE a.name = $1",
                &[&app.as_str(), &user],
            )
            .await?
            {
                Some(row) => Ok(row.try_get(0)?),
                None => Err(Error::not_found("app", app.as_str()).into()),
            }
        })
    }

    async fn apps_for(&self, user: &User) -> Result<Vec<App>> {
        read!(self, |c| {
            let found = if user.admin {
                query(
                    &c,
                    &format!("SELECT {APP_COLUMNS} FROM apps a ORDER BY a.name"),
                    &[],
                )
                .await?
            } else {
                query(
                    &c,
                    &format!(
                        "SELECT {APP_COLUMNS} FROM collaborators c \
                         JOIN apps a ON a.id = c.app_id WHERE c.user_id = $1 ORDER BY a.name"
                    ),
                    &[&user.id],
                )
                .await?
            };
            rows(found, app_row)
        })
    }

    async fn record_event(&self, event: NewEvent) -> Result<Event> {
        validate::event(&event)?;
        let release = event
            .release
            .map(|v| {
                validate::version(v)
                    .ok_or_else(|| Error::invalid("event release", format!("v{v} is too large")))
            })
            .transpose()?;
        let (user, action, message) = (
            without_nul(&event.user),
            without_nul(&event.action),
            without_nul(&event.message),
        );
        let app = event.app.as_ref().map(AppName::as_str);
        let data = webhooks::without_nul_json(&event.data);
        transaction!(self, |tx| {
            let row = query_one(
                &tx,
                "INSERT INTO events (app_id, app_name, user_name, action, release_version, \
                 message, data) \
                 VALUES ((SELECT id FROM apps WHERE name = $1), $1, $2, $3, $4, $5, $6) \
                 RETURNING id, created_at",
                &[&app, &user, &action, &release, &message, &Json(&data)],
            )
            .await?;
            let recorded = Event {
                id: row.try_get(0)?,
                app: event.app.clone(),
                user: user.to_string(),
                action: action.to_string(),
                release: event.release,
                message: message.to_string(),
                data: data.clone(),
                created_at: row.try_get(1)?,
            };
            webhooks::enqueue(&tx, &recorded).await?;
            Ok(recorded)
        })
    }

    async fn events(&self, app: Option<&AppName>, limit: u32) -> Result<Vec<Event>> {
        let limit = i64::from(limit);
        read!(self, |c| {
            let found = match app {
                // By name, so an app's history (its deletion included) outlives it.
                Some(app) => {
                    query(
                        &c,
                        &format!("{EVENT_SELECT} WHERE app_name = $1 ORDER BY id DESC LIMIT $2"),
                        &[&app.as_str(), &limit],
                    )
                    .await?
                }
                None => {
                    query(
                        &c,
                        &format!("{EVENT_SELECT} ORDER BY id DESC LIMIT $1"),
                        &[&limit],
                    )
                    .await?
                }
            };
            rows(found, event_row)
        })
    }
}

mod builds;
mod webhooks;
