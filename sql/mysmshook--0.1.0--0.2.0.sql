-- mysmshook 0.1.0 -> 0.2.0 (ALTER EXTENSION mysmshook UPDATE): queued jobs and configuration
-- are kept. Run it right after installing the 0.2.0 files: until it has run, the 0.1.0 objects
-- call the 0.2.0 library.
--
-- What changes: the delivery core (claims owned by a per-claim token instead of a backend pid,
-- leases renewed and rescued without charging a retry, outcomes recorded in small groups by the
-- functions of sql/queue.sql, resends superseding older codes), the worker (run_worker, which
-- pg_cron jobs made by 0.1.0's schedule() are moved to), the built-in log provider (no default
-- rows, so pg_dump/pg_restore round-trip), the queue in pg_dump, and templates that wait.
-- A 0.1.0 worker in the middle of a batch holds row locks: the ALTER TABLE below waits for it.

-- The queue --------------------------------------------------------------------------------

-- A 'running' job was claimed by a 0.1.0 worker, known by its pid. It gets a claim token that no
-- worker holds, so it is rescued (rescues + 1, no retry charged) once its lease passes, as a
-- job of a stopped worker is.
alter table mysmshook.job_queue drop constraint job_queue_lease_check;
alter table mysmshook.job_queue
    alter column locked_by type uuid using case when status = 'running' then gen_random_uuid() end;
alter table mysmshook.job_queue
    add column rescues int not null default 0,
    add column resend_key text;

-- Jobs already queued carry codes too: give them their resend key (src/intake.rs, resend_key),
-- so that a code requested again after the upgrade supersedes the one waiting.
update mysmshook.job_queue
   set resend_key = pg_catalog.concat_ws('/', channel, action_type,
                                         coalesce(job_data->>'sms_type', ''),
                                         coalesce(job_data->>'user_id', ''),
                                         job_data->>'to')
 where status in ('pending', 'running')
   and (job_data ? 'code' or job_data ? 'token_hash');

alter table mysmshook.job_queue
    drop constraint job_queue_status_check,
    add constraint job_queue_status_check
        check (status in ('pending', 'running', 'completed', 'failed', 'expired', 'superseded')),
    add constraint job_queue_lease_check
        check ((status = 'running') = (locked_until is not null)
               and (status = 'running') = (locked_by is not null));

comment on table mysmshook.job_queue is
    'Authentication messages waiting for, in, or done with delivery. Status: pending (due at scheduled_at), '
    'running (claimed by a worker until locked_until), completed, failed, expired (code no longer usable), '
    'superseded (a newer code for the same user, action and destination was queued).';
comment on column mysmshook.job_queue.priority is
    'Higher first: 30 MFA/reauthentication, 20 sign-in and confirmation codes, 10 invites, 0 notifications. Equal priority: due retries first, then older scheduled_at.';

drop index mysmshook.job_queue_due_idx;
create index job_queue_due_idx
    on mysmshook.job_queue (priority desc, (retry_count = 0), scheduled_at, created_at)
    where status = 'pending';
create index job_queue_resend_idx
    on mysmshook.job_queue (resend_key, created_at)
    where resend_key is not null;
drop index mysmshook.job_queue_finished_idx;
create index job_queue_finished_idx
    on mysmshook.job_queue (finished_at)
    where status in ('completed', 'failed', 'expired', 'superseded');

select pg_catalog.pg_extension_config_dump('mysmshook.job_queue', '');

-- Configuration ----------------------------------------------------------------------------

-- The log provider is built in now: its 0.1.0 row goes (the name is reserved), and routes that
-- name it keep working. (The row trigger would refuse the delete while a route names it.)
alter table mysmshook.providers disable trigger providers_check;
delete from mysmshook.providers where name = 'log' and kind = 'log';
alter table mysmshook.providers enable trigger providers_check;

create table mysmshook.config_version (
    version bigint not null default 0,
    only_row boolean primary key default true check (only_row)
);
insert into mysmshook.config_version default values;

create or replace view mysmshook.queue_status as
select q.status,
       q.channel,
       count(*)                                          as jobs,
       min(q.scheduled_at) filter (where q.status = 'pending' and q.scheduled_at <= now())
                                                         as oldest_due,
       max(q.finished_at)                                as last_finished,
       count(*) filter (where q.provider = 'log'
                           or q.provider in (select p.name from mysmshook.providers p where p.kind = 'log'))
                                                         as to_server_log
  from mysmshook.job_queue q
 group by q.status, q.channel;
comment on view mysmshook.queue_status is 'Job counts per status and channel; to_server_log: jobs the log provider "delivered" to the server log only.';

-- Functions --------------------------------------------------------------------------------

-- 0.1.0's worker: replaced by sql/queue.sql's functions and run_worker.
drop procedure mysmshook.dequeue_and_run_jobs(interval);
drop function mysmshook.claim_batch();
drop function mysmshook.deliver_batch(uuid[]);
drop function mysmshook.poll_interval();
drop function mysmshook.prune_finished_jobs();

-- The library's functions, all of them re-declared (the same definitions as a fresh install).
CREATE OR REPLACE FUNCTION "check_provider"(
	"kind" TEXT, /* & str */
	"settings" jsonb /* JsonB */
) RETURNS void
STRICT STABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'check_provider_wrapper';
CREATE OR REPLACE FUNCTION "check_template"(
	"channel" TEXT, /* & str */
	"action_type" TEXT, /* & str */
	"subject" TEXT, /* Option < & str > */
	"body" TEXT, /* & str */
	"html" TEXT /* Option < & str > */
) RETURNS void
STABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'check_template_wrapper';
CREATE OR REPLACE FUNCTION "dequeue_and_run_jobs"() RETURNS INT /* Result < i32, pgrx :: spi :: Error > */
STRICT VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'dequeue_and_run_jobs_wrapper';
CREATE OR REPLACE FUNCTION "latin_america_regions"() RETURNS TEXT[] /* Vec < & '_ str > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'latin_america_regions_wrapper';
CREATE OR REPLACE FUNCTION "send_email"(
	"event" jsonb /* Option < hook_arg :: JsonbText > */
) RETURNS jsonb /* JsonB */
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'send_email_wrapper';
CREATE OR REPLACE FUNCTION "send_sms"(
	"event" jsonb /* Option < hook_arg :: JsonbText > */
) RETURNS jsonb /* JsonB */
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'send_sms_wrapper';
CREATE OR REPLACE FUNCTION "worker_begin"(
	"poll_for" double precision /* f64 */
) RETURNS VOID /* Result < (), pgrx :: spi :: Error > */
STRICT VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'worker_begin_wrapper';
CREATE OR REPLACE FUNCTION "worker_step"() RETURNS TEXT /* Result < & '_ str, pgrx :: spi :: Error > */
STRICT VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'worker_step_wrapper';

-- sql/queue.sql
-- The queue's state machine. A job's life, read top to bottom:
--
--   pending ──claim_jobs──▶ running ──record_outcomes──▶ completed | failed | expired
--      ▲                     │  │                     └─▶ pending (retry, after a backoff)
--      │                     │  └─renew_leases (the holder, while it works)
--      └──release_jobs───────┤     (given back unstarted: no retry charged)
--      └──rescue_expired_leases  (the lease ran out: its worker died or stalled)
--   running ──(claimed, but a newer code for its user, action and destination exists)──▶ superseded
--   completed | failed | expired | superseded ──prune_finished_jobs──▶ deleted
--
-- Ownership is the claim's token (locked_by), never a backend pid. Every statement that takes a
-- job from another state skips rows that someone else has locked, so no worker ever waits on
-- another's transaction. The Rust worker (src/worker.rs) calls these functions; each is one
-- statement over many jobs, planned once per backend (PL/pgSQL keeps the plans).

-- Claims up to max_jobs due jobs for the claim `token`, leased until clock_timestamp() + lease,
-- returned in the order they are to be sent: priority, then due retries, then oldest.
-- `superseded`: a newer code for the same user, action and destination was queued since (a
-- resend); the worker records such a job as superseded instead of sending it.
create or replace function mysmshook.claim_jobs(max_jobs int, lease interval, token uuid)
returns table (
    job_id uuid, channel text, action_type text, job_data text, priority int,
    retry_count int, max_retries int, rescues int, expires_at float8, superseded boolean
)
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    return query
    with due as (
        select q.job_id
          from mysmshook.job_queue q
         where q.status = 'pending' and q.scheduled_at <= now()
         order by q.priority desc, (q.retry_count = 0), q.scheduled_at, q.created_at
         limit max_jobs
           for update skip locked
    ), claimed as (
        update mysmshook.job_queue j
           set status = 'running', locked_by = token, locked_until = clock_timestamp() + lease
          from due
         where j.job_id = due.job_id
        returning j.job_id, j.channel, j.action_type, j.job_data::text, j.priority, j.retry_count,
                  j.max_retries, j.rescues, extract(epoch from j.expires_at)::float8 as expires_at,
                  j.scheduled_at, j.created_at, j.resend_key
    )
    select c.job_id, c.channel, c.action_type, c.job_data, c.priority, c.retry_count,
           c.max_retries, c.rescues, c.expires_at,
           c.resend_key is not null and exists (
               select 1 from mysmshook.job_queue n
                where n.resend_key = c.resend_key and n.created_at > c.created_at)
      from claimed c
     order by c.priority desc, (c.retry_count = 0), c.scheduled_at, c.created_at;
end;
$$;

-- Extends the leases of the jobs the given claims still hold.
create or replace function mysmshook.renew_leases(tokens uuid[], lease interval) returns int
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    renewed int;
begin
    with held as (
        select q.job_id from mysmshook.job_queue q
         where q.status = 'running' and q.locked_by = any (tokens)
           for update skip locked
    )
    update mysmshook.job_queue j set locked_until = clock_timestamp() + lease
      from held where j.job_id = held.job_id;
    get diagnostics renewed = row_count;
    return renewed;
end;
$$;

-- Gives jobs back unstarted (the worker could not send them within its lease, or is stopping):
-- they keep their place in line and no retry is charged.
create or replace function mysmshook.release_jobs(job_ids uuid[], tokens uuid[]) returns int
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    released int;
begin
    update mysmshook.job_queue j
       set status = 'pending', locked_by = null, locked_until = null
      from unnest(job_ids, tokens) as r(job_id, token)
     where j.job_id = r.job_id and j.locked_by = r.token;  -- running (see record_outcomes)
    get diagnostics released = row_count;
    return released;
end;
$$;

-- Puts back in line the jobs whose lease ran out. They keep their place (scheduled_at) and are
-- not charged a retry: nothing says they reached a provider. rescues counts the lost leases;
-- the worker fails a job that has outlived three workers instead of sending it again.
create or replace function mysmshook.rescue_expired_leases() returns int
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    rescued int;
begin
    with lapsed as (
        select q.job_id from mysmshook.job_queue q
         where q.status = 'running' and q.locked_until < clock_timestamp()
           for update skip locked
    )
    update mysmshook.job_queue j
       set status = 'pending', locked_by = null, locked_until = null,
           rescues = j.rescues + 1,
           last_error = 'lease expired: its worker stopped or stalled before recording an outcome',
           attempts = j.attempts || jsonb_build_array(jsonb_build_object(
               'at', clock_timestamp(), 'result', 'lease_expired', 'worker', j.locked_by))
      from lapsed
     where j.job_id = lapsed.job_id;
    get diagnostics rescued = row_count;
    return rescued;
end;
$$;

-- Records what happened to a group of jobs, in one statement. `outcomes` is a JSON array of
-- objects with the columns below; status is the job's new status, retry_in (seconds) is set for
-- a retry. An outcome counts only for the claim that holds the job ('recorded'). One that comes
-- back after its lease passed ('late') is never dropped: its attempts are appended, and a
-- final outcome of a job that is waiting again (rescued, not yet re-claimed) ends that job, so
-- a message that was sent is not sent again. 'missing': the job no longer exists.
create or replace function mysmshook.record_outcomes(outcomes jsonb)
returns table (job_id uuid, recorded text)
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    owned uuid[];
    ended uuid[];
    appended uuid[];
begin
    with o as (
        select * from jsonb_to_recordset(outcomes) as x(
            job_id uuid, token uuid, status text, retry_in float8, retry_charged boolean,
            provider text, message_id text, channel text, route text, error text, attempts jsonb,
            job_data jsonb, sms_encoding text, sms_segments int)
    ), done as (
        update mysmshook.job_queue j
           set status = o.status,
               retry_count = j.retry_count + (o.retry_in is not null and o.retry_charged)::int,
               scheduled_at = coalesce(clock_timestamp() + make_interval(secs => o.retry_in), j.scheduled_at),
               provider = coalesce(o.provider, j.provider),
               provider_message_id = coalesce(o.message_id, j.provider_message_id),
               channel = coalesce(o.channel, j.channel),
               route = coalesce(o.route, j.route),
               last_error = o.error,
               attempts = j.attempts || o.attempts,
               job_data = coalesce(o.job_data, j.job_data),
               sms_encoding = coalesce(o.sms_encoding, j.sms_encoding),
               sms_segments = coalesce(o.sms_segments, j.sms_segments),
               finished_at = case when o.status <> 'pending' then clock_timestamp() end,
               locked_by = null,
               locked_until = null
          from o
         -- locked_by is set only while a job runs (job_queue_lease_check): no status test, so
         -- the plan is a primary-key lookup per outcome, not a walk of the lease index, which
         -- holds an entry for every claim since the last vacuum.
         where j.job_id = o.job_id and j.locked_by = o.token
        returning j.job_id
    )
    select coalesce(array_agg(done.job_id), '{}') into owned from done;

    if cardinality(owned) < jsonb_array_length(outcomes) then
        -- Late: a final outcome ends a job that is waiting again (rescued, not yet re-claimed).
        with o as (
            select * from jsonb_to_recordset(outcomes) as x(
                job_id uuid, status text, provider text, message_id text, channel text,
                route text, error text, attempts jsonb, job_data jsonb)
        ), done as (
            update mysmshook.job_queue j
               set status = o.status,
                   provider = coalesce(o.provider, j.provider),
                   provider_message_id = coalesce(o.message_id, j.provider_message_id),
                   channel = coalesce(o.channel, j.channel),
                   route = coalesce(o.route, j.route),
                   last_error = o.error,
                   attempts = j.attempts || mysmshook.late_attempts(o.attempts),
                   job_data = coalesce(o.job_data, j.job_data),
                   finished_at = clock_timestamp()
              from o
             where j.job_id = o.job_id and j.job_id <> all (owned)
               and j.status = 'pending' and o.status <> 'pending'
            returning j.job_id
        )
        select coalesce(array_agg(done.job_id), '{}') into ended from done;
        -- Any other late outcome: its attempts join the job's history, nothing else changes.
        with o as (
            select * from jsonb_to_recordset(outcomes) as x(job_id uuid, attempts jsonb)
        ), done as (
            update mysmshook.job_queue j
               set attempts = j.attempts || mysmshook.late_attempts(o.attempts)
              from o
             where j.job_id = o.job_id and j.job_id <> all (owned) and j.job_id <> all (ended)
            returning j.job_id
        )
        select coalesce(array_agg(done.job_id), '{}') into appended from done;
    end if;

    return query
    select o.job_id,
           case when o.job_id = any (owned) then 'recorded'
                when o.job_id = any (ended) or o.job_id = any (appended) then 'late'
                else 'missing' end
      from jsonb_to_recordset(outcomes) as o(job_id uuid);
end;
$$;

-- Attempts that came back after their lease passed, marked as such.
create or replace function mysmshook.late_attempts(attempts jsonb) returns jsonb
language sql immutable
set search_path = pg_catalog, pg_temp
return (select coalesce(jsonb_agg(a || '{"late": true}'), '[]') from jsonb_array_elements(attempts) a);

-- Deletes finished jobs older than the retention period, oldest first, a bounded number per call.
create or replace function mysmshook.prune_finished_jobs(retention interval, max_rows int default 10000)
returns int
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    pruned int;
begin
    with old as (
        select q.job_id from mysmshook.job_queue q
         where q.status in ('completed', 'failed', 'expired', 'superseded')
           and q.finished_at < now() - retention
         order by q.finished_at
         limit max_rows
    )
    delete from mysmshook.job_queue j using old where j.job_id = old.job_id;
    get diagnostics pruned = row_count;
    return pruned;
end;
$$;

-- What a worker compares to know whether its cached configuration is current: the tables'
-- version, and the last change of any Vault secret the configuration refers to.
create or replace function mysmshook.config_fingerprint(vault_names text[]) returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    version bigint;
    secrets_changed timestamptz;
begin
    select v.version into version from mysmshook.config_version v;
    if cardinality(vault_names) > 0 and to_regclass('vault.secrets') is not null then
        execute 'select max(updated_at) from vault.secrets where name = any ($1)'
           into secrets_changed using vault_names;
    end if;
    return version::text || '/' || coalesce(secrets_changed::text, '-');
end;
$$;

-- sql/worker.sql
-- The delivery run. Two ways to start one:
--
--   CALL mysmshook.run_worker(poll_for => '58 seconds')     -- recommended (what schedule() uses)
--     A procedure, so that it can COMMIT between steps. Each step (mysmshook.worker_step) waits
--     up to ~100 ms for answers from the HTTP threads, records them in one statement, renews
--     the leases it holds, claims more when threads are free, and returns; the COMMIT after it
--     makes the outcomes permanent. A failure (cancel, crash, timeout) repeats at most the
--     requests in flight and the answers of the last ~100 ms, never a whole batch. Claims
--     commit before their requests start. The run claims until poll_for has passed (and at
--     least one batch), then finishes what it holds and ends: within poll_for plus one batch.
--
--   SELECT mysmshook.dequeue_and_run_jobs()                   -- the seed documents' shape
--     A function: one transaction, at most one batch (mysmshook.batch_size jobs), committed
--     when the caller's statement ends. A failure before then repeats the whole batch. Kept so
--     that the cron line `select mysmshook.dequeue_and_run_jobs();` works as written.
--
-- No SET clause on the procedure (a procedure with one cannot COMMIT): every name is qualified.
create or replace procedure mysmshook.run_worker(poll_for interval default '0 seconds')
language plpgsql
as $$
declare
    state text;
begin
    perform mysmshook.worker_begin(pg_catalog.date_part('epoch', poll_for));
    commit;
    loop
        state := mysmshook.worker_step();
        commit;
        exit when state = 'done';
    end loop;
end;
$$;
comment on procedure mysmshook.run_worker(interval) is
    'Deliver due jobs, committing every step; with poll_for, keep claiming new jobs that long. Run as CALL, outside an explicit transaction block.';

-- sql/schedule.sql
-- pg_cron helpers. pg_cron 1.5 and later run a job every N seconds: the command delivers for a
-- few seconds and ends before the next tick. pg_cron 1.4 fires at most once a minute, so there
-- the command polls for most of its minute (poll_for). pg_cron never runs two instances of the
-- same job at once, so runs chain back to back either way.
create or replace function mysmshook.schedule(
    cron_schedule text default null,   -- '5 seconds' (pg_cron >= 1.5), else '* * * * *'
    poll_for interval default null,    -- '4 seconds' (pg_cron >= 1.5), else '58 seconds'
    job_name text default 'mysmshook-deliver'
) returns bigint
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    preload text := pg_catalog.current_setting('shared_preload_libraries', true);
    cron_version int[];
    job_id bigint;
begin
    if preload is null
       or not ('pg_cron' = any (pg_catalog.string_to_array(pg_catalog.replace(preload, ' ', ''), ','))) then
        raise exception 'pg_cron is not preloaded'
            using hint = 'Add pg_cron to shared_preload_libraries in postgresql.conf, set cron.database_name, and restart PostgreSQL.';
    end if;
    if not exists (select 1 from pg_catalog.pg_extension where extname = 'pg_cron') then
        raise exception 'pg_cron is not installed in database %', pg_catalog.current_database()
            using hint = 'Run CREATE EXTENSION pg_cron in the database named by cron.database_name.';
    end if;
    -- pg_cron 1.4 and 1.5 in libpq mode: the launcher does not absorb the server's signal
    -- barriers while one of its jobs runs, so DROP DATABASE anywhere in the cluster waits for
    -- the run to end (up to a minute with this schedule). Background-worker mode does not.
    select pg_catalog.string_to_array(pg_catalog.split_part(e.extversion, '-', 1), '.')::int[]
      into cron_version
      from pg_catalog.pg_extension e where e.extname = 'pg_cron';
    if cron_version >= '{1,5}' then
        cron_schedule := coalesce(cron_schedule, '5 seconds');
        poll_for := coalesce(poll_for, '4 seconds');
    else
        cron_schedule := coalesce(cron_schedule, '* * * * *');
        poll_for := coalesce(poll_for, '58 seconds');
    end if;
    if pg_catalog.current_setting('cron.use_background_workers', true) is distinct from 'on'
       and cron_version < '{1,6}' then
        raise warning 'pg_cron runs jobs over libpq: while a delivery run is active, DROP DATABASE in this cluster waits for it to end (up to poll_for plus one batch)'
            using hint = 'Set cron.use_background_workers = on in postgresql.conf and restart PostgreSQL.';
    end if;
    if poll_for < interval '0' or poll_for >= interval '1 hour' then
        raise exception 'poll_for must be between 0 and 1 hour, got %', poll_for;
    end if;
    execute 'select cron.schedule($1, $2, $3)'
       into job_id
      using job_name, cron_schedule,
            pg_catalog.format('call mysmshook.run_worker(poll_for => %L)', poll_for);
    return job_id;
end;
$$;
comment on function mysmshook.schedule(text, interval, text) is
    'Register (or update) the pg_cron job that runs mysmshook.run_worker; returns the cron job id.';

create or replace function mysmshook.unschedule(job_name text default 'mysmshook-deliver') returns boolean
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    if not exists (select 1 from pg_catalog.pg_extension where extname = 'pg_cron') then
        raise exception 'pg_cron is not installed in database %', pg_catalog.current_database();
    end if;
    if not exists (select 1 from cron.job j where j.jobname = job_name) then
        return false;
    end if;
    execute 'select cron.unschedule($1)' using job_name;
    return true;
end;
$$;
comment on function mysmshook.unschedule(text) is 'Remove the pg_cron job registered by mysmshook.schedule(); false if there was none.';

-- sql/validation.sql (the row triggers are unchanged since 0.1.0)
-- Configuration is checked when it is saved, not when a user signs in at 3 a.m.

create or replace function mysmshook.providers_check() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    route_name text;
begin
    if tg_op in ('UPDATE', 'DELETE') and (tg_op = 'DELETE' or new.name is distinct from old.name) then
        select r.name into route_name from mysmshook.routes r where old.name = any (r.providers) limit 1;
        if found then
            raise exception 'provider % is used by route %', old.name, route_name
                using hint = 'Remove it from the route''s providers first.';
        end if;
    end if;
    if tg_op = 'DELETE' then
        return old;
    end if;
    if new.name = 'log' then
        raise exception 'provider name log is taken by the built-in log provider'
            using hint = 'Choose another name; routes may name the built-in provider as ''log''.';
    end if;
    perform mysmshook.check_provider(new.kind, new.settings);
    new.updated_at := pg_catalog.now();
    return new;
end;
$$;

create or replace function mysmshook.routes_check() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    missing text;
    bad_region text;
begin
    -- pg_restore -j loads tables in parallel, routes possibly before providers; the dump was
    -- consistent when taken (a provider in use cannot be deleted), so a restore is not checked.
    select p into missing
      from pg_catalog.unnest(new.providers) p
     where p <> 'log' and not exists (select 1 from mysmshook.providers x where x.name = p)
     limit 1;
    if found and pg_catalog.current_setting('application_name') <> 'pg_restore' then
        raise exception 'route %: provider % does not exist', new.name, missing
            using hint = 'Insert it into mysmshook.providers first.';
    end if;
    select r into bad_region from pg_catalog.unnest(new.regions) r where r !~ '^[A-Z]{2}$' limit 1;
    if found then
        raise exception 'route %: region % is not a two-letter ISO 3166 code such as MX or PR', new.name, bad_region;
    end if;
    if exists (select 1 from pg_catalog.unnest(new.calling_codes) c where c < 1 or c > 999) then
        raise exception 'route %: calling codes are 1 to 999 (52 for Mexico, not +52)', new.name;
    end if;
    return new;
end;
$$;

create or replace function mysmshook.templates_check() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    perform mysmshook.check_template(new.channel, new.action_type, new.subject, new.body, new.html);
    new.updated_at := pg_catalog.now();
    return new;
end;
$$;

-- Any change to the configuration tables bumps mysmshook.config_version in the same
-- transaction: workers reload their cached configuration when they see the new number.
create or replace function mysmshook.config_changed() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    update mysmshook.config_version set version = version + 1;
    return null;
end;
$$;

create trigger providers_changed
    after insert or update or delete or truncate on mysmshook.providers
    for each statement execute function mysmshook.config_changed();
create trigger routes_changed
    after insert or update or delete or truncate on mysmshook.routes
    for each statement execute function mysmshook.config_changed();
create trigger templates_changed
    after insert or update or delete or truncate on mysmshook.templates
    for each statement execute function mysmshook.config_changed();

-- pg_cron jobs made by 0.1.0's schedule() call the procedure dropped above: move them to
-- run_worker, keeping their schedule and poll_for.
do $$
begin
    if pg_catalog.to_regclass('cron.job') is not null then
        perform cron.alter_job(j.jobid,
                               command => pg_catalog.replace(j.command, 'call mysmshook.dequeue_and_run_jobs(',
                                                             'call mysmshook.run_worker('))
           from cron.job j
          where j.command like 'call mysmshook.dequeue_and_run_jobs(%';
    end if;
end;
$$;

-- Privileges (sql/privileges.sql): nothing new is executable by PUBLIC or Supabase's API roles.
revoke all on table mysmshook.config_version from public;
revoke all on all functions in schema mysmshook from public;
revoke all on all procedures in schema mysmshook from public;
do $$
begin
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'supabase_auth_admin') then
        perform mysmshook.grant_hook_access('supabase_auth_admin');
    end if;
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'anon') then
        execute 'revoke all on all tables in schema mysmshook from anon';
        execute 'revoke all on all functions in schema mysmshook from anon';
    end if;
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'authenticated') then
        execute 'revoke all on all tables in schema mysmshook from authenticated';
        execute 'revoke all on all functions in schema mysmshook from authenticated';
    end if;
end;
$$;
