#!/usr/bin/env bash
# The mysmshook demo: installs what is missing, starts a throwaway PostgreSQL 15 with pg_cron,
# creates the extension, sends Supabase's sample hook events through the hooks exactly as
# Supabase Auth does, delivers them with the built-in log provider, then lets pg_cron deliver
# one more on its own. No account anywhere. Run it again at will: it starts from scratch.
#   KEEP=1 scripts/demo.sh   leaves the cluster running afterwards
#   scripts/demo.sh --sql-only   the SQL-only install instead (dist/), as hosted Supabase has it:
#                                applied by a database owner that is not a superuser, delivered
#                                by mysmshook-worker
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${DEMO_DIR:-/tmp/mysmshook-demo}
PORT=${DEMO_PORT:-55499}
EVENTS=examples/events
SQL_ONLY=false
if [ "${1:-}" = --sql-only ]; then SQL_ONLY=true; fi

scripts/bootstrap.sh

printf '\n==> Starting a throwaway PostgreSQL 15 with pg_cron on 127.0.0.1:%s (%s)\n' "$PORT" "$DIR"
scripts/cluster.sh start "$DIR" "$PORT"
cleanup() { [ -n "${KEEP:-}" ] || scripts/cluster.sh stop "$DIR"; }
trap cleanup EXIT

DATABASE=postgres OWNER=postgres
if $SQL_ONLY; then DATABASE=app OWNER=app_owner; fi
psql_as() { local user=$1; shift; psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U "$user" -d "$DATABASE" "$@"; }

hook() { # hook FUNCTION EVENT_FILE: what Supabase Auth runs, in its own transaction
    psql_as supabase_auth_admin -v event="$(cat "$2")" -t -A <<SQL
begin;
set local statement_timeout to '2000';
select '$1($(basename "$2")) -> ' || "mysmshook"."$1"(:'event')::text;
commit;
SQL
}

send_samples() {
    printf '\n==> Supabase Auth calls the hooks (pg-functions://postgres/mysmshook/send_sms and .../send_email)\n'
    hook send_sms "$EVENTS/sms_seed.json"
    hook send_sms "$EVENTS/sms_auth.json"
    hook send_email "$EVENTS/email_seed.json"
    hook send_email "$EVENTS/email_change.json"
    echo '{"user": {"phone": "not a number"}, "sms": {"otp": "123456"}}' >"$DIR/bad_event.json"
    hook send_sms "$DIR/bad_event.json"

    printf '\n==> Queued jobs\n'
    psql_as "$OWNER" -c "select job_id, status, channel, action_type, priority, scheduled_at, job_data->>'to' as recipient
                           from mysmshook.job_queue order by priority desc, created_at"
}

show_delivered() {
    psql_as "$OWNER" -c "select status, channel, action_type, route, provider, job_data->>'to' as recipient, sms_encoding, sms_segments, last_error
                           from mysmshook.job_queue order by finished_at"
    printf '\nThe first answer above is a 400: the sample event from Supabase'"'"'s documentation has\n'
    printf '+1333363128, only nine digits after +1, so libphonenumber (and any real provider) refuses it.\n'
    printf 'The hook says so at once and Auth shows the message; nothing is queued.\n'
}

if $SQL_ONLY; then
    printf '\n==> Supabase'"'"'s roles, and a database whose owner is not a superuser (as postgres is on Supabase)\n'
    psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres -d postgres <<'SQL'
create role supabase_auth_admin login noinherit;
alter role supabase_auth_admin set search_path = auth;
create role anon nologin;
create role authenticated nologin;
create role service_role nologin;
create role app_owner login nosuperuser;
create role mysmshook_worker login;
create database app owner app_owner;
\c app
create schema auth authorization supabase_auth_admin;
SQL
    printf '\n==> Applying dist/mysmshook--*.sql as app_owner (psql -f, one transaction)\n'
    psql_as app_owner --single-transaction -f dist/mysmshook--*.sql
    psql_as app_owner -c "select mysmshook.grant_worker_access('mysmshook_worker', remote => true)" >/dev/null
    send_samples
    printf '\n==> Delivering: mysmshook-worker --run-for 3s (the log provider writes to its log; no account anywhere)\n'
    MYSMSHOOK_DATABASE_URL="postgres://mysmshook_worker@127.0.0.1:$PORT/app?sslmode=disable" MYSMSHOOK_LOG_SINK=on \
        target/release/mysmshook-worker --run-for 3s 2>&1 | grep -o 'mysmshook log provider.*' | cut -c1-200
    show_delivered
    printf '\n==> What an operator sees: select ... from mysmshook.metrics()\n'
    psql_as app_owner -c "select channel, route, provider, pending, completed, failed, requests,
                                queue_latency_ms[1]::int as queue_p50_ms from mysmshook.metrics()"
    state=$(psql_as app_owner -t -A -c "select count(*) from mysmshook.job_queue where status <> 'completed'")
    [ "$state" = 0 ] || { echo "mysmshook-worker did not deliver every job" >&2; exit 1; }
    printf '\nDone. The demo cluster %s.\n' "$([ -n "${KEEP:-}" ] && echo "keeps running on 127.0.0.1:$PORT (database app, user app_owner)" || echo "is stopped")"
    exit 0
fi

printf '\n==> Creating the extension (with the role Supabase Auth uses)\n'
psql_as postgres <<'SQL'
create role supabase_auth_admin login noinherit;
create schema auth authorization supabase_auth_admin;
alter role supabase_auth_admin set search_path = auth;
create extension pg_cron;
create extension mysmshook;
\dx mysmshook
-- No account anywhere: let the log provider "deliver" to the server log (development only).
load 'mysmshook';
alter system set mysmshook.log_sink = on;
select pg_reload_conf();
SQL

send_samples

printf '\n==> Delivering: call mysmshook.run_worker()\n'
psql_as postgres -c "call mysmshook.run_worker()"
show_delivered

printf '\n==> What the log provider wrote to the server log (%s/postgres.log)\n' "$DIR"
grep -o 'mysmshook log provider.*' "$DIR/postgres.log" | cut -c1-200

printf '\n==> What an operator sees: select ... from mysmshook.metrics()\n'
psql_as postgres -c "select channel, route, provider, pending, completed, failed, requests,
                            queue_latency_ms[1]::int as queue_p50_ms from mysmshook.metrics()"

printf '\n==> Scheduling delivery with pg_cron: select mysmshook.schedule()\n'
psql_as postgres -c "select mysmshook.schedule() as cron_job_id"
hook send_sms "$EVENTS/sms_auth.json"
printf 'Waiting for pg_cron (it fires at the start of each minute) to deliver the new job'
for _ in $(seq 1 140); do
    state=$(psql_as postgres -t -A -c "select count(*) from mysmshook.job_queue where status in ('pending', 'running')")
    [ "$state" = 0 ] && break
    printf '.'
    sleep 0.5
done
echo
psql_as postgres -c "select status, count(*) from mysmshook.job_queue group by status order by status"
psql_as postgres -c "select jobid, schedule, command from cron.job"
psql_as postgres -c "select mysmshook.unschedule()"
[ "$state" = 0 ] || { echo "pg_cron did not deliver the job in time" >&2; exit 1; }
printf '\nDone. The demo cluster %s.\n' "$([ -n "${KEEP:-}" ] && echo "keeps running on 127.0.0.1:$PORT (user postgres)" || echo "is stopped")"
