//! The SQLite store (embedded default).
//!
//! One connection per [`SqliteStore`] handle, behind a mutex; every call runs on Tokio's
//! blocking pool. Several processes (the gateway daemon, `empire keys add`, …) may open
//! the same file at once: the database is in WAL mode, waits up to 5 s for a lock, and
//! every write is one short `BEGIN IMMEDIATE` transaction, so a read-modify-write (release
//! numbering, leases) never races with another writer.
//!
//! Timestamps are stored as unix milliseconds taken from the database clock, so that every
//! writer (and, on PostgreSQL, every gateway) compares lease expiries against one clock.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use super::{LeaseHolder, ReleaseBuild, Store};
use crate::app::{App, AppName};
use crate::error::{Error, Result};
use crate::release::{NewRelease, ProcessTypes, Release, ReleaseStatus};
use crate::user::{SshKey, User};

/// The schema migrations, applied in order; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[(&str, &str)] =
    &[("0001_init", include_str!("migrations/sqlite/0001_init.sql"))];

/// How long a connection waits for another writer's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The database clock, in unix milliseconds.
const NOW_MS: &str = "SELECT CAST(ROUND(unixepoch('subsec') * 1000) AS INTEGER)";

/// The SQLite implementation of [`super::Store`].
///
/// Cloning is cheap and shares the connection.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
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

impl SqliteStore {
    /// Opens (creating it and its parent directory if needed) the database at `path` and
    /// brings its schema up to date.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        let path = path.to_path_buf();
        let opened = path.clone();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection> {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| {
                    Error::Store(format!("cannot create directory {}: {e}", dir.display()))
                })?;
            }
            let mut conn = Connection::open(&path).map_err(|e| {
                Error::Store(format!("cannot open database {}: {e}", path.display()))
            })?;
            configure(&conn, true)?;
            migrate(&mut conn)?;
            Ok(conn)
        })
        .await
        .map_err(|e| Error::Store(format!("store task failed: {e}")))??;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            path: Some(opened),
        })
    }

    /// Opens a private in-memory database with the full schema (for tests and dry runs).
    pub fn open_in_memory() -> Result<SqliteStore> {
        let mut conn = Connection::open_in_memory()?;
        configure(&conn, false)?;
        migrate(&mut conn)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            path: None,
        })
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock leaves the connection usable: an open
            // transaction was rolled back when it was dropped.
            let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn)
        })
        .await
        .map_err(|e| Error::Store(format!("store task failed: {e}")))?
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

/// Per-connection settings.
fn configure(conn: &Connection, file: bool) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    if file {
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
    conn.query_row("SELECT id FROM users WHERE name = ?1", [name], |row| {
        row.get(0)
    })
    .optional()?
    .ok_or_else(|| Error::not_found("user", name))
}

fn app_id(conn: &Connection, app: &AppName) -> Result<i64> {
    conn.query_row(
        "SELECT id FROM apps WHERE name = ?1",
        [app.as_str()],
        |row| row.get(0),
    )
    .optional()?
    .ok_or_else(|| Error::not_found("app", app.as_str()))
}

fn release_not_found(app: &AppName, version: u32) -> Error {
    Error::not_found("release", format!("{app} v{version}"))
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
        self.call(move |conn| {
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
        self.call(|conn| {
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
        self.call(move |conn| {
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
        self.call(move |conn| {
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
            Ok(tx.query_row(
                &format!(
                    "INSERT INTO apps (name, owner_id, created_at) VALUES (?1, ?2, ?3) \
                     RETURNING {APP_COLUMNS}"
                ),
                params![name.as_str(), owner_id, now],
                app_row,
            )?)
        })
        .await
    }

    async fn app(&self, name: &AppName) -> Result<App> {
        let name = name.clone();
        self.call(move |conn| {
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
        self.call(|conn| {
            let mut stmt =
                conn.prepare(&format!("SELECT {APP_COLUMNS} FROM apps ORDER BY name"))?;
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
        self.call(move |conn| {
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
        self.call(move |conn| {
            let app_id = app_id(conn, &app)?;
            let mut stmt = conn.prepare(&format!(
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
        self.call(|conn| {
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
                return Err(Error::Conflict(format!(
                    "release {app} v{version} is {status}; its image can no longer change"
                )));
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
            current.check_transition(status).map_err(|_| {
                Error::Conflict(format!(
                    "release {app} v{version} cannot move from {current} to {status}"
                ))
            })?;
            let now = now_ms(tx)?;
            tx.execute(
                "UPDATE releases SET status = ?1, failure = ?2, updated_at = ?3 WHERE id = ?4",
                params![status.as_str(), failure, now, id],
            )?;
            if status == ReleaseStatus::Succeeded {
                tx.execute(
                    "UPDATE apps SET current_release = ?1 WHERE id = ?2",
                    params![version, app_id],
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
        self.call(move |conn| {
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
                return Err(Error::Conflict(format!("deploy lease of {app} was lost")));
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
    async fn delete_release(&self, _app: &AppName, _version: u32) -> Result<()> {
        todo!("store helper")
    }
    async fn app_config(&self, _app: &AppName) -> Result<crate::release::ConfigVars> {
        todo!("store helper")
    }
    async fn set_app_config(&self, _app: &AppName, _config: &crate::release::ConfigVars) -> Result<()> {
        todo!("store helper")
    }
    async fn formation(&self, _app: &AppName) -> Result<Vec<crate::formation::ProcessFormation>> {
        todo!("store helper")
    }
    async fn set_formation(&self, _app: &AppName, _entries: &[crate::formation::ProcessFormation]) -> Result<()> {
        todo!("store helper")
    }
    async fn add_domain(&self, _app: &AppName, _hostname: &str) -> Result<crate::domain::Domain> {
        todo!("store helper")
    }
    async fn domains(&self, _app: Option<&AppName>) -> Result<Vec<crate::domain::Domain>> {
        todo!("store helper")
    }
    async fn remove_domain(&self, _app: &AppName, _hostname: &str) -> Result<()> {
        todo!("store helper")
    }
    async fn create_token(&self, _user: &str, _digest: &str, _description: &str) -> Result<crate::user::ApiToken> {
        todo!("store helper")
    }
    async fn user_by_token(&self, _digest: &str) -> Result<User> {
        todo!("store helper")
    }
    async fn tokens(&self, _user: &str) -> Result<Vec<crate::user::ApiToken>> {
        todo!("store helper")
    }
    async fn revoke_token(&self, _user: &str, _id: i64) -> Result<()> {
        todo!("store helper")
    }
    async fn add_collaborator(&self, _app: &AppName, _user: &str) -> Result<()> {
        todo!("store helper")
    }
    async fn remove_collaborator(&self, _app: &AppName, _user: &str) -> Result<()> {
        todo!("store helper")
    }
    async fn collaborators(&self, _app: &AppName) -> Result<Vec<String>> {
        todo!("store helper")
    }
    async fn is_collaborator(&self, _app: &AppName, _user: &str) -> Result<bool> {
        todo!("store helper")
    }
    async fn apps_for(&self, _user: &User) -> Result<Vec<App>> {
        todo!("store helper")
    }
    async fn record_event(&self, _event: crate::event::NewEvent) -> Result<crate::event::Event> {
        todo!("store helper")
    }
    async fn events(&self, _app: Option<&AppName>, _limit: u32) -> Result<Vec<crate::event::Event>> {
        todo!("store helper")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::ConfigVars;

    fn app(name: &str) -> AppName {
        AppName::new(name).unwrap()
    }

    fn new_release(user: &str, description: &str) -> NewRelease {
        NewRelease {
            commit: Some("1a2b3c4d".to_string()),
            user: user.to_string(),
            description: description.to_string(),
            config: ConfigVars::from([("RACK_ENV".to_string(), "production".to_string())]),
        }
    }

    async fn store_with_app(name: &str) -> SqliteStore {
        let store = SqliteStore::open_in_memory().unwrap();
        store.create_user("alice", false).await.unwrap();
        store.create_app(&app(name), "alice").await.unwrap();
        store
    }

    #[tokio::test]
    async fn the_first_user_is_an_admin() {
        let store = SqliteStore::open_in_memory().unwrap();
        let alice = store.create_user("alice", false).await.unwrap();
        assert!(alice.admin);
        assert_eq!(alice.created_at.offset(), time::UtcOffset::UTC);
        let bob = store.create_user("bob", false).await.unwrap();
        assert!(!bob.admin);
        let carol = store.create_user("carol", true).await.unwrap();
        assert!(carol.admin);
        assert_eq!(store.user("bob").await.unwrap(), bob);
        let names: Vec<_> = store
            .users()
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.name)
            .collect();
        assert_eq!(names, ["alice", "bob", "carol"]);
    }

    #[tokio::test]
    async fn user_errors_name_the_user() {
        let store = SqliteStore::open_in_memory().unwrap();
        store.create_user("alice", false).await.unwrap();
        let err = store.create_user("alice", true).await.unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "{err:?}");
        assert_eq!(err.to_string(), "user alice already exists");
        let err = store.user("zed").await.unwrap_err();
        assert!(
            matches!(err, Error::NotFound { kind: "user", .. }),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "user not found: zed");
        let err = store.create_user(" ", false).await.unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn keys_belong_to_users() {
        let store = SqliteStore::open_in_memory().unwrap();
        store.create_user("alice", false).await.unwrap();
        store.create_user("bob", false).await.unwrap();
        let k1 = store
            .add_key("bob", "SHA256:bbb", "ssh-ed25519 AAAAbbb bob@laptop")
            .await
            .unwrap();
        assert_eq!(k1.user, "bob");
        store
            .add_key("alice", "SHA256:aaa", "ssh-ed25519 AAAAaaa alice@laptop")
            .await
            .unwrap();
        assert_eq!(store.key("SHA256:bbb").await.unwrap(), k1);
        let all: Vec<_> = store
            .keys(None)
            .await
            .unwrap()
            .into_iter()
            .map(|k| (k.user, k.fingerprint))
            .collect();
        assert_eq!(
            all,
            [
                ("alice".to_string(), "SHA256:aaa".to_string()),
                ("bob".to_string(), "SHA256:bbb".to_string())
            ]
        );
        assert_eq!(store.keys(Some("bob")).await.unwrap(), vec![k1]);

        let err = store
            .add_key("alice", "SHA256:bbb", "ssh-ed25519 X")
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "key SHA256:bbb is already registered to user bob"
        );
        let err = store
            .add_key("zed", "SHA256:zzz", "ssh-ed25519 Z")
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "user not found: zed");
        let err = store.keys(Some("zed")).await.unwrap_err();
        assert_eq!(err.to_string(), "user not found: zed");

        store.remove_key("SHA256:bbb").await.unwrap();
        let err = store.key("SHA256:bbb").await.unwrap_err();
        assert!(
            matches!(err, Error::NotFound { kind: "key", .. }),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "key not found: SHA256:bbb");
        let err = store.remove_key("SHA256:bbb").await.unwrap_err();
        assert_eq!(err.to_string(), "key not found: SHA256:bbb");
    }

    #[tokio::test]
    async fn apps_are_unique_and_owned() {
        let store = SqliteStore::open_in_memory().unwrap();
        store.create_user("alice", false).await.unwrap();
        let web = store.create_app(&app("web"), "alice").await.unwrap();
        assert_eq!(web.name.as_str(), "web");
        assert_eq!(web.current_release, None);
        store.create_app(&app("api"), "alice").await.unwrap();
        assert_eq!(store.app(&app("web")).await.unwrap(), web);
        let names: Vec<_> = store
            .apps()
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.name)
            .collect();
        assert_eq!(names, [app("api"), app("web")]);

        let err = store.create_app(&app("web"), "alice").await.unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "{err:?}");
        assert_eq!(err.to_string(), "app web already exists");
        let err = store.create_app(&app("other"), "zed").await.unwrap_err();
        assert_eq!(err.to_string(), "user not found: zed");
        let err = store.app(&app("nope")).await.unwrap_err();
        assert!(
            matches!(err, Error::NotFound { kind: "app", .. }),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "app not found: nope");
        let err = store.delete_app(&app("nope")).await.unwrap_err();
        assert_eq!(err.to_string(), "app not found: nope");
    }

    #[tokio::test]
    async fn releases_are_numbered_per_app_and_listed_newest_first() {
        let store = store_with_app("web").await;
        store.create_app(&app("api"), "alice").await.unwrap();
        let v1 = store
            .create_release(&app("web"), new_release("alice", "Deploy 1a2b3c4"))
            .await
            .unwrap();
        assert_eq!(v1.version, 1);
        assert_eq!(v1.status, ReleaseStatus::Pending);
        assert_eq!(
            v1.config.get("RACK_ENV").map(String::as_str),
            Some("production")
        );
        assert_eq!(store.release(&app("web"), 1).await.unwrap(), v1);

        let api1 = store
            .create_release(&app("api"), new_release("alice", "x"))
            .await
            .unwrap();
        assert_eq!(api1.version, 1);
        let v2 = store
            .create_release(&app("web"), new_release("alice", "y"))
            .await
            .unwrap();
        assert_eq!(v2.version, 2);
        let versions: Vec<_> = store
            .releases(&app("web"))
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.version)
            .collect();
        assert_eq!(versions, [2, 1]);

        let err = store
            .create_release(&app("nope"), NewRelease::default())
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "app not found: nope");
        let err = store.release(&app("web"), 9).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::NotFound {
                    kind: "release",
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "release not found: web v9");
        let err = store.release(&app("nope"), 1).await.unwrap_err();
        assert_eq!(err.to_string(), "app not found: nope");
        let err = store.releases(&app("nope")).await.unwrap_err();
        assert_eq!(err.to_string(), "app not found: nope");
    }

    #[tokio::test]
    async fn a_release_walks_the_state_machine_and_becomes_current() {
        let store = store_with_app("web").await;
        let web = app("web");
        store
            .create_release(&web, new_release("alice", "Deploy"))
            .await
            .unwrap();
        let build = ReleaseBuild {
            image: "localhost:5000/web@sha256:abc".to_string(),
            image_id: "sha256:def".to_string(),
            procfile: Some("web: ./server\n".to_string()),
            process_types: ProcessTypes::from([("web".to_string(), "./server".to_string())]),
        };
        store
            .set_release_status(&web, 1, ReleaseStatus::Building, None)
            .await
            .unwrap();
        store.set_release_build(&web, 1, &build).await.unwrap();
        store
            .set_release_status(&web, 1, ReleaseStatus::Deploying, None)
            .await
            .unwrap();
        assert_eq!(store.app(&web).await.unwrap().current_release, None);
        store
            .set_release_status(&web, 1, ReleaseStatus::Succeeded, None)
            .await
            .unwrap();

        let v1 = store.release(&web, 1).await.unwrap();
        assert_eq!(v1.status, ReleaseStatus::Succeeded);
        assert_eq!(v1.image.as_deref(), Some(build.image.as_str()));
        assert_eq!(v1.image_id.as_deref(), Some("sha256:def"));
        assert_eq!(v1.procfile, build.procfile);
        assert_eq!(v1.process_types, build.process_types);
        assert_eq!(store.app(&web).await.unwrap().current_release, Some(1));

        // Final states are final, and a finished release's image cannot change.
        let err = store
            .set_release_status(&web, 1, ReleaseStatus::Failed, Some("late"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "release web v1 cannot move from succeeded to failed"
        );
        let err = store.set_release_build(&web, 1, &build).await.unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "{err:?}");
        assert!(
            err.to_string().starts_with("release web v1 is succeeded"),
            "{err}"
        );

        // A failed release records why, and leaves the current release alone.
        store
            .create_release(&web, new_release("alice", "Deploy 2"))
            .await
            .unwrap();
        store
            .set_release_status(&web, 2, ReleaseStatus::Failed, Some("health check failed"))
            .await
            .unwrap();
        let v2 = store.release(&web, 2).await.unwrap();
        assert_eq!(v2.status, ReleaseStatus::Failed);
        assert_eq!(v2.failure.as_deref(), Some("health check failed"));
        assert_eq!(store.app(&web).await.unwrap().current_release, Some(1));
        // Versions are never reused after a failure.
        let v3 = store
            .create_release(&web, new_release("alice", "Deploy 3"))
            .await
            .unwrap();
        assert_eq!(v3.version, 3);

        let err = store
            .set_release_status(&web, 7, ReleaseStatus::Building, None)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "release not found: web v7");
    }

    #[tokio::test]
    async fn lists_releases_in_progress_on_every_app() {
        let store = store_with_app("web").await;
        store.create_app(&app("api"), "alice").await.unwrap();
        for name in ["web", "web", "api"] {
            store
                .create_release(&app(name), new_release("alice", "d"))
                .await
                .unwrap();
        }
        store
            .set_release_status(&app("web"), 1, ReleaseStatus::Failed, None)
            .await
            .unwrap();
        store
            .set_release_status(&app("api"), 1, ReleaseStatus::Deploying, None)
            .await
            .unwrap();
        let in_progress: Vec<_> = store
            .releases_in_progress()
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.app.to_string(), r.version, r.status))
            .collect();
        assert_eq!(
            in_progress,
            [
                ("api".to_string(), 1, ReleaseStatus::Deploying),
                ("web".to_string(), 2, ReleaseStatus::Pending)
            ]
        );
    }

    #[tokio::test]
    async fn deploy_logs_append_in_order() {
        let store = store_with_app("web").await;
        let web = app("web");
        store
            .create_release(&web, new_release("alice", "d"))
            .await
            .unwrap();
        store
            .create_release(&web, new_release("alice", "d"))
            .await
            .unwrap();
        assert_eq!(store.deploy_log(&web, 1).await.unwrap(), "");
        for chunk in ["-----> Building\n", "       step 1\n", "", "-----> Done\n"] {
            store.append_deploy_log(&web, 1, chunk).await.unwrap();
        }
        store.append_deploy_log(&web, 2, "other\n").await.unwrap();
        assert_eq!(
            store.deploy_log(&web, 1).await.unwrap(),
            "-----> Building\n       step 1\n-----> Done\n"
        );
        assert_eq!(store.deploy_log(&web, 2).await.unwrap(), "other\n");
        let err = store.append_deploy_log(&web, 3, "x").await.unwrap_err();
        assert_eq!(err.to_string(), "release not found: web v3");
        let err = store.deploy_log(&app("nope"), 1).await.unwrap_err();
        assert_eq!(err.to_string(), "app not found: nope");
    }

    #[tokio::test]
    async fn deleting_an_app_removes_its_releases_logs_and_lease() {
        let store = store_with_app("web").await;
        let web = app("web");
        store
            .create_release(&web, new_release("alice", "d"))
            .await
            .unwrap();
        store.append_deploy_log(&web, 1, "log\n").await.unwrap();
        let ttl = Duration::from_secs(60);
        assert_eq!(
            store
                .try_acquire_lease(&web, "d1", "alice", ttl)
                .await
                .unwrap(),
            None
        );
        store.delete_app(&web).await.unwrap();

        let err = store.app(&web).await.unwrap_err();
        assert_eq!(err.to_string(), "app not found: web");
        let rows = store
            .call(|conn| {
                Ok(conn.query_row(
                    "SELECT (SELECT COUNT(*) FROM releases) + (SELECT COUNT(*) FROM deploy_logs) \
                     + (SELECT COUNT(*) FROM leases)",
                    [],
                    |row| row.get::<_, i64>(0),
                )?)
            })
            .await
            .unwrap();
        assert_eq!(rows, 0);
        // A new app of the same name starts again at v1 with a free lease.
        store.create_app(&web, "alice").await.unwrap();
        assert_eq!(
            store
                .try_acquire_lease(&web, "d2", "bob", ttl)
                .await
                .unwrap(),
            None
        );
        let v1 = store
            .create_release(&web, new_release("alice", "d"))
            .await
            .unwrap();
        assert_eq!(v1.version, 1);
    }

    #[tokio::test]
    async fn leases_exclude_other_owners_until_released_or_lapsed() {
        let store = SqliteStore::open_in_memory().unwrap();
        let web = app("web");
        let ttl = Duration::from_secs(60);
        assert_eq!(
            store
                .try_acquire_lease(&web, "a", "alice", ttl)
                .await
                .unwrap(),
            None
        );
        // The holder may take it again (idempotent).
        assert_eq!(
            store
                .try_acquire_lease(&web, "a", "alice", ttl)
                .await
                .unwrap(),
            None
        );
        let holder = store
            .try_acquire_lease(&web, "b", "bob", ttl)
            .await
            .unwrap()
            .expect("a holds the lease");
        assert_eq!(
            (holder.owner.as_str(), holder.user.as_str()),
            ("a", "alice")
        );
        let left = holder.expires_at - OffsetDateTime::now_utc();
        assert!(left > time::Duration::seconds(50), "{left}");
        assert!(left <= time::Duration::seconds(61), "{left}");

        // Renewing and releasing are the holder's alone.
        store.renew_lease(&web, "a", ttl).await.unwrap();
        let err = store.renew_lease(&web, "b", ttl).await.unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "{err:?}");
        assert_eq!(err.to_string(), "deploy lease of web was lost");
        store.release_lease(&web, "b").await.unwrap();
        assert!(
            store
                .try_acquire_lease(&web, "b", "bob", ttl)
                .await
                .unwrap()
                .is_some()
        );
        store.release_lease(&web, "a").await.unwrap();
        let err = store.renew_lease(&web, "a", ttl).await.unwrap_err();
        assert_eq!(err.to_string(), "deploy lease of web was lost");
        assert_eq!(
            store
                .try_acquire_lease(&web, "b", "bob", ttl)
                .await
                .unwrap(),
            None
        );

        // A lapsed lease goes to the next taker, and its old holder has lost it.
        let short = Duration::from_millis(50);
        let api = app("api");
        assert_eq!(
            store
                .try_acquire_lease(&api, "a", "alice", short)
                .await
                .unwrap(),
            None
        );
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(
            store
                .try_acquire_lease(&api, "b", "bob", ttl)
                .await
                .unwrap(),
            None
        );
        let err = store.renew_lease(&api, "a", ttl).await.unwrap_err();
        assert_eq!(err.to_string(), "deploy lease of api was lost");
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
}
