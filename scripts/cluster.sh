#!/usr/bin/env bash
# Throwaway PostgreSQL 15 cluster with pg_cron preloaded, for the demo and the tests.
#   scripts/cluster.sh start DIR PORT   (re)create and start a cluster under DIR on 127.0.0.1:PORT
#   scripts/cluster.sh stop DIR         stop it (the files stay for inspection)
#   scripts/cluster.sh crash DIR        stop it as a crash would (-m immediate), then start it again
# PRELOAD overrides shared_preload_libraries (default: pg_cron,pg_stat_statements).
# PG_MAJOR=17 runs PostgreSQL 17 from the Debian 13 root of scripts/pg17-root.sh (DIR must be
# under /tmp, which is mounted there at the same path); the default is the host's 15.
# PostgreSQL refuses to run as root, so the server runs as the postgres system user.
set -euo pipefail
PG_MAJOR=${PG_MAJOR:-15}
BIN=/usr/lib/postgresql/$PG_MAJOR/bin
if [ "$PG_MAJOR" = 15 ]; then
    as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
    own() { chown -R postgres:postgres "$1"; }
else
    ROOT=$("$(dirname "$0")/pg17-root.sh" path)
    "$(dirname "$0")/pg17-root.sh" mount
    as_postgres() { chroot "$ROOT" runuser -u postgres -- "$@"; }
    own() { chroot "$ROOT" chown -R postgres:postgres "$1"; }
fi

cmd=${1:?usage: cluster.sh start DIR PORT | stop DIR | crash DIR}
dir=${2:?cluster directory}
case "$cmd" in
start)
    port=${3:?port}
    if [ -f "$dir/data/postmaster.pid" ]; then as_postgres "$BIN/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true; fi
    rm -rf "$dir"
    mkdir -p "$dir/sock"
    [ "$(id -u)" = 0 ] && own "$dir"
    as_postgres "$BIN/initdb" -D "$dir/data" -U postgres -A trust --no-sync >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log"; exit 1; }
    cat >>"$dir/data/postgresql.conf" <<CONF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir/sock'
shared_preload_libraries = '${PRELOAD-pg_cron,pg_stat_statements}'
pg_stat_statements.track = all
cron.database_name = 'postgres'
cron.host = '$dir/sock'
# Jobs run in background workers: with pg_cron 1.4 in its default (libpq) mode, DROP DATABASE
# anywhere in the cluster waits for the running job (up to a minute with the schedule's runs).
cron.use_background_workers = on
max_connections = 200
max_worker_processes = 32
fsync = off
synchronous_commit = off
full_page_writes = off
log_line_prefix = '%m [%p] '
CONF
    as_postgres "$BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 start >/dev/null \
        || { tail -20 "$dir/postgres.log"; exit 1; }
    ;;
stop)
    if [ -f "$dir/data/postmaster.pid" ]; then as_postgres "$BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null; fi
    ;;
crash)
    as_postgres "$BIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null
    as_postgres "$BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 start >/dev/null \
        || { tail -20 "$dir/postgres.log"; exit 1; }
    ;;
*) echo "usage: cluster.sh start DIR PORT | stop DIR | crash DIR" >&2; exit 2 ;;
esac
