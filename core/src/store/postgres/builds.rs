//! [`crate::store::BuildStore`] on PostgreSQL.

use async_trait::async_trait;
use tokio_postgres::Row;
use tokio_postgres::types::Json;

use super::{
    ATTEMPTS, PgResult, PostgresStore, app_id, app_id_kept, app_name_at, execute, opt_unsigned,
    query, query_one, query_opt, step, without_nul,
};
use crate::app::AppName;
use crate::error::{Error, Result};
use crate::store::builds::{bad_build_transition, build_not_found, not_connected};
use crate::store::{
    Build, BuildLogChunk, BuildStatus, BuildStore, DeployKey, NewBuild, NewConnection,
    RepoConnection,
};

const CONNECTION_SELECT: &str = "SELECT a.name, c.repo_url, c.branch, c.secret, c.deploy_key, \
     c.created_at FROM repo_connections c JOIN apps a ON a.id = c.app_id";

fn connection_row(row: &Row) -> PgResult<RepoConnection> {
    let key: Option<Json<DeployKey>> = row.try_get(4)?;
    Ok(RepoConnection {
        app: app_name_at(row, 0)?,
        repo_url: row.try_get(1)?,
        branch: row.try_get(2)?,
        secret: row.try_get(3)?,
        deploy_key: key.map(|Json(key)| key),
        created_at: row.try_get(5)?,
    })
}

const BUILD_SELECT: &str = "SELECT b.id, a.name, b.source, b.commit_sha, b.reference, b.pusher, \
     b.message, b.delivery, b.status, b.release_version, b.failure, b.created_at, b.updated_at, \
     b.gateway \
     FROM builds b JOIN apps a ON a.id = b.app_id";

fn build_row(row: &Row) -> PgResult<Build> {
    let status: &str = row.try_get(8)?;
    Ok(Build {
        id: row.try_get(0)?,
        app: app_name_at(row, 1)?,
        source: row.try_get(2)?,
        commit: row.try_get(3)?,
        reference: row.try_get(4)?,
        pusher: row.try_get(5)?,
        message: row.try_get(6)?,
        delivery: row.try_get(7)?,
        status: status.parse()?,
        release: opt_unsigned(row, 9)?,
        failure: row.try_get(10)?,
        created_at: row.try_get(11)?,
        updated_at: row.try_get(12)?,
        gateway: row.try_get(13)?,
    })
}

/// A build's status, its row locked when `lock`; not found names the app or the build.
async fn build_status(
    c: &impl deadpool_postgres::GenericClient,
    app: &AppName,
    id: i64,
    lock: bool,
) -> PgResult<BuildStatus> {
    let app_id = app_id(c, app).await?;
    let sql = if lock {
        "SELECT status FROM builds WHERE id = $1 AND app_id = $2 FOR UPDATE"
    } else {
        "SELECT status FROM builds WHERE id = $1 AND app_id = $2"
    };
    match query_opt(c, sql, &[&id, &app_id]).await? {
        Some(row) => {
            let status: &str = row.try_get(0)?;
            Ok(status.parse()?)
        }
        None => Err(build_not_found(app, id).into()),
    }
}

#[async_trait]
impl BuildStore for PostgresStore {
    async fn connect_repo(
        &self,
        app: &AppName,
        connection: &NewConnection,
    ) -> Result<RepoConnection> {
        let key = connection.deploy_key.clone().map(Json);
        transaction!(self, |tx| {
            let app_id = app_id_kept(&tx, app).await?;
            execute(
                &tx,
                "INSERT INTO repo_connections (app_id, repo_url, branch, secret, deploy_key) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (app_id) DO UPDATE SET repo_url = excluded.repo_url, \
                 branch = excluded.branch, secret = excluded.secret, \
                 deploy_key = excluded.deploy_key, created_at = now()",
                &[
                    &app_id,
                    &connection.repo_url,
                    &connection.branch,
                    &connection.secret,
                    &key,
                ],
            )
            .await?;
            let row = query_one(
                &tx,
                &format!("{CONNECTION_SELECT} WHERE c.app_id = $1"),
                &[&app_id],
            )
            .await?;
            connection_row(&row)
        })
    }

    async fn repo_connection(&self, app: &AppName) -> Result<RepoConnection> {
        read!(self, |c| {
            let app_id = app_id(&c, app).await?;
            match query_opt(
                &c,
                &format!("{CONNECTION_SELECT} WHERE c.app_id = $1"),
                &[&app_id],
            )
            .await?
            {
                Some(row) => connection_row(&row),
                None => Err(not_connected(app).into()),
            }
        })
    }

    async fn disconnect_repo(&self, app: &AppName) -> Result<()> {
        transaction!(self, |tx| {
            let app_id = app_id(&tx, app).await?;
            let removed = execute(
                &tx,
                "DELETE FROM repo_connections WHERE app_id = $1",
                &[&app_id],
            )
            .await?;
            if removed == 0 {
                return Err(not_connected(app).into());
            }
            Ok(())
        })
    }

    async fn record_delivery(&self, app: &AppName, delivery: &str) -> Result<bool> {
        let delivery = without_nul(delivery);
        transaction!(self, |tx| {
            let app_id = app_id_kept(&tx, app).await?;
            let inserted = execute(
                &tx,
                "INSERT INTO received_deliveries (app_id, delivery) VALUES ($1, $2) \
                 ON CONFLICT DO NOTHING",
                &[&app_id, &delivery],
            )
            .await?;
            Ok(inserted == 1)
        })
    }

    async fn create_build(&self, app: &AppName, build: &NewBuild) -> Result<Build> {
        let message = without_nul(&build.message);
        let pusher = without_nul(&build.pusher);
        transaction!(self, |tx| {
            let app_id = app_id_kept(&tx, app).await?;
            let row = query_one(
                &tx,
                "INSERT INTO builds (app_id, source, commit_sha, reference, pusher, message, \
                 delivery, gateway, status) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'queued') RETURNING id",
                &[
                    &app_id,
                    &build.source,
                    &build.commit,
                    &build.reference,
                    &pusher,
                    &message,
                    &build.delivery,
                    &build.gateway,
                ],
            )
            .await?;
            let id: i64 = row.try_get(0)?;
            let row = query_one(&tx, &format!("{BUILD_SELECT} WHERE b.id = $1"), &[&id]).await?;
            build_row(&row)
        })
    }

    async fn build(&self, app: &AppName, id: i64) -> Result<Build> {
        read!(self, |c| {
            let app_id = app_id(&c, app).await?;
            match query_opt(
                &c,
                &format!("{BUILD_SELECT} WHERE b.id = $1 AND b.app_id = $2"),
                &[&id, &app_id],
            )
            .await?
            {
                Some(row) => build_row(&row),
                None => Err(build_not_found(app, id).into()),
            }
        })
    }

    async fn builds(&self, app: &AppName, limit: u32) -> Result<Vec<Build>> {
        let limit = i64::from(limit);
        read!(self, |c| {
            let app_id = app_id(&c, app).await?;
            query(
                &c,
                &format!("{BUILD_SELECT} WHERE b.app_id = $1 ORDER BY b.id DESC LIMIT $2"),
                &[&app_id, &limit],
            )
            .await?
            .iter()
            .map(build_row)
            .collect()
        })
    }

    async fn set_build_status(
        &self,
        app: &AppName,
        id: i64,
        status: BuildStatus,
        release: Option<u32>,
        failure: Option<&str>,
    ) -> Result<()> {
        let release = release
            .map(|v| {
                i32::try_from(v)
                    .map_err(|_| Error::invalid("release", format!("v{v} is out of range")))
            })
            .transpose()?;
        let failure = failure.map(without_nul);
        transaction!(self, |tx| {
            let current = build_status(&tx, app, id, true).await?;
            if !current.can_move_to(status) {
                return Err(bad_build_transition(id, current, status).into());
            }
            execute(
                &tx,
                "UPDATE builds SET status = $1, release_version = COALESCE($2, release_version), \
                 failure = $3, updated_at = now() WHERE id = $4",
                &[&status.as_str(), &release, &failure, &id],
            )
            .await?;
            Ok(())
        })
    }

    async fn unfinished_builds(&self) -> Result<Vec<Build>> {
        read!(self, |c| {
            query(
                &c,
                &format!("{BUILD_SELECT} WHERE b.status IN ('queued', 'running') ORDER BY b.id"),
                &[],
            )
            .await?
            .iter()
            .map(build_row)
            .collect()
        })
    }

    async fn append_build_log(&self, app: &AppName, id: i64, text: &str) -> Result<()> {
        let text = without_nul(text);
        transaction!(self, |tx| {
            build_status(&tx, app, id, false).await?;
            if !text.is_empty() {
                execute(
                    &tx,
                    "INSERT INTO build_logs (build_id, text) VALUES ($1, $2)",
                    &[&id, &text],
                )
                .await?;
            }
            Ok(())
        })
    }

    async fn build_log(&self, app: &AppName, id: i64, after: i64) -> Result<Vec<BuildLogChunk>> {
        read!(self, |c| {
            build_status(&c, app, id, false).await?;
            query(
                &c,
                "SELECT id, text FROM build_logs WHERE build_id = $1 AND id > $2 ORDER BY id",
                &[&id, &after],
            )
            .await?
            .iter()
            .map(|row| {
                Ok(BuildLogChunk {
                    seq: row.try_get(0)?,
                    text: row.try_get(1)?,
                })
            })
            .collect()
        })
    }
}
