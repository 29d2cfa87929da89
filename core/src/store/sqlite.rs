//! The SQLite store (embedded default).
//!
//! Each connection is owned by one dedicated thread that runs the store's calls from a
//! queue, one after another; async callers wait on a oneshot for the answer. A database
//! file gets one read-write connection (every write, in one short `BEGIN IMMEDIATE`
//! transaction) and a few read-only ones that serve the read-only queries in parallel
//! (WAL lets readers run beside the writer; a read started after a write committed sees
//! it). An in-memory database has only the one connection. So a burst of requests never
//! grows the process by a thread (and a malloc arena) per call, and every connection keeps
//! its prepared statements and a small page cache warm.
//!
//! Several processes (the gateway daemon, `empire keys add`, …) may open the same file at
//! once: the database is in WAL mode, waits up to 5 s for a lock, and every write is one
//! short `BEGIN IMMEDIATE` transaction, so a read-modify-write (release numbering, leases)
//! never races with another writer.
//!
//! Timestamps are stored as unix milliseconds taken from the database clock, so that every
//! writer (and, on PostgreSQL, every gateway) compares lease expiries against one clock.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::types::Type;
use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Row, Transaction, TransactionBehavior, params,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

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

/// The schema migrations, applied in order; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_init", include_str!("migrations/sqlite/0001_init.sql")),
    (
        "0002_operate",
        include_str!("migrations/sqlite/0002_operate.sql"),
    ),
    (
        "0003_builds",
        include_str!("migrations/sqlite/0003_builds.sql"),
    ),
    (
        "0004_webhooks",
        include_str!("migrations/sqlite/0004_webhooks.sql"),
    ),
];

/// How long a connection waits for another writer's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The most read-only connections a database file gets (one per core up to this).
const MAX_READERS: usize = 4;

/// Each connection's page cache, in KiB (`PRAGMA cache_size` = minus this). SQLite's
/// default is 2,000; the hot reads (the app list's covering index, one app's releases,
/// a token) touch far less, and a miss costs one read of the OS page cache.
const CACHE_KIB: i64 = 512;

/// The database clock, in unix milliseconds.
const NOW_MS: &str = "SELECT CAST(ROUND(unixepoch('subsec') * 1000) AS INTEGER)";

/// The SQLite implementation of [`super::Store`].
///
/// Cloning is cheap and shares the connections; their threads end when the last clone is
/// dropped.
#[derive(Clone)]
pub struct SqliteStore {
    /// The read-write connection: every write, and every read of an in-memory database.
    writer: Connections,
    /// The read-only connections of a database file.
    readers: Option<Connections>,
    path: Option<PathBuf>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "SqliteStore({})", path.display()),
            None => f.write_str("SqliteStore(:memory:)"),
        }
    }
}

/// One call of the store, run on a connection's thread.
type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// The queue of one or more connections, each owned by its own thread that takes the
/// next job when it is free. The threads end when the last sender is dropped.
#[derive(Clone)]
struct Connections {
    jobs: Sender<Job>,
}

impl Connections {
    /// Starts one thread per connection, all taking jobs from one queue.
    fn start(conns: Vec<Connection>, name: &str) -> Result<Connections> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for (index, conn) in conns.into_iter().enumerate() {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("{name}-{index}"))
                .spawn(move || serve(conn, &queue))
                .map_err(|e| Error::Store(format!("cannot start a store thread: {e}")))?;
        }
        Ok(Connections { jobs })
    }

    /// Runs `f` on the next free connection and waits for its answer.
    async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move |conn: &mut Connection| {
                // The caller may have stopped waiting; the call has run all the same.
                let _ = answer.send(f(conn));
            }))
            .map_err(|_| Error::Store("the store's connection thread has stopped".to_string()))?;
        answered
            .await
            .map_err(|_| Error::Store("store task failed: the store call panicked".to_string()))?
    }
}

/// A connection's thread: runs the queue's jobs until every sender is gone.
fn serve(mut conn: Connection, queue: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for the next job, not while running it.
        let next = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = next else { return };
        // A panicking call loses its answer (its caller gets an error), not the thread:
        // an open transaction was rolled back when it was dropped.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut conn)));
    }
}

impl SqliteStore {
    /// Opens (creating it and its parent directory if needed) the database at `path` and
    /// brings its schema up to date.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        let path = path.to_path_buf();
        let opened = path.clone();
        let (writer, readers) = tokio::task::spawn_blocking(move || -> Result<_> {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    Error::Store(format!("cannot create directory {}: {e}", dir.display()))
                })?;
            }
            let cannot_open = |e: rusqlite::Error| {
                Error::Store(format!("cannot open database {}: {e}", path.display()))
            };
            // Switching a new file to WAL and reading its schema version can meet
            // SQLITE_BUSY without the busy handler being consulted, while another
            // process opens the same new file: retry within the busy timeout.
            let started = std::time::Instant::now();
            let writer = loop {
                let mut conn = Connection::open(&path).map_err(cannot_open)?;
                match configure(&conn, true).and_then(|()| migrate(&mut conn)) {
                    Ok(()) => break conn,
                    Err(Error::Store(message))
                        if message.contains("database is locked")
                            && started.elapsed() < BUSY_TIMEOUT =>
                    {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(err) => return Err(err),
                }
            };
            // The file is in WAL mode and migrated now: the readers can open it.
            let count = std::thread::available_parallelism()
                .map_or(2, usize::from)
                .clamp(2, MAX_READERS);
            let readers = (0..count)
                .map(|_| {
                    let conn = Connection::open_with_flags(
                        &path,
                        OpenFlags::SQLITE_OPEN_READ_ONLY
                            | OpenFlags::SQLITE_OPEN_NO_MUTEX
                            | OpenFlags::SQLITE_OPEN_URI,
                    )
                    .map_err(cannot_open)?;
                    configure(&conn, false)?;
                    Ok(conn)
                })
                .collect::<Result<Vec<_>>>()?;
            Ok((writer, readers))
        })
        .await
        .map_err(|e| Error::Store(format!("store task failed: {e}")))??;
        Ok(SqliteStore {
            writer: Connections::start(vec![writer], "empire-sqlite-w")?,
            readers: Some(Connections::start(readers, "empire-sqlite-r")?),
            path: Some(opened),
        })
    }

    /// Opens a private in-memory database with the full schema (for tests and dry runs).
    pub fn open_in_memory() -> Result<SqliteStore> {
        let mut conn = Connection::open_in_memory()?;
        configure(&conn, false)?;
        migrate(&mut conn)?;
        SqliteStore::with_connection(conn)
    }

    /// A store on one connection (an in-memory database) that serves reads and writes.
    fn with_connection(conn: Connection) -> Result<SqliteStore> {
        Ok(SqliteStore {
            writer: Connections::start(vec![conn], "empire-sqlite-m")?,
            readers: None,
            path: None,
        })
    }

    /// Runs `f` with the read-write connection on its thread.
    async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        self.writer.run(f).await
    }

    /// Runs the read-only `f` on a free read-only connection (the read-write one for an
    /// in-memory database). It sees every write committed before it starts.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.readers
            .as_ref()
            .unwrap_or(&self.writer)
            .run(move |conn| f(conn))
            .await
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction and commits it if `f` succeeds.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T> + Send + 'static,
    {
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let value = f(&tx)?;
            tx.commit()?;
            Ok(value)
        })
        .await
    }
}

/// Per-connection settings; `wal` switches the database file to WAL mode.
fn configure(conn: &Connection, wal: bool) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
    if wal {
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Store(format!(
                "cannot switch the database to WAL mode (journal mode is {mode})"
            )));
        }
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(())
}

/// Applies the migrations the database has not seen yet, all in one transaction.
fn migrate(conn: &mut Connection) -> Result<()> {
    let known = MIGRATIONS.len() as i64;
    let version = |conn: &Connection| -> Result<i64> {
        Ok(conn.query_row("PRAGMA user_version", [], |row| row.get(0))?)
    };
    if version(conn)? == known {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Another process may have migrated while we waited for the lock.
    let current = version(&tx)?;
    if current > known {
        return Err(Error::Store(format!(
            "the database schema is at version {current}, newer than this empire knows ({known})"
        )));
    }
    for (index, (name, sql)) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.execute_batch(sql)
            .map_err(|e| Error::Store(format!("migration {name} failed: {e}")))?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tracing::debug!(migration = name, "applied store migration");
    }
    tx.commit()?;
    Ok(())
}

fn now_ms(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row(NOW_MS, [], |row| row.get(0))?)
}

fn conversion(
    idx: usize,
    ty: Type,
    err: impl std::error::Error + Send + Sync + 'static,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, ty, Box::new(err))
}

fn time_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<OffsetDateTime> {
    let ms: i64 = row.get(idx)?;
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|e| conversion(idx, Type::Integer, e))
}

fn json_at<T: DeserializeOwned>(row: &Row<'_>, idx: usize) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    serde_json::from_str(&text).map_err(|e| conversion(idx, Type::Text, e))
}

fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Store(format!("cannot encode json: {e}")))
}

fn ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

const USER_COLUMNS: &str = "id, name, admin, created_at";

fn user_row(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get(0)?,
        name: row.get(1)?,
        admin: row.get(2)?,
        created_at: time_at(row, 3)?,
    })
}

const KEY_SELECT: &str = "SELECT k.fingerprint, k.public_key, u.name, k.created_at \
     FROM keys k JOIN users u ON u.id = k.user_id";

fn key_row(row: &Row<'_>) -> rusqlite::Result<SshKey> {
    Ok(SshKey {
        fingerprint: row.get(0)?,
        public_key: row.get(1)?,
        user: row.get(2)?,
        created_at: time_at(row, 3)?,
    })
}

const APP_COLUMNS: &str = "id, name, current_release, created_at";

fn app_row(row: &Row<'_>) -> rusqlite::Result<App> {
    let name: String = row.get(1)?;
    Ok(App {
        id: row.get(0)?,
        name: AppName::new(&name).map_err(|e| conversion(1, Type::Text, e))?,
        current_release: row.get(2)?,
        created_at: time_at(row, 3)?,
    })
}

const RELEASE_SELECT: &str = "SELECT a.name, r.version, r.status, r.image, r.image_id, \
     r.process_types, r.procfile, r.config, r.commit_sha, r.user_name, r.description, \
     r.failure, r.created_at FROM releases r JOIN apps a ON a.id = r.app_id";

fn release_row(row: &Row<'_>) -> rusqlite::Result<Release> {
    let app: String = row.get(0)?;
    let status: String = row.get(2)?;
    Ok(Release {
        app: AppName::new(&app).map_err(|e| conversion(0, Type::Text, e))?,
        version: row.get(1)?,
        status: status.parse().map_err(|e| conversion(2, Type::Text, e))?,
        image: row.get(3)?,
        image_id: row.get(4)?,
        process_types: json_at(row, 5)?,
        procfile: row.get(6)?,
        config: json_at(row, 7)?,
        commit: row.get(8)?,
        user: row.get(9)?,
        description: row.get(10)?,
        failure: row.get(11)?,
        created_at: time_at(row, 12)?,
    })
}

fn user_id(conn: &Connection, name: &str) -> Result<i64> {
    conn.prepare_cached("SELECT id FROM users WHERE name = ?1")?
        .query_row([name], |row| row.get(0))
        .optional()?
        .ok_or_else(|| Error::not_found("user", name))
}

fn app_id(conn: &Connection, app: &AppName) -> Result<i64> {
    conn.prepare_cached("SELECT id FROM apps WHERE name = ?1")?
        .query_row([app.as_str()], |row| row.get(0))
        .optional()?
        .ok_or_else(|| Error::not_found("app", app.as_str()))
}

const DOMAIN_SELECT: &str =
    "SELECT d.hostname, a.name, d.created_at FROM domains d JOIN apps a ON a.id = d.app_id";

fn domain_row(row: &Row<'_>) -> rusqlite::Result<Domain> {
    let app: String = row.get(1)?;
    Ok(Domain {
        hostname: row.get(0)?,
        app: AppName::new(&app).map_err(|e| conversion(1, Type::Text, e))?,
        created_at: time_at(row, 2)?,
    })
}

const EVENT_SELECT: &str = "SELECT id, app_name, user_name, action, release_version, message, \
     created_at, data FROM events";

fn event_row(row: &Row<'_>) -> rusqlite::Result<Event> {
    let app: Option<String> = row.get(1)?;
    Ok(Event {
        id: row.get(0)?,
        app: app
            .map(|name| AppName::new(&name))
            .transpose()
            .map_err(|e| conversion(1, Type::Text, e))?,
        user: row.get(2)?,
        action: row.get(3)?,
        release: row.get(4)?,
        message: row.get(5)?,
        data: json_at(row, 7)?,
        created_at: time_at(row, 6)?,
    })
}

/// A release's row id, its app's id and its status; NotFound names the app or release.
fn release_ids(
    conn: &Connection,
    app: &AppName,
    version: u32,
) -> Result<(i64, i64, ReleaseStatus)> {
    let app_id = app_id(conn, app)?;
    let (id, status): (i64, String) = conn
        .query_row(
            "SELECT id, status FROM releases WHERE app_id = ?1 AND version = ?2",
            params![app_id, version],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?
        .ok_or_else(|| release_not_found(app, version))?;
    Ok((id, app_id, status.parse()?))
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_user(&self, name: &str, admin: bool) -> Result<User> {
        if name.trim().is_empty() {
            return Err(Error::invalid("user name", "must not be empty"));
        }
        let name = name.to_string();
        self.write(move |tx| {
            let exists: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM users WHERE name = ?1)",
                [&name],
                |row| row.get(0),
            )?;
            if exists {
                return Err(Error::Conflict(format!("user {name} already exists")));
            }
            let first: bool =
                tx.query_row("SELECT NOT EXISTS (SELECT 1 FROM users)", [], |row| {
                    row.get(0)
                })?;
            let now = now_ms(tx)?;
            Ok(tx.query_row(
                &format!(
                    "INSERT INTO users (name, admin, created_at) VALUES (?1, ?2, ?3) \
                     RETURNING {USER_COLUMNS}"
                ),
                params![name, admin || first, now],
                user_row,
            )?)
        })
        .await
    }

    async fn user(&self, name: &str) -> Result<User> {
        let name = name.to_string();
        self.read(move |conn| {
            conn.query_row(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1"),
                [&name],
                user_row,
            )
            .optional()?
            .ok_or_else(|| Error::not_found("user", name))
        })
        .await
    }

    async fn users(&self) -> Result<Vec<User>> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY name"))?;
            let users = stmt
                .query_map([], user_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(users)
        })
        .await
    }

    async fn add_key(&self, user: &str, fingerprint: &str, public_key: &str) -> Result<SshKey> {
        let (user, fingerprint, public_key) = (
            user.to_string(),
            fingerprint.to_string(),
            public_key.to_string(),
        );
        self.write(move |tx| {
            let user_id = user_id(tx, &user)?;
            let owner: Option<String> = tx
                .query_row(
                    "SELECT u.name FROM keys k JOIN users u ON u.id = k.user_id \
                     WHERE k.fingerprint = ?1",
                    [&fingerprint],
                    |row| row.get(0),
                )
                .optional()?;
            if let Some(owner) = owner {
                return Err(Error::Conflict(format!(
                    "key {fingerprint} is already registered to user {owner}"
                )));
            }
            let now = now_ms(tx)?;
            let created_at = tx.query_row(
                "INSERT INTO keys (fingerprint, public_key, user_id, created_at) \
                 VALUES (?1, ?2, ?3, ?4) RETURNING created_at",
                params![fingerprint, public_key, user_id, now],
                |row| time_at(row, 0),
            )?;
            Ok(SshKey {
                fingerprint,
                public_key,
                user,
                created_at,
            })
        })
        .await
    }

    async fn key(&self, fingerprint: &str) -> Result<SshKey> {
        let fingerprint = fingerprint.to_string();
        self.read(move |conn| {
            conn.query_row(
                &format!("{KEY_SELECT} WHERE k.fingerprint = ?1"),
                [&fingerprint],
                key_row,
            )
            .optional()?
            .ok_or_else(|| Error::not_found("key", fingerprint))
        })
        .await
    }

    async fn keys(&self, user: Option<&str>) -> Result<Vec<SshKey>> {
        let user = user.map(str::to_string);
        self.read(move |conn| {
            let keys = match user {
                Some(user) => {
                    let user_id = user_id(conn, &user)?;
                    let mut stmt =
                        conn.prepare(&format!("{KEY_SELECT} WHERE k.user_id = ?1 ORDER BY k.id"))?;
                    stmt.query_map([user_id], key_row)?
                        .collect::<rusqlite::Result<_>>()?
                }
                None => {
                    let mut stmt = conn.prepare(&format!("{KEY_SELECT} ORDER BY u.name, k.id"))?;
                    stmt.query_map([], key_row)?
                        .collect::<rusqlite::Result<_>>()?
                }
            };
            Ok(keys)
        })
        .await
    }

    async fn remove_key(&self, fingerprint: &str) -> Result<()> {
        let fingerprint = fingerprint.to_string();
        self.write(move |tx| {
            let removed = tx.execute("DELETE FROM keys WHERE fingerprint = ?1", [&fingerprint])?;
            if removed == 0 {
                return Err(Error::not_found("key", fingerprint));
            }
            Ok(())
        })
        .await
    }

    async fn create_app(&self, name: &AppName, owner: &str) -> Result<App> {
        let (name, owner) = (name.clone(), owner.to_string());
        self.write(move |tx| {
            let exists: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM apps WHERE name = ?1)",
                [name.as_str()],
                |row| row.get(0),
            )?;
            if exists {
                return Err(Error::Conflict(format!("app {name} already exists")));
            }
            let owner_id = user_id(tx, &owner)?;
            let now = now_ms(tx)?;
            let app = tx.query_row(
                &format!(
                    "INSERT INTO apps (name, owner_id, created_at) VALUES (?1, ?2, ?3) \
                     RETURNING {APP_COLUMNS}"
                ),
                params![name.as_str(), owner_id, now],
                app_row,
            )?;
            tx.execute(
                "INSERT INTO collaborators (app_id, user_id) VALUES (?1, ?2)",
                params![app.id, owner_id],
            )?;
            Ok(app)
        })
        .await
    }

    async fn app(&self, name: &AppName) -> Result<App> {
        let name = name.clone();
        self.read(move |conn| {
            conn.query_row(
                &format!("SELECT {APP_COLUMNS} FROM apps WHERE name = ?1"),
                [name.as_str()],
                app_row,
            )
            .optional()?
            .ok_or_else(|| Error::not_found("app", name.as_str()))
        })
        .await
    }

    async fn apps(&self) -> Result<Vec<App>> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare_cached(&format!("SELECT {APP_COLUMNS} FROM apps ORDER BY name"))?;
            let apps = stmt
                .query_map([], app_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(apps)
        })
        .await
    }

    async fn delete_app(&self, name: &AppName) -> Result<()> {
        let name = name.clone();
        self.write(move |tx| {
            // Releases and their deploy logs go with the app (ON DELETE CASCADE).
            let deleted = tx.execute("DELETE FROM apps WHERE name = ?1", [name.as_str()])?;
            if deleted == 0 {
                return Err(Error::not_found("app", name.as_str()));
            }
            tx.execute("DELETE FROM leases WHERE app = ?1", [name.as_str()])?;
            Ok(())
        })
        .await
    }

    async fn create_release(&self, app: &AppName, release: NewRelease) -> Result<Release> {
        validate::config(&release.config)?;
        let app = app.clone();
        self.write(move |tx| {
            let (app_id, version): (i64, u32) = tx
                .query_row(
                    "UPDATE apps SET last_version = last_version + 1 WHERE name = ?1 \
                     RETURNING id, last_version",
                    [app.as_str()],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?
                .ok_or_else(|| Error::not_found("app", app.as_str()))?;
            let now = now_ms(tx)?;
            let process_types = ProcessTypes::new();
            let created_at = tx.query_row(
                "INSERT INTO releases (app_id, version, status, process_types, config, \
                 commit_sha, user_name, description, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9) RETURNING created_at",
                params![
                    app_id,
                    version,
                    ReleaseStatus::Pending.as_str(),
                    to_json(&process_types)?,
                    to_json(&release.config)?,
                    release.commit,
                    release.user,
                    release.description,
                    now,
                ],
                |row| time_at(row, 0),
            )?;
            Ok(Release {
                app,
                version,
                status: ReleaseStatus::Pending,
                image: None,
                image_id: None,
                process_types,
                procfile: None,
                config: release.config,
                commit: release.commit,
                user: release.user,
                description: release.description,
                failure: None,
                created_at,
            })
        })
        .await
    }

    async fn release(&self, app: &AppName, version: u32) -> Result<Release> {
        let app = app.clone();
        self.read(move |conn| {
            let found = conn
                .query_row(
                    &format!("{RELEASE_SELECT} WHERE a.name = ?1 AND r.version = ?2"),
                    params![app.as_str(), version],
                    release_row,
                )
                .optional()?;
            match found {
                Some(release) => Ok(release),
                None => {
                    app_id(conn, &app)?;
                    Err(release_not_found(&app, version))
                }
            }
        })
        .await
    }

    async fn releases(&self, app: &AppName) -> Result<Vec<Release>> {
        let app = app.clone();
        self.read(move |conn| {
            let app_id = app_id(conn, &app)?;
            let mut stmt = conn.prepare_cached(&format!(
                "{RELEASE_SELECT} WHERE r.app_id = ?1 ORDER BY r.version DESC"
            ))?;
            let releases = stmt
                .query_map([app_id], release_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(releases)
        })
        .await
    }

    async fn releases_in_progress(&self) -> Result<Vec<Release>> {
        self.read(|conn| {
            let mut stmt = conn.prepare(&format!(
                "{RELEASE_SELECT} WHERE r.status IN ('pending', 'building', 'deploying') \
                 ORDER BY a.name, r.version"
            ))?;
            let releases = stmt
                .query_map([], release_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(releases)
        })
        .await
    }

    async fn set_release_build(
        &self,
        app: &AppName,
        version: u32,
        build: &ReleaseBuild,
    ) -> Result<()> {
        let (app, build) = (app.clone(), build.clone());
        self.write(move |tx| {
            let (id, _, status) = release_ids(tx, &app, version)?;
            if !status.is_in_progress() {
                return Err(image_fixed(&app, version, status));
            }
            let now = now_ms(tx)?;
            tx.execute(
                "UPDATE releases SET image = ?1, image_id = ?2, procfile = ?3, \
                 process_types = ?4, updated_at = ?5 WHERE id = ?6",
                params![
                    build.image,
                    build.image_id,
                    build.procfile,
                    to_json(&build.process_types)?,
                    now,
                    id
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn set_release_status(
        &self,
        app: &AppName,
        version: u32,
        status: ReleaseStatus,
        failure: Option<&str>,
    ) -> Result<()> {
        let (app, failure) = (app.clone(), failure.map(str::to_string));
        self.write(move |tx| {
            let (id, app_id, current) = release_ids(tx, &app, version)?;
            current
                .check_transition(status)
                .map_err(|_| bad_transition(&app, version, current, status))?;
            let now = now_ms(tx)?;
            tx.execute(
                "UPDATE releases SET status = ?1, failure = ?2, updated_at = ?3 WHERE id = ?4",
                params![status.as_str(), failure, now, id],
            )?;
            if status == ReleaseStatus::Succeeded {
                // The release's config becomes the app's, for the next deploy.
                tx.execute(
                    "UPDATE apps SET current_release = ?1, \
                     config = (SELECT config FROM releases WHERE id = ?3) WHERE id = ?2",
                    params![version, app_id, id],
                )?;
            }
            Ok(())
        })
        .await
    }

    async fn append_deploy_log(&self, app: &AppName, version: u32, text: &str) -> Result<()> {
        let (app, text) = (app.clone(), text.to_string());
        self.write(move |tx| {
            let (id, _, _) = release_ids(tx, &app, version)?;
            if !text.is_empty() {
                tx.execute(
                    "INSERT INTO deploy_logs (release_id, text) VALUES (?1, ?2)",
                    params![id, text],
                )?;
            }
            Ok(())
        })
        .await
    }

    async fn deploy_log(&self, app: &AppName, version: u32) -> Result<String> {
        let app = app.clone();
        self.read(move |conn| {
            let (id, _, _) = release_ids(conn, &app, version)?;
            let mut stmt =
                conn.prepare("SELECT text FROM deploy_logs WHERE release_id = ?1 ORDER BY id")?;
            let mut log = String::new();
            for chunk in stmt.query_map([id], |row| row.get::<_, String>(0))? {
                log.push_str(&chunk?);
            }
            Ok(log)
        })
        .await
    }

    async fn try_acquire_lease(
        &self,
        app: &AppName,
        owner: &str,
        user: &str,
        ttl: Duration,
    ) -> Result<Option<LeaseHolder>> {
        let (app, owner, user, ttl) = (app.clone(), owner.to_string(), user.to_string(), ms(ttl));
        self.write(move |tx| {
            let now = now_ms(tx)?;
            // Take the lease if it is free, lapsed, or already ours.
            let taken = tx.execute(
                "INSERT INTO leases (app, owner, user_name, expires_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (app) DO UPDATE SET owner = excluded.owner, \
                 user_name = excluded.user_name, expires_at = excluded.expires_at \
                 WHERE leases.expires_at < ?5 OR leases.owner = excluded.owner",
                params![app.as_str(), owner, user, now.saturating_add(ttl), now],
            )?;
            if taken == 1 {
                return Ok(None);
            }
            let holder = tx.query_row(
                "SELECT owner, user_name, expires_at FROM leases WHERE app = ?1",
                [app.as_str()],
                |row| {
                    Ok(LeaseHolder {
                        owner: row.get(0)?,
                        user: row.get(1)?,
                        expires_at: time_at(row, 2)?,
                    })
                },
            )?;
            Ok(Some(holder))
        })
        .await
    }

    async fn renew_lease(&self, app: &AppName, owner: &str, ttl: Duration) -> Result<()> {
        let (app, owner, ttl) = (app.clone(), owner.to_string(), ms(ttl));
        self.write(move |tx| {
            let now = now_ms(tx)?;
            let renewed = tx.execute(
                "UPDATE leases SET expires_at = ?1 WHERE app = ?2 AND owner = ?3",
                params![now.saturating_add(ttl), app.as_str(), owner],
            )?;
            if renewed == 0 {
                return Err(lease_lost(&app));
            }
            Ok(())
        })
        .await
    }

    async fn release_lease(&self, app: &AppName, owner: &str) -> Result<()> {
        let (app, owner) = (app.clone(), owner.to_string());
        self.write(move |tx| {
            tx.execute(
                "DELETE FROM leases WHERE app = ?1 AND owner = ?2",
                params![app.as_str(), owner],
            )?;
            Ok(())
        })
        .await
    }
    async fn delete_release(&self, app: &AppName, version: u32) -> Result<()> {
        let app = app.clone();
        self.write(move |tx| {
            let (id, _, status) = release_ids(tx, &app, version)?;
            if status == ReleaseStatus::Succeeded {
                return Err(release_succeeded(&app, version));
            }
            // Its deploy log goes with it (ON DELETE CASCADE). The version is not handed
            // out again: `last_version` stays.
            tx.execute("DELETE FROM releases WHERE id = ?1", [id])?;
            Ok(())
        })
        .await
    }

    async fn app_config(&self, app: &AppName) -> Result<ConfigVars> {
        let app = app.clone();
        self.read(move |conn| {
            conn.prepare_cached("SELECT config FROM apps WHERE name = ?1")?
                .query_row([app.as_str()], |row| json_at(row, 0))
                .optional()?
                .ok_or_else(|| Error::not_found("app", app.as_str()))
        })
        .await
    }

    async fn set_app_config(&self, app: &AppName, config: &ConfigVars) -> Result<()> {
        validate::config(config)?;
        let (app, config) = (app.clone(), to_json(config)?);
        self.write(move |tx| {
            let updated = tx.execute(
                "UPDATE apps SET config = ?1 WHERE name = ?2",
                params![config, app.as_str()],
            )?;
            if updated == 0 {
                return Err(Error::not_found("app", app.as_str()));
            }
            Ok(())
        })
        .await
    }

    async fn formation(&self, app: &AppName) -> Result<Vec<ProcessFormation>> {
        let app = app.clone();
        self.read(move |conn| {
            let app_id = app_id(conn, &app)?;
            let mut stmt = conn.prepare_cached(
                "SELECT process, quantity, cpu_shares, memory_bytes FROM formation \
                 WHERE app_id = ?1 ORDER BY process",
            )?;
            let formation = stmt
                .query_map([app_id], |row| {
                    Ok(ProcessFormation {
                        process: row.get(0)?,
                        quantity: row.get(1)?,
                        size: ProcessSize {
                            cpu_shares: row.get(2)?,
                            memory_bytes: u64::try_from(row.get::<_, i64>(3)?)
                                .map_err(|e| conversion(3, Type::Integer, e))?,
                        },
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(formation)
        })
        .await
    }

    async fn set_formation(&self, app: &AppName, entries: &[ProcessFormation]) -> Result<()> {
        validate::formation(entries)?;
        let (app, entries) = (app.clone(), entries.to_vec());
        self.write(move |tx| {
            let app_id = app_id(tx, &app)?;
            let mut stmt = tx.prepare_cached(
                "INSERT INTO formation (app_id, process, quantity, cpu_shares, memory_bytes) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (app_id, process) DO UPDATE SET \
                 quantity = excluded.quantity, cpu_shares = excluded.cpu_shares, \
                 memory_bytes = excluded.memory_bytes",
            )?;
            for entry in &entries {
                stmt.execute(params![
                    app_id,
                    entry.process,
                    entry.quantity,
                    entry.size.cpu_shares,
                    entry.size.memory_bytes as i64,
                ])?;
            }
            Ok(())
        })
        .await
    }

    async fn add_domain(&self, app: &AppName, hostname: &str) -> Result<Domain> {
        let (app, hostname) = (app.clone(), validate::hostname(hostname)?);
        self.write(move |tx| {
            let app_id = app_id(tx, &app)?;
            let holder: Option<String> = tx
                .query_row(
                    "SELECT a.name FROM domains d JOIN apps a ON a.id = d.app_id \
                     WHERE d.hostname = ?1",
                    [&hostname],
                    |row| row.get(0),
                )
                .optional()?;
            if let Some(holder) = holder {
                return Err(domain_taken(&hostname, &holder));
            }
            let now = now_ms(tx)?;
            let created_at = tx.query_row(
                "INSERT INTO domains (hostname, app_id, created_at) VALUES (?1, ?2, ?3) \
                 RETURNING created_at",
                params![hostname, app_id, now],
                |row| time_at(row, 0),
            )?;
            Ok(Domain {
                hostname,
                app,
                created_at,
            })
        })
        .await
    }

    async fn domains(&self, app: Option<&AppName>) -> Result<Vec<Domain>> {
        let app = app.cloned();
        self.read(move |conn| {
            let domains = match app {
                Some(app) => {
                    let app_id = app_id(conn, &app)?;
                    let mut stmt = conn.prepare_cached(&format!(
                        "{DOMAIN_SELECT} WHERE d.app_id = ?1 ORDER BY d.hostname"
                    ))?;
                    stmt.query_map([app_id], domain_row)?
                        .collect::<rusqlite::Result<_>>()?
                }
                None => {
                    let mut stmt =
                        conn.prepare_cached(&format!("{DOMAIN_SELECT} ORDER BY d.hostname"))?;
                    stmt.query_map([], domain_row)?
                        .collect::<rusqlite::Result<_>>()?
                }
            };
            Ok(domains)
        })
        .await
    }

    async fn remove_domain(&self, app: &AppName, hostname: &str) -> Result<()> {
        let hostname =
            validate::hostname(hostname).unwrap_or_else(|_| hostname.trim().to_ascii_lowercase());
        let app = app.clone();
        self.write(move |tx| {
            let app_id = app_id(tx, &app)?;
            let removed = tx.execute(
                "DELETE FROM domains WHERE hostname = ?1 AND app_id = ?2",
                params![hostname, app_id],
            )?;
            if removed == 0 {
                return Err(domain_not_found(&hostname, &app));
            }
            Ok(())
        })
        .await
    }

    async fn create_token(&self, user: &str, digest: &str, description: &str) -> Result<ApiToken> {
        let digest = validate::digest(digest)?;
        let (user, description) = (user.to_string(), description.to_string());
        self.write(move |tx| {
            let user_id = user_id(tx, &user)?;
            let exists: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM tokens WHERE digest = ?1)",
                [&digest],
                |row| row.get(0),
            )?;
            if exists {
                return Err(token_taken());
            }
            let now = now_ms(tx)?;
            let (id, created_at) = tx.query_row(
                "INSERT INTO tokens (user_id, digest, description, created_at) \
                 VALUES (?1, ?2, ?3, ?4) RETURNING id, created_at",
                params![user_id, digest, description, now],
                |row| Ok((row.get(0)?, time_at(row, 1)?)),
            )?;
            Ok(ApiToken {
                id,
                user,
                description,
                created_at,
            })
        })
        .await
    }

    async fn user_by_token(&self, digest: &str) -> Result<User> {
        // A malformed digest matches no token: it is not found, like a revoked one.
        let digest = digest.to_ascii_lowercase();
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT u.id, u.name, u.admin, u.created_at FROM tokens t \
                 JOIN users u ON u.id = t.user_id WHERE t.digest = ?1",
            )?
            .query_row([&digest], user_row)
            .optional()?
            .ok_or_else(unknown_token)
        })
        .await
    }

    async fn tokens(&self, user: &str) -> Result<Vec<ApiToken>> {
        let user = user.to_string();
        self.read(move |conn| {
            let user_id = user_id(conn, &user)?;
            let mut stmt = conn.prepare_cached(
                "SELECT id, description, created_at FROM tokens WHERE user_id = ?1 ORDER BY id",
            )?;
            let tokens = stmt
                .query_map([user_id], |row| {
                    Ok(ApiToken {
                        id: row.get(0)?,
                        user: user.clone(),
                        description: row.get(1)?,
                        created_at: time_at(row, 2)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(tokens)
        })
        .await
    }

    async fn revoke_token(&self, user: &str, id: i64) -> Result<()> {
        let user = user.to_string();
        self.write(move |tx| {
            let user_id = user_id(tx, &user)?;
            let removed = tx.execute(
                "DELETE FROM tokens WHERE id = ?1 AND user_id = ?2",
                params![id, user_id],
            )?;
            if removed == 0 {
                return Err(token_not_found(&user, id));
            }
            Ok(())
        })
        .await
    }

    async fn add_collaborator(&self, app: &AppName, user: &str) -> Result<()> {
        let (app, user) = (app.clone(), user.to_string());
        self.write(move |tx| {
            let app_id = app_id(tx, &app)?;
            let user_id = user_id(tx, &user)?;
            tx.execute(
                "INSERT INTO collaborators (app_id, user_id) VALUES (?1, ?2) \
                 ON CONFLICT DO NOTHING",
                params![app_id, user_id],
            )?;
            Ok(())
        })
        .await
    }

    async fn remove_collaborator(&self, app: &AppName, user: &str) -> Result<()> {
        let (app, user) = (app.clone(), user.to_string());
        self.write(move |tx| {
            let app_id = app_id(tx, &app)?;
            let user_id = user_id(tx, &user)?;
            let removed = tx.execute(
                "DELETE FROM collaborators WHERE app_id = ?1 AND user_id = ?2",
                params![app_id, user_id],
            )?;
            if removed == 0 {
                return Err(collaborator_not_found(&user, &app));
            }
            Ok(())
        })
        .await
    }

    async fn collaborators(&self, app: &AppName) -> Result<Vec<String>> {
        let app = app.clone();
        self.read(move |conn| {
            let app_id = app_id(conn, &app)?;
            let mut stmt = conn.prepare_cached(
                "SELECT u.name FROM collaborators c JOIN users u ON u.id = c.user_id \
                 WHERE c.app_id = ?1 ORDER BY u.name",
            )?;
            let names = stmt
                .query_map([app_id], |row| row.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(names)
        })
        .await
    }

    async fn is_collaborator(&self, app: &AppName, user: &str) -> Result<bool> {
        let (app, user) = (app.clone(), user.to_string());
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM collaborators c JOIN users u ON u.id = c.user_id \
                 WHERE c.app_id = a.id AND u.name = ?2) FROM apps a WHERE a.name = ?1",
            )?
            .query_row(params![app.as_str(), user], |row| row.get(0))
            .optional()?
            .ok_or_else(|| Error::not_found("app", app.as_str()))
        })
        .await
    }

    async fn apps_for(&self, user: &User) -> Result<Vec<App>> {
        let user = user.clone();
        self.read(move |conn| {
            let apps = if user.admin {
                conn.prepare_cached(&format!("SELECT {APP_COLUMNS} FROM apps ORDER BY name"))?
                    .query_map([], app_row)?
                    .collect::<rusqlite::Result<_>>()?
            } else {
                conn.prepare_cached(
                    "SELECT a.id, a.name, a.current_release, a.created_at \
                     FROM collaborators c JOIN apps a ON a.id = c.app_id \
                     WHERE c.user_id = ?1 ORDER BY a.name",
                )?
                .query_map([user.id], app_row)?
                .collect::<rusqlite::Result<_>>()?
            };
            Ok(apps)
        })
        .await
    }

    async fn record_event(&self, event: NewEvent) -> Result<Event> {
        validate::event(&event)?;
        self.write(move |tx| {
            let now = now_ms(tx)?;
            let app = event.app.as_ref().map(AppName::as_str);
            let (id, created_at) = tx.query_row(
                "INSERT INTO events (app_id, app_name, user_name, action, release_version, \
                 message, created_at, data) \
                 VALUES ((SELECT id FROM apps WHERE name = ?1), ?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 RETURNING id, created_at",
                params![
                    app,
                    event.user,
                    event.action,
                    event.release,
                    event.message,
                    now,
                    to_json(&event.data)?
                ],
                |row| Ok((row.get(0)?, time_at(row, 1)?)),
            )?;
            let event = Event {
                id,
                app: event.app,
                user: event.user,
                action: event.action,
                release: event.release,
                message: event.message,
                data: event.data,
                created_at,
            };
            webhooks::enqueue(tx, &event)?;
            Ok(event)
        })
        .await
    }

    async fn events(&self, app: Option<&AppName>, limit: u32) -> Result<Vec<Event>> {
        let app = app.cloned();
        self.read(move |conn| {
            let events = match app {
                // By name, so an app's history (its deletion included) outlives it.
                Some(app) => conn
                    .prepare_cached(&format!(
                        "{EVENT_SELECT} WHERE app_name = ?1 ORDER BY id DESC LIMIT ?2"
                    ))?
                    .query_map(params![app.as_str(), limit], event_row)?
                    .collect::<rusqlite::Result<_>>()?,
                None => conn
                    .prepare_cached(&format!("{EVENT_SELECT} ORDER BY id DESC LIMIT ?1"))?
                    .query_map([limit], event_row)?
                    .collect::<rusqlite::Result<_>>()?,
            };
            Ok(events)
        })
        .await
    }
}

mod builds;
mod webhooks;

#[cfg(test)]
mod tests {
    //! What only the SQLite store has: its schema, migrations and query plans. The
    //! behaviour every store shares is tested by `core/tests/store_suite`.

    use super::*;

    fn app(name: &str) -> AppName {
        AppName::new(name).unwrap()
    }

    async fn count(store: &SqliteStore, table: &'static str) -> i64 {
        store
            .call(move |conn| {
                Ok(
                    conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
                        row.get(0)
                    })?,
                )
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn deleting_an_app_leaves_no_rows_behind_but_its_events() {
        let store = SqliteStore::open_in_memory().unwrap();
        store.create_user("alice", false).await.unwrap();
        let web = app("web");
        store.create_app(&web, "alice").await.unwrap();
        store
            .create_release(&web, NewRelease::default())
            .await
            .unwrap();
        store.append_deploy_log(&web, 1, "log\n").await.unwrap();
        store.add_domain(&web, "www.example.com").await.unwrap();
        store
            .set_formation(
                &web,
                &[ProcessFormation {
                    process: "web".to_string(),
                    quantity: 1,
                    size: ProcessSize::X1,
                }],
            )
            .await
            .unwrap();
        store
            .try_acquire_lease(&web, "d1", "alice", Duration::from_secs(60))
            .await
            .unwrap();
        store
            .record_event(NewEvent {
                app: Some(web.clone()),
                user: "alice".to_string(),
                action: "deploy".to_string(),
                release: Some(1),
                message: "Deployed v1".to_string(),
                data: Default::default(),
            })
            .await
            .unwrap();
        store.delete_app(&web).await.unwrap();
        for table in [
            "apps",
            "releases",
            "deploy_logs",
            "leases",
            "domains",
            "formation",
            "collaborators",
        ] {
            assert_eq!(count(&store, table).await, 0, "{table}");
        }
        let (events, linked) = store
            .call(|conn| {
                Ok(conn.query_row(
                    "SELECT COUNT(*), COUNT(app_id) FROM events WHERE app_name = 'web'",
                    [],
                    |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)),
                )?)
            })
            .await
            .unwrap();
        assert_eq!((events, linked), (1, 0));
    }

    #[tokio::test]
    async fn migrations_leave_the_schema_at_the_latest_version() {
        let store = SqliteStore::open_in_memory().unwrap();
        let version = store
            .call(|conn| Ok(conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))?))
            .await
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        // Migrating again applies nothing and fails on nothing.
        store.call(migrate).await.unwrap();
    }

    /// A database made by the first release of empire, before access control and app
    /// config existed.
    fn database_at_version_1() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        configure(&conn, false).unwrap();
        conn.execute_batch(MIGRATIONS[0].1).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute_batch(
            "INSERT INTO users (id, name, admin, created_at) VALUES (1, 'alice', 1, 0), \
                 (2, 'bob', 0, 0);
             INSERT INTO apps (id, name, owner_id, current_release, last_version, created_at) \
                 VALUES (1, 'web', 2, 2, 3, 0), (2, 'api', 1, NULL, 1, 0);
             INSERT INTO releases (app_id, version, status, config, user_name, description, \
                 created_at, updated_at) VALUES \
                 (1, 1, 'succeeded', '{\"A\":\"old\"}', 'bob', 'v1', 0, 0), \
                 (1, 2, 'succeeded', '{\"A\":\"current\"}', 'bob', 'v2', 0, 0), \
                 (1, 3, 'failed', '{\"A\":\"broken\"}', 'bob', 'v3', 0, 0), \
                 (2, 1, 'failed', '{\"B\":\"x\"}', 'alice', 'v1', 0, 0);",
        )
        .unwrap();
        conn
    }

    #[tokio::test]
    async fn migrating_gives_existing_apps_their_pusher_and_current_config() {
        let mut conn = database_at_version_1();
        migrate(&mut conn).unwrap();
        let store = SqliteStore::with_connection(conn).unwrap();
        // Apps pushed before access control existed belong to their first pusher.
        assert_eq!(store.collaborators(&app("web")).await.unwrap(), ["bob"]);
        assert_eq!(store.collaborators(&app("api")).await.unwrap(), ["alice"]);
        let bob = store.user("bob").await.unwrap();
        let names: Vec<_> = store
            .apps_for(&bob)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.name.to_string())
            .collect();
        assert_eq!(names, ["web"]);
        // The config is the current release's; an app never deployed has none.
        assert_eq!(
            store.app_config(&app("web")).await.unwrap(),
            ConfigVars::from([("A".to_string(), "current".to_string())])
        );
        assert!(store.app_config(&app("api")).await.unwrap().is_empty());
        // Numbering goes on where it was.
        let v4 = store
            .create_release(&app("web"), NewRelease::default())
            .await
            .unwrap();
        assert_eq!(v4.version, 4);
    }

    /// The query plan of `sql`, one step a line.
    fn plan(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let params = vec![rusqlite::types::Value::Null; stmt.parameter_count()];
        let steps: Vec<String> = stmt
            .query_map(rusqlite::params_from_iter(params), |row| row.get(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        steps.join("\n")
    }

    #[tokio::test]
    async fn the_hot_reads_use_indexes() {
        let store = SqliteStore::open_in_memory().unwrap();
        let plans = store
            .call(|conn| {
                Ok([
                    // GET /apps, admin and not.
                    plan(
                        conn,
                        &format!("SELECT {APP_COLUMNS} FROM apps ORDER BY name"),
                    ),
                    plan(
                        conn,
                        "SELECT a.id, a.name, a.current_release, a.created_at \
                         FROM collaborators c JOIN apps a ON a.id = c.app_id \
                         WHERE c.user_id = ?1 ORDER BY a.name",
                    ),
                    // GET /apps/{app}/releases.
                    plan(
                        conn,
                        &format!("{RELEASE_SELECT} WHERE r.app_id = ?1 ORDER BY r.version DESC"),
                    ),
                    // Authentication by token.
                    plan(
                        conn,
                        "SELECT u.id FROM tokens t JOIN users u ON u.id = t.user_id \
                         WHERE t.digest = ?1",
                    ),
                    plan(
                        conn,
                        &format!("{EVENT_SELECT} WHERE app_name = ?1 ORDER BY id DESC LIMIT 5"),
                    ),
                ])
            })
            .await
            .unwrap();
        let [apps, apps_for, releases, token, events] = plans;
        assert_eq!(apps, "SCAN apps USING COVERING INDEX apps_listing");
        assert!(
            apps_for.contains("USING COVERING INDEX collaborators_user_id"),
            "{apps_for}"
        );
        assert!(
            releases.contains("USING INDEX sqlite_autoindex_releases_1"),
            "{releases}"
        );
        assert!(!releases.contains("TEMP B-TREE"), "{releases}");
        assert!(
            token.contains("USING INDEX sqlite_autoindex_tokens_1"),
            "{token}"
        );
        assert!(events.contains("USING INDEX events_app_name"), "{events}");
        assert!(!events.contains("TEMP B-TREE"), "{events}");
    }

    #[tokio::test]
    async fn an_in_memory_store_is_private() {
        let a = SqliteStore::open_in_memory().unwrap();
        let b = SqliteStore::open_in_memory().unwrap();
        a.create_user("alice", false).await.unwrap();
        assert!(b.users().await.unwrap().is_empty());
        assert_eq!(format!("{b:?}"), "SqliteStore(:memory:)");
    }

    /// The name of the thread a call of `store` runs on, through `read` or `call`.
    async fn thread_names(store: &SqliteStore) -> (String, String) {
        let name = || std::thread::current().name().unwrap_or("").to_string();
        let read = store.read(move |_| Ok(name())).await.unwrap();
        let call = store.call(move |_| Ok(name())).await.unwrap();
        (read, call)
    }

    #[tokio::test]
    async fn a_file_store_reads_on_read_only_connections_and_writes_on_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("empire.db"))
            .await
            .unwrap();
        let (read, call) = thread_names(&store).await;
        assert!(read.starts_with("empire-sqlite-r"), "{read}");
        assert_eq!(call, "empire-sqlite-w-0");
        // A reader cannot write, even by mistake.
        let err = store
            .read(|conn| Ok(conn.execute("DELETE FROM users", [])?))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("readonly"), "{err}");
        // In memory, one connection does both.
        let memory = SqliteStore::open_in_memory().unwrap();
        let (read, call) = thread_names(&memory).await;
        assert_eq!(
            (read.as_str(), call.as_str()),
            ("empire-sqlite-m-0", "empire-sqlite-m-0")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn every_read_sees_the_writes_committed_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("empire.db"))
            .await
            .unwrap();
        store.create_user("alice", false).await.unwrap();
        // Many writers and readers at once: each task reads its own write back on
        // whichever read-only connection is free, at once and in every list.
        let tasks: Vec<_> = (0..24)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let web = app(&format!("web-{i}"));
                    store.create_app(&web, "alice").await.unwrap();
                    assert_eq!(store.app(&web).await.unwrap().name, web);
                    for version in 1..=5 {
                        let release = store
                            .create_release(&web, NewRelease::default())
                            .await
                            .unwrap();
                        assert_eq!(release.version, version);
                        assert_eq!(store.release(&web, version).await.unwrap().version, version);
                        assert_eq!(store.releases(&web).await.unwrap().len(), version as usize);
                    }
                    store.delete_app(&web).await.unwrap();
                    assert!(matches!(store.app(&web).await, Err(Error::NotFound { .. })));
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert!(store.apps().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_call_that_panics_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("empire.db"))
            .await
            .unwrap();
        let err = store
            .write(|tx| -> Result<()> {
                tx.execute(
                    "INSERT INTO users (name, admin, created_at) VALUES ('ghost', 0, 0)",
                    [],
                )?;
                panic!("a bug in a store call");
            })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("store task failed"), "{err}");
        let err = store
            .read(|_| -> Result<()> { panic!("a bug in a read") })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("store task failed"), "{err}");
        // The connections still serve, and the panicking write was rolled back.
        store.create_user("alice", false).await.unwrap();
        let names: Vec<_> = store
            .users()
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.name)
            .collect();
        assert_eq!(names, ["alice"]);
    }
}
