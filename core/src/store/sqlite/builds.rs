//! [`crate::store::BuildStore`] on SQLite.

use async_trait::async_trait;
use rusqlite::types::Type;
use rusqlite::{OptionalExtension, Row, params};

use super::{SqliteStore, app_id, conversion, now_ms, time_at, to_json};
use crate::app::AppName;
use crate::error::Result;
use crate::store::builds::{bad_build_transition, build_not_found, not_connected};
use crate::store::{
    Build, BuildLogChunk, BuildStatus, BuildStore, DeployKey, NewBuild, NewConnection,
    RepoConnection,
};

const CONNECTION_SELECT: &str = "SELECT a.name, c.repo_url, c.branch, c.secret, c.deploy_key, \
     c.created_at FROM repo_connections c JOIN apps a ON a.id = c.app_id";

fn connection_row(row: &Row<'_>) -> rusqlite::Result<RepoConnection> {
    let app: String = row.get(0)?;
    let key: Option<String> = row.get(4)?;
    Ok(RepoConnection {
        app: AppName::new(&app).map_err(|e| conversion(0, Type::Text, e))?,
        repo_url: row.get(1)?,
        branch: row.get(2)?,
        secret: row.get(3)?,
        deploy_key: key
            .map(|text| serde_json::from_str::<DeployKey>(&text))
            .transpose()
            .map_err(|e| conversion(4, Type::Text, e))?,
        created_at: time_at(row, 5)?,
    })
}

const BUILD_SELECT: &str = "SELECT b.id, a.name, b.source, b.commit_sha, b.reference, b.pusher, \
     b.message, b.delivery, b.status, b.release_version, b.failure, b.created_at, b.updated_at, \
     b.gateway \
     FROM builds b JOIN apps a ON a.id = b.app_id";

fn build_row(row: &Row<'_>) -> rusqlite::Result<Build> {
    let app: String = row.get(1)?;
    let status: String = row.get(8)?;
    Ok(Build {
        id: row.get(0)?,
        app: AppName::new(&app).map_err(|e| conversion(1, Type::Text, e))?,
        source: row.get(2)?,
        commit: row.get(3)?,
        reference: row.get(4)?,
        pusher: row.get(5)?,
        message: row.get(6)?,
        delivery: row.get(7)?,
        status: status.parse().map_err(|e| conversion(8, Type::Text, e))?,
        release: row.get(9)?,
        failure: row.get(10)?,
        created_at: time_at(row, 11)?,
        updated_at: time_at(row, 12)?,
        gateway: row.get(13)?,
    })
}

/// A build's row id and status; not found names the app or the build.
fn build_status(conn: &rusqlite::Connection, app: &AppName, id: i64) -> Result<BuildStatus> {
    let app_id = app_id(conn, app)?;
    let status: String = conn
        .prepare_cached("SELECT status FROM builds WHERE id = ?1 AND app_id = ?2")?
        .query_row(params![id, app_id], |row| row.get(0))
        .optional()?
        .ok_or_else(|| build_not_found(app, id))?;
    status.parse()
}

#[async_trait]
impl BuildStore for SqliteStore {
    async fn connect_repo(
        &self,
        app: &AppName,
        connection: &NewConnection,
    ) -> Result<RepoConnection> {
        let (app, connection) = (app.clone(), connection.clone());
        self.write(move |tx| {
            let app_id = app_id(tx, &app)?;
            let now = now_ms(tx)?;
            let key = connection.deploy_key.as_ref().map(to_json).transpose()?;
            tx.execute(
                "INSERT INTO repo_connections (app_id, repo_url, branch, secret, deploy_key, \
                 created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (app_id) DO UPDATE SET repo_url = excluded.repo_url, \
                 branch = excluded.branch, secret = excluded.secret, \
                 deploy_key = excluded.deploy_key, created_at = excluded.created_at",
                params![
                    app_id,
                    connection.repo_url,
                    connection.branch,
                    connection.secret,
                    key,
                    now
                ],
            )?;
            Ok(tx.query_row(
                &format!("{CONNECTION_SELECT} WHERE c.app_id = ?1"),
                [app_id],
                connection_row,
            )?)
        })
        .await
    }

    async fn repo_connection(&self, app: &AppName) -> Result<RepoConnection> {
        let app = app.clone();
        self.call(move |conn| {
            let app_id = app_id(conn, &app)?;
            conn.prepare_cached(&format!("{CONNECTION_SELECT} WHERE c.app_id = ?1"))?
                .query_row([app_id], connection_row)
                .optional()?
                .ok_or_else(|| not_connected(&app))
        })
        .await
    }

    async fn disconnect_repo(&self, app: &AppName) -> Result<()> {
        let app = app.clone();
        self.write(move |tx| {
            let app_id = app_id(tx, &app)?;
            let removed = tx.execute("DELETE FROM repo_connections WHERE app_id = ?1", [app_id])?;
            if removed == 0 {
                return Err(not_connected(&app));
            }
            Ok(())
        })
        .await
    }

    async fn record_delivery(&self, app: &AppName, delivery: &str) -> Result<bool> {
        let (app, delivery) = (app.clone(), delivery.to_string());
        self.write(move |tx| {
            let app_id = app_id(tx, &app)?;
            let now = now_ms(tx)?;
            let inserted = tx.execute(
                "INSERT INTO received_deliveries (app_id, delivery, created_at) \
                 VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                params![app_id, delivery, now],
            )?;
            Ok(inserted == 1)
        })
        .await
    }

    async fn create_build(&self, app: &AppName, build: &NewBuild) -> Result<Build> {
        let (app, build) = (app.clone(), build.clone());
        self.write(move |tx| {
            let app_id = app_id(tx, &app)?;
            let now = now_ms(tx)?;
            let id: i64 = tx.query_row(
                "INSERT INTO builds (app_id, source, commit_sha, reference, pusher, message, \
                 delivery, gateway, status, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'queued', ?9, ?9) RETURNING id",
                params![
                    app_id,
                    build.source,
                    build.commit,
                    build.reference,
                    build.pusher,
                    build.message,
                    build.delivery,
                    build.gateway,
                    now
                ],
                |row| row.get(0),
            )?;
            Ok(tx.query_row(&format!("{BUILD_SELECT} WHERE b.id = ?1"), [id], build_row)?)
        })
        .await
    }

    async fn build(&self, app: &AppName, id: i64) -> Result<Build> {
        let app = app.clone();
        self.call(move |conn| {
            let app_id = app_id(conn, &app)?;
            conn.prepare_cached(&format!("{BUILD_SELECT} WHERE b.id = ?1 AND b.app_id = ?2"))?
                .query_row(params![id, app_id], build_row)
                .optional()?
                .ok_or_else(|| build_not_found(&app, id))
        })
        .await
    }

    async fn builds(&self, app: &AppName, limit: u32) -> Result<Vec<Build>> {
        let app = app.clone();
        self.call(move |conn| {
            let app_id = app_id(conn, &app)?;
            let builds = conn
                .prepare_cached(&format!(
                    "{BUILD_SELECT} WHERE b.app_id = ?1 ORDER BY b.id DESC LIMIT ?2"
                ))?
                .query_map(params![app_id, limit], build_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(builds)
        })
        .await
    }

    async fn set_build_status(
        &self,
        app: &AppName,
        id: i64,
        status: BuildStatus,
        release: Option<u32>,
        failure: Option<&str>,
    ) -> Result<()> {
        let (app, failure) = (app.clone(), failure.map(str::to_string));
        self.write(move |tx| {
            let current = build_status(tx, &app, id)?;
            if !current.can_move_to(status) {
                return Err(bad_build_transition(id, current, status));
            }
            let now = now_ms(tx)?;
            tx.execute(
                "UPDATE builds SET status = ?1, release_version = COALESCE(?2, release_version), \
                 failure = ?3, updated_at = ?4 WHERE id = ?5",
                params![status.as_str(), release, failure, now, id],
            )?;
            Ok(())
        })
        .await
    }

    async fn unfinished_builds(&self) -> Result<Vec<Build>> {
        self.call(|conn| {
            let builds = conn
                .prepare_cached(&format!(
                    "{BUILD_SELECT} WHERE b.status IN ('queued', 'running') ORDER BY b.id"
                ))?
                .query_map([], build_row)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(builds)
        })
        .await
    }

    async fn append_build_log(&self, app: &AppName, id: i64, text: &str) -> Result<()> {
        let (app, text) = (app.clone(), text.to_string());
        self.write(move |tx| {
            build_status(tx, &app, id)?;
            if !text.is_empty() {
                tx.execute(
                    "INSERT INTO build_logs (build_id, text) VALUES (?1, ?2)",
                    params![id, text],
                )?;
            }
            Ok(())
        })
        .await
    }

    async fn build_log(&self, app: &AppName, id: i64, after: i64) -> Result<Vec<BuildLogChunk>> {
        let app = app.clone();
        self.call(move |conn| {
            build_status(conn, &app, id)?;
            let chunks = conn
                .prepare_cached(
                    "SELECT id, text FROM build_logs WHERE build_id = ?1 AND id > ?2 ORDER BY id",
                )?
                .query_map(params![id, after], |row| {
                    Ok(BuildLogChunk {
                        seq: row.get(0)?,
                        text: row.get(1)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(chunks)
        })
        .await
    }
}
