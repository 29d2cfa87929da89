#!/usr/bin/env bash
# Seeds an Empire store with many apps of many releases each, for the API benchmark
# (bench/api-throughput.sh), by writing SQL straight into the store's schema
# (core/src/store/migrations/{sqlite,postgres}): deploying 20,000 releases through the
# pipeline would take hours, and the gateway has no seeding mode on purpose.
#
#   bench/api-seed.sh sqlite   DATA_DIR/empire.db USER [APPS] [RELEASES]
#   bench/api-seed.sh postgres DATABASE_URL        USER [APPS] [RELEASES]
#
# The store must exist (its schema migrated) and USER must be a user of it: run
# `empire [--database-url URL] --data-dir D users add USER --admin` first. Defaults:
# 1,000 apps of 20 releases. One transaction; a second run on the same store fails on
# the unique app names (use a fresh store).
#
# What a seeded app looks like — what 20 `git push`es of a Dockerfile app (no Procfile)
# by USER leave behind:
# - apps named `${APP_PREFIX}NNNN` (env APP_PREFIX, default `api-bench-service-`;
#   names are at most 30 characters), owned by USER, USER a collaborator, created a
#   minute apart over the last days, current_release = last_version = RELEASES, and the
#   app's config the same as its current release's;
# - releases v1..vN, all `succeeded`, image `empire/<app>:v<N>` (as the builder tags
#   it), image_id `sha256:<64 hex>`, no procfile, process_types {"web":""}, a config of
#   8 vars (~420 bytes of JSON) that changes from release to release (RELEASE_VERSION,
#   GIT_SHA), a 40-hex commit, user USER, description `Deploy <short sha>`, created an
#   hour apart, created_at = updated_at;
# - a formation row web=0 (the app is scaled to zero): the gateway restores every app's
#   current release into containers when it starts, and 1,000 containers of 512 MiB do
#   not fit this machine; a scaled-to-zero app starts none, and the API routes measured
#   read nothing from the formation.
set -euo pipefail

die() {
    printf -- ' !     %s\n' "$*" >&2
    exit 1
}

[ $# -ge 3 ] || die "usage: $0 sqlite|postgres DB_FILE|DATABASE_URL USER [APPS] [RELEASES]"
KIND=$1 TARGET=$2 USER_NAME=$3 APPS=${4:-1000} RELEASES=${5:-20}
PREFIX=${APP_PREFIX:-api-bench-service-}
case "$APPS$RELEASES" in *[!0-9]*) die "APPS and RELEASES are numbers" ;; esac
case "$USER_NAME" in *[!A-Za-z0-9_.@-]*) die "USER: letters, digits and -_.@ only" ;; esac
case "$PREFIX" in *[!a-z0-9-]* | -*) die "APP_PREFIX: lowercase letters, digits and -, not first" ;; esac
{ [ "$APPS" -ge 1 ] && [ "$APPS" -le 9999 ]; } || die "APPS: 1 to 9999"
[ "$RELEASES" -ge 1 ] || die "RELEASES: at least 1"
[ $((${#PREFIX} + 4)) -le 30 ] || die "APP_PREFIX too long: app names have at most 30 characters"

# The config JSON of release v, as SQL text; `$1` is the SQL expression of the version,
# `$2` that of the commit. Eight vars, values a real app would have.
config_sql() {
    printf '%s' "'{\"DATABASE_URL\":\"postgres://app:5e3f1c0a9b7d@db.internal:5432/app_production\",' ||
        '\"GIT_SHA\":\"' || $2 || '\",' ||
        '\"LOG_LEVEL\":\"info\",\"RACK_ENV\":\"production\",' ||
        '\"REDIS_URL\":\"redis://cache.internal:6379/0\",' ||
        '\"RELEASE_VERSION\":\"' || $1 || '\",' ||
        '\"SECRET_KEY_BASE\":\"8c6f2a91d04b7e35f1a0c9d2b6e48f7a3d5c1e9b0f2a4c6e8d1b3f5a7c9e0d2b\",' ||
        '\"WEB_CONCURRENCY\":\"4\"}'"
}

seed_sqlite() {
    command -v sqlite3 >/dev/null || die "sqlite3 is not installed (apt-get install sqlite3)"
    [ -s "$TARGET" ] || die "$TARGET does not exist: create the store first (empire users add)"
    [ "$(sqlite3 "$TARGET" "SELECT count(*) FROM users WHERE name = '$USER_NAME'")" = 1 ] ||
        die "$TARGET has no user $USER_NAME"
    # Times are unix milliseconds (julianday: Debian's sqlite3 3.40 has no unixepoch). The releases are built in a MATERIALIZED CTE so that a
    # release's commit is drawn once and its description and config repeat it.
    sqlite3 -bail "$TARGET" <<SQL
PRAGMA foreign_keys = ON;
.timeout 10000
BEGIN IMMEDIATE;
CREATE TEMP TABLE seed_now AS
    SELECT CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) AS ms,
           (SELECT id FROM users WHERE name = '$USER_NAME') AS owner;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $APPS)
INSERT INTO apps (name, owner_id, current_release, last_version, created_at)
SELECT printf('%s%04d', '$PREFIX', i), (SELECT owner FROM seed_now), $RELEASES, $RELEASES,
       (SELECT ms FROM seed_now) - ($RELEASES + 1) * 3600000 - ($APPS - i) * 60000
FROM n;
CREATE TEMP TABLE seed_apps AS
    SELECT id, name, created_at FROM apps WHERE name LIKE '$PREFIX%';
INSERT INTO collaborators (app_id, user_id) SELECT id, (SELECT owner FROM seed_now) FROM seed_apps;
INSERT INTO formation (app_id, process, quantity, cpu_shares, memory_bytes)
SELECT id, 'web', 0, 1024, 536870912 FROM seed_apps;
WITH RECURSIVE v(j) AS (SELECT 1 UNION ALL SELECT j + 1 FROM v WHERE j < $RELEASES),
r AS MATERIALIZED (
    SELECT a.id AS app_id, a.name, a.created_at, v.j AS version,
           lower(hex(randomblob(20))) AS sha, lower(hex(randomblob(32))) AS digest
    FROM seed_apps a CROSS JOIN v
)
INSERT INTO releases (app_id, version, status, image, image_id, procfile, process_types,
                      config, commit_sha, user_name, description, failure, created_at,
                      updated_at)
SELECT app_id, version, 'succeeded', 'empire/' || name || ':v' || version,
       'sha256:' || digest, NULL, '{"web":""}',
       $(config_sql "version" "sha"), sha, '$USER_NAME',
       'Deploy ' || substr(sha, 1, 7), NULL,
       created_at + version * 3600000, created_at + version * 3600000
FROM r;
UPDATE apps SET config = (SELECT r.config FROM releases r
                          WHERE r.app_id = apps.id AND r.version = apps.current_release)
WHERE id IN (SELECT id FROM seed_apps);
COMMIT;
SQL
}

seed_postgres() {
    command -v psql >/dev/null || die "psql is not installed (apt-get install postgresql-client)"
    psql -X -q -v ON_ERROR_STOP=1 "$TARGET" <<SQL
BEGIN;
CREATE TEMP TABLE seed_now ON COMMIT DROP AS
    SELECT now() AS at, (SELECT id FROM users WHERE name = '$USER_NAME') AS owner;
DO \$\$ BEGIN
    IF (SELECT owner FROM seed_now) IS NULL THEN RAISE EXCEPTION 'no user $USER_NAME'; END IF;
END \$\$;
INSERT INTO apps (name, owner_id, current_release, last_version, created_at)
SELECT format('%s%s', '$PREFIX', lpad(i::text, 4, '0')), (SELECT owner FROM seed_now),
       $RELEASES, $RELEASES,
       (SELECT at FROM seed_now) - interval '1 hour' * ($RELEASES + 1)
                                 - interval '1 minute' * ($APPS - i)
FROM generate_series(1, $APPS) AS i;
CREATE TEMP TABLE seed_apps ON COMMIT DROP AS
    SELECT id, name, created_at FROM apps WHERE name LIKE '$PREFIX%';
INSERT INTO collaborators (app_id, user_id) SELECT id, (SELECT owner FROM seed_now) FROM seed_apps;
INSERT INTO formation (app_id, process, quantity, cpu_shares, memory_bytes)
SELECT id, 'web', 0, 1024, 536870912 FROM seed_apps;
WITH r AS MATERIALIZED (
    SELECT a.id AS app_id, a.name, a.created_at, v AS version,
           substr(encode(sha256(random()::text::bytea), 'hex'), 1, 40) AS sha,
           encode(sha256(random()::text::bytea), 'hex') AS digest
    FROM seed_apps a CROSS JOIN generate_series(1, $RELEASES) AS v
)
INSERT INTO releases (app_id, version, status, image, image_id, procfile, process_types,
                      config, commit_sha, user_name, description, failure, created_at,
                      updated_at)
SELECT app_id, version, 'succeeded', 'empire/' || name || ':v' || version,
       'sha256:' || digest, NULL, '{"web":""}'::jsonb,
       ($(config_sql "version::text" "sha"))::jsonb, sha, '$USER_NAME',
       'Deploy ' || substr(sha, 1, 7), NULL,
       created_at + interval '1 hour' * version, created_at + interval '1 hour' * version
FROM r;
UPDATE apps SET config = r.config FROM releases r
WHERE r.app_id = apps.id AND r.version = apps.current_release
  AND apps.id IN (SELECT id FROM seed_apps);
COMMIT;
-- What autovacuum would do soon after such a bulk insert. (SQLite gets no ANALYZE: the
-- gateway never runs one, so its plans stay the ones production sees.)
ANALYZE apps, releases, collaborators, formation;
SQL
}

started=${EPOCHREALTIME/,/.}
case "$KIND" in
sqlite) seed_sqlite ;;
postgres) seed_postgres ;;
*) die "the store is sqlite or postgres, not $KIND" ;;
esac
printf -- '       seeded %s apps x %s releases into %s in %.1f s\n' "$APPS" "$RELEASES" "$KIND" \
    "$(awk -v a="$started" -v b="${EPOCHREALTIME/,/.}" 'BEGIN { print b - a }')" >&2
