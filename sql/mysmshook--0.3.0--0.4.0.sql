-- mysmshook 0.3.0 -> 0.4.0 (ALTER EXTENSION mysmshook UPDATE): queued jobs and configuration
-- are kept. Run it right after installing the 0.4.0 files.
--
-- What changes: operating the queue (sql/operations.sql: pause and resume a channel, route or
-- provider; retry_job, cancel_job, redrive), metrics() and metrics_prometheus()
-- (sql/metrics.sql), a least-privileged worker role (grant_worker_access, schedule(run_as)),
-- pg_cron history housekeeping; jobs record when their first request started and when a
-- provider accepted them; a failed job keeps its data while its code lives, for a redrive.

-- The queue --------------------------------------------------------------------------------

-- Added at the end of the table (no rewrite): a fresh install has them in the same place.
alter table mysmshook.job_queue add column first_attempt_at timestamptz;
alter table mysmshook.job_queue add column sent_at timestamptz;
alter table mysmshook.job_queue add column paused_on text;
alter table mysmshook.job_queue drop constraint job_queue_status_check;
alter table mysmshook.job_queue add constraint job_queue_status_check
    check (status in ('pending', 'running', 'completed', 'failed', 'expired', 'superseded',
                      'paused', 'cancelled'));
comment on table mysmshook.job_queue is
    'Authentication messages waiting for, in, or done with delivery. Status: pending (due at scheduled_at), '
    'running (claimed by a worker until locked_until), completed, failed, expired (code no longer usable), '
    'superseded (a newer code for the same user, action and destination was queued), paused (waiting '
    'for mysmshook.resume), cancelled (by mysmshook.cancel_job).';
comment on column mysmshook.job_queue.job_data is
    'What the message needs (recipient, code, links). Codes and tokens are removed and the recipient masked once the job is final '
    '(fallback_data keeps a copy while the code lives, for a receipt''s fallback or a redrive).';
-- Cancelled jobs are finished: retention prunes them, metrics count them.
drop index mysmshook.job_queue_finished_idx;
create index job_queue_finished_idx
    on mysmshook.job_queue (finished_at)
    where status in ('completed', 'failed', 'expired', 'superseded', 'cancelled');
create index job_queue_paused_idx
    on mysmshook.job_queue (paused_on, expires_at)
    where status = 'paused';

-- sql/queue.sql: outcomes carry pauses and the request times; cancelled jobs are pruned.
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
            job_data jsonb, fallback_data jsonb, sms_encoding text, sms_segments int,
            paused_on text, first_attempt_at float8, sent_at float8)
    ), held as (
        -- A job is paused only while its pause exists. The lock makes a resume that deletes the
        -- pause wait for this statement (its trigger then sees the job); a pause someone is
        -- changing or lifting right now (locked) counts as lifted, so that a worker never waits
        -- on an operator's open transaction: the job is back in line a second later, and paused
        -- again if the pause stays. No job stays paused on a lifted pause.
        select o.job_id, (
                   select true from mysmshook.pauses p
                    where p.scope = split_part(o.paused_on, ':', 1)
                      and p.name = split_part(o.paused_on, ':', 2)
                      for key share skip locked) as still_paused
          from o where o.status = 'paused'
    ), done as (
        update mysmshook.job_queue j
           set status = case when o.status <> 'paused' then o.status
                             when held.still_paused then 'paused' else 'pending' end,
               paused_on = case when held.still_paused then o.paused_on end,
               retry_count = j.retry_count + (o.retry_in is not null and o.retry_charged)::int,
               scheduled_at = case
                   when o.status = 'paused' and held.still_paused is null then clock_timestamp() + interval '1 second'
                   else coalesce(clock_timestamp() + make_interval(secs => o.retry_in), j.scheduled_at) end,
               provider = coalesce(o.provider, j.provider),
               provider_message_id = coalesce(o.message_id, j.provider_message_id),
               channel = coalesce(o.channel, j.channel),
               route = coalesce(o.route, j.route),
               last_error = o.error,
               attempts = j.attempts || o.attempts,
               job_data = coalesce(o.job_data, j.job_data),
               fallback_data = o.fallback_data,
               sms_encoding = coalesce(o.sms_encoding, j.sms_encoding),
               sms_segments = coalesce(o.sms_segments, j.sms_segments),
               first_attempt_at = coalesce(j.first_attempt_at, to_timestamp(o.first_attempt_at)),
               sent_at = coalesce(to_timestamp(o.sent_at), j.sent_at),
               finished_at = case when o.status not in ('pending', 'paused') then clock_timestamp() end,
               locked_by = null,
               locked_until = null
          from o left join held on held.job_id = o.job_id
         -- locked_by is set only while a job runs (job_queue_lease_check): no status test, so
         -- the plan is a primary-key lookup per outcome, not a walk of the lease index, which
         -- holds an entry for every claim since the last vacuum.
         where j.job_id = o.job_id and j.locked_by = o.token
        returning j.job_id
    )
    select coalesce(array_agg(done.job_id), '{}') into owned from done;

    if cardinality(owned) < jsonb_array_length(outcomes) then
        -- Late: a final outcome ends a job that is waiting again (rescued, not yet re-claimed,
        -- or paused since).
        with o as (
            select * from jsonb_to_recordset(outcomes) as x(
                job_id uuid, status text, provider text, message_id text, channel text,
                route text, error text, attempts jsonb, job_data jsonb, fallback_data jsonb,
                sent_at float8)
        ), done as (
            update mysmshook.job_queue j
               set status = o.status,
                   paused_on = null,
                   sent_at = coalesce(to_timestamp(o.sent_at), j.sent_at),
                   provider = coalesce(o.provider, j.provider),
                   provider_message_id = coalesce(o.message_id, j.provider_message_id),
                   channel = coalesce(o.channel, j.channel),
                   route = coalesce(o.route, j.route),
                   last_error = o.error,
                   attempts = j.attempts || mysmshook.late_attempts(o.attempts),
                   job_data = coalesce(o.job_data, j.job_data),
                   fallback_data = o.fallback_data,
                   finished_at = clock_timestamp()
              from o
             where j.job_id = o.job_id and j.job_id <> all (owned)
               and o.status not in ('pending', 'paused')
               -- A message that was sent is recorded as sent, whatever became of its job since
               -- (failed or cancelled after a rescue): nobody sends or redrives it again.
               and (j.status in ('pending', 'paused')
                    or (o.status = 'completed' and j.status not in ('running', 'completed')))
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
         where q.status in ('completed', 'failed', 'expired', 'superseded', 'cancelled')
           and q.finished_at < now() - retention
         order by q.finished_at
         limit max_rows
           for update skip locked  -- an operator may hold one (redrive)
    ), gone as (
        delete from mysmshook.job_queue j using old where j.job_id = old.job_id returning j.job_id
    ), receipts_gone as (
        -- A job's delivery receipts (sql/receipts.sql) go with it.
        delete from mysmshook.receipts rc using gone where rc.job_id = gone.job_id
    )
    select count(*) into pruned from gone;
    return pruned;
end;
$$;

-- sql/receipts.sql: a failed message without a code keeps its redrive copy for a day.
-- Applies waiting receipts (all of them, or those of the given jobs) to their jobs, oldest
-- first; returns how many were applied. Each job is read again, locked, for each receipt (two
-- receipts of one job in one call see each other's effect); rows another transaction holds are
-- skipped, never waited for, and their receipts wait for the next call. Also drops the fallback
-- copies of codes that have expired, and waiting receipts older than a day (their message is
-- not one of ours, or its job was pruned).
create or replace function mysmshook.apply_receipts(job_ids uuid[] default null) returns int
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    r record;
    j record;
    applied int := 0;
    entry jsonb;
begin
    for r in
        select rc.receipt_id, rc.provider, rc.message_id, rc.status, rc.outcome, rc.error, rc.received_at
          from mysmshook.receipts rc
         where rc.applied_at is null
           and (job_ids is null or exists (
                select 1 from mysmshook.job_queue q
                 where q.job_id = any (job_ids) and q.provider = rc.provider
                   and q.provider_message_id = rc.message_id))
         order by rc.receipt_id
           for update skip locked
    loop
        select q.job_id, q.status, q.fallback_data, q.expires_at, q.delivered_at, q.attempts into j
          from mysmshook.job_queue q
         where q.provider = r.provider and q.provider_message_id = r.message_id
           for update skip locked;
        continue when not found;  -- not recorded yet, or held by a worker: next time
        entry := jsonb_build_object('at', r.received_at, 'provider', r.provider, 'result', 'receipt',
                                    'status', r.status) || jsonb_strip_nulls(jsonb_build_object('error', r.error));
        if r.outcome = 'failed' and j.status = 'completed' and j.delivered_at is null then
            if j.fallback_data is not null and j.expires_at > now() then
                -- The rest of the chain gets its turn: back in line, no retry charged, skipping
                -- the providers that took the message before.
                update mysmshook.job_queue
                   set status = 'pending', scheduled_at = now(), finished_at = null,
                       job_data = j.fallback_data || jsonb_build_object('skip_providers', (
                           select coalesce(jsonb_agg(distinct a->>'provider'), '[]')
                             from jsonb_array_elements(j.attempts) a
                            where a->>'result' = 'sent')),
                       fallback_data = null,
                       last_error = format('%s reported it undelivered (%s): trying the next provider',
                                           r.provider, coalesce(r.error, r.status)),
                       attempts = attempts || entry
                 where job_id = j.job_id;
            else
                update mysmshook.job_queue
                   set status = 'failed', fallback_data = null,
                       last_error = format('%s reported it undelivered (%s)', r.provider, coalesce(r.error, r.status)),
                       attempts = attempts || entry
                 where job_id = j.job_id;
            end if;
        elsif r.outcome = 'delivered' then
            -- Arrived: nothing will be sent again for it (a later failure receipt is recorded only).
            update mysmshook.job_queue
               set delivered_at = coalesce(delivered_at, r.received_at), fallback_data = null,
                   attempts = attempts || entry
             where job_id = j.job_id;
        else
            update mysmshook.job_queue set attempts = attempts || entry where job_id = j.job_id;
        end if;
        update mysmshook.receipts set applied_at = now(), job_id = j.job_id where receipt_id = r.receipt_id;
        applied := applied + 1;
    end loop;

    if job_ids is null then
        -- Rows someone holds (an operator's redrive) are left for the next run.
        with dead as (
            select q.job_id from mysmshook.job_queue q
             where q.fallback_data is not null and q.expires_at <= now()
               for update skip locked
        )
        update mysmshook.job_queue jq set fallback_data = null from dead where jq.job_id = dead.job_id;
        -- A failed message without a code (sql/operations.sql, redrive) is kept for a day.
        with old as (
            select q.job_id from mysmshook.job_queue q
             where q.fallback_data is not null and q.expires_at is null
               and q.finished_at < now() - interval '1 day'
               for update skip locked
        )
        update mysmshook.job_queue jq set fallback_data = null from old where jq.job_id = old.job_id;
        delete from mysmshook.receipts where applied_at is null and received_at < now() - interval '1 day';
    end if;
    return applied;
end;
$$;

-- Functions of the library ----------------------------------------------------------------

-- Every one is bound to this version's library again. The worker's steps now run as the
-- extension's owner (grant_worker_access); scrubbed_job_data is new.
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
STRICT VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'dequeue_and_run_jobs_wrapper';
CREATE OR REPLACE FUNCTION "latin_america_regions"() RETURNS TEXT[] /* Vec < & '_ str > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'latin_america_regions_wrapper';
CREATE OR REPLACE FUNCTION "receive_receipt"(
	"provider" TEXT, /* & str */
	"url" TEXT, /* & str */
	"headers" jsonb, /* JsonB */
	"body" TEXT /* & str */
) RETURNS jsonb /* JsonB */
STRICT VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'receive_receipt_wrapper';
CREATE OR REPLACE FUNCTION "refusals"() RETURNS TABLE (
	"refused_at" timestamp with time zone,  /* Option < pgrx :: datum :: TimestampWithTimeZone > */
	"rule" TEXT,  /* Option < String > */
	"destination" TEXT,  /* Option < String > */
	"ip" TEXT,  /* Option < String > */
	"region" TEXT  /* Option < String > */
)
STRICT VOLATILE SECURITY DEFINER PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'refusals_wrapper';
CREATE OR REPLACE FUNCTION "scrubbed_job_data"(
	"job_data" jsonb /* JsonB */
) RETURNS jsonb /* JsonB */
IMMUTABLE STRICT PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'scrubbed_job_data_wrapper';
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
STRICT VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'worker_begin_wrapper';
CREATE OR REPLACE FUNCTION "worker_step"() RETURNS TEXT /* Result < & '_ str, pgrx :: spi :: Error > */
STRICT VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'worker_step_wrapper';

-- Operating the queue (sql/operations.sql, new) ------------------------------------------

-- Steering the queue: pause and resume a channel, route or provider; retry, cancel and redrive
-- jobs. Owner-only, like the tables (grant nothing of this to the auth server).

-- What an operator holds. A job whose channel or route is paused, or whose chain reaches a
-- paused provider, waits with status 'paused' (no retry spent, its code kept) until the pause
-- is lifted. Pausing a provider holds its traffic; disabling it (providers.enabled) routes
-- around it instead.
create table mysmshook.pauses (
    scope     text        not null check (scope in ('channel', 'route', 'provider')),
    name      text        not null,
    reason    text,
    paused_at timestamptz not null default now(),
    paused_by text        not null default current_user,
    primary key (scope, name),
    constraint pauses_name_check check (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$')
);
comment on table mysmshook.pauses is
    'Paused channels, routes and providers: their jobs wait (status paused) until mysmshook.resume().';
select pg_catalog.pg_extension_config_dump('mysmshook.pauses', '');

-- Workers hold jobs by the pauses in their cached configuration: a change reloads it.
create trigger pauses_changed
    after insert or update or delete or truncate on mysmshook.pauses
    for each statement execute function mysmshook.config_changed();

-- However a pause goes (resume(), DELETE, TRUNCATE), the jobs waiting for it go back in line.
-- record_outcomes pauses a job only while its pause exists (and locks it), so none is missed.
create function mysmshook.pauses_lifted() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    update mysmshook.job_queue j
       set status = 'pending', paused_on = null
     where j.status = 'paused'
       and not exists (select 1 from mysmshook.pauses p where p.scope || ':' || p.name = j.paused_on);
    return null;
end;
$$;

create trigger pauses_lifted
    after update or delete or truncate on mysmshook.pauses
    for each statement execute function mysmshook.pauses_lifted();

-- Holds a channel ('sms', 'email'), a route or a provider (by name; 'log' is the built-in one).
create function mysmshook.pause(scope text, name text, reason text default null) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    if scope = 'channel' and name not in ('sms', 'email') then
        raise exception 'no channel is named %', name using hint = 'Channels are sms and email.';
    elsif scope = 'route' and name <> 'log'
          and not exists (select 1 from mysmshook.routes r where r.name = pause.name) then
        raise exception 'no route is named %', name using hint = 'See mysmshook.routes.';
    elsif scope = 'provider' and name <> 'log'
          and not exists (select 1 from mysmshook.providers p where p.name = pause.name) then
        raise exception 'no provider is named %', name using hint = 'See mysmshook.providers.';
    elsif scope not in ('channel', 'route', 'provider') then
        raise exception 'cannot pause a %', scope using hint = 'Pause a channel, a route or a provider.';
    end if;
    insert into mysmshook.pauses as p (scope, name, reason)
    values (pause.scope, pause.name, pause.reason)
    on conflict on constraint pauses_pkey do update set reason = coalesce(excluded.reason, p.reason);
end;
$$;
comment on function mysmshook.pause(text, text, text) is
    'Hold a channel, route or provider: its jobs wait (status paused) without spending retries until mysmshook.resume().';

-- Lifts a pause; returns how many waiting jobs went back in line (they deliver in the next
-- worker run; codes that expired meanwhile expire).
create function mysmshook.resume(scope text, name text) returns bigint
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    released bigint;
begin
    update mysmshook.job_queue j
       set status = 'pending', paused_on = null
     where j.status = 'paused' and j.paused_on = resume.scope || ':' || resume.name;
    get diagnostics released = row_count;
    delete from mysmshook.pauses p where p.scope = resume.scope and p.name = resume.name;
    if not found then
        raise notice '% % was not paused', scope, name;
    end if;
    return released;
end;
$$;
comment on function mysmshook.resume(text, text) is
    'Lift a pause: the jobs that waited for it go back in line; returns how many.';

-- Called by every worker run: a paused job whose code died meanwhile ends as expired, its
-- code removed, instead of waiting for a resume that could not deliver it; and a job paused on
-- a pause that is gone (lifted where its trigger could not see the job: a REPEATABLE READ
-- resume, replication) goes back in line. Rows someone holds are left for the next run.
create function mysmshook.expire_paused_jobs() returns int
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    expired int;
begin
    with dead as (
        select q.job_id from mysmshook.job_queue q
         where q.status = 'paused' and q.expires_at <= now()
           for update skip locked
    )
    update mysmshook.job_queue j
       set status = 'expired', paused_on = null, finished_at = clock_timestamp(),
           job_data = mysmshook.scrubbed_job_data(j.job_data),
           last_error = format('the code expired while %s was paused', replace(j.paused_on, ':', ' ')),
           attempts = j.attempts || jsonb_build_array(jsonb_build_object(
               'at', clock_timestamp(), 'result', 'expired', 'paused_on', j.paused_on))
      from dead where j.job_id = dead.job_id;
    get diagnostics expired = row_count;
    with orphaned as (
        select q.job_id from mysmshook.job_queue q
         where q.status = 'paused'
           and not exists (select 1 from mysmshook.pauses p where p.scope || ':' || p.name = q.paused_on)
           for update skip locked
    )
    update mysmshook.job_queue j set status = 'pending', paused_on = null
      from orphaned where j.job_id = orphaned.job_id;
    return expired;
end;
$$;

-- Whether a newer code for the same user, action and destination was queued after this job:
-- the auth server accepts only the newest, so this one is never sent again.
create function mysmshook.replaced(resend_key text, created_at timestamptz) returns boolean
language sql stable
set search_path = pg_catalog, pg_temp
return resend_key is not null and exists (
    select 1 from mysmshook.job_queue n where n.resend_key = replaced.resend_key and n.created_at > replaced.created_at);

-- Failed jobs back in line, those whose message can still be sent: a failed job keeps a copy
-- of its data while its code lives (a message without a code: for a day), in fallback_data.
-- The job starts afresh (retries, rescues, provider); its attempts keep the history. Returns
-- the jobs it queued.
create function mysmshook.requeue_failed(job_ids uuid[]) returns setof uuid
language sql
set search_path = pg_catalog, pg_temp
as $$
    update mysmshook.job_queue j
       set status = 'pending', job_data = j.fallback_data, fallback_data = null,
           retry_count = 0, rescues = 0, scheduled_at = now(), finished_at = null,
           provider = null, provider_message_id = null, sent_at = null, delivered_at = null,
           last_error = 'sent again by ' || session_user || coalesce(' after: ' || j.last_error, ''),
           attempts = j.attempts || jsonb_build_array(jsonb_build_object(
               'at', clock_timestamp(), 'result', 'requeued', 'by', session_user))
     where j.job_id = any (job_ids) and j.status = 'failed' and j.fallback_data is not null
       and (j.expires_at is null or j.expires_at > now())
       and not mysmshook.replaced(j.resend_key, j.created_at)
    returning j.job_id;
$$;

-- Why a job cannot be sent again, for the refusals below.
create function mysmshook.not_resendable(status text, expires_at timestamptz, replaced boolean) returns text
language sql stable
set search_path = pg_catalog, pg_temp
return case
    when status = 'completed' then 'it was already sent'
    when status = 'superseded' or replaced then 'a newer code for the same user and action replaced it'
    when expires_at <= now() then format('its code expired at %s and was removed', expires_at)
    else format('its code was removed when it became %s', status)
end;

-- Sends one job again now: a pending job waiting for its retry is made due; a failed job is
-- queued again if its message can still be sent. Anything else is refused, saying why.
create function mysmshook.retry_job(job_id uuid) returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    j record;
begin
    select q.status, q.expires_at, q.paused_on, q.locked_until,
           mysmshook.replaced(q.resend_key, q.created_at) as replaced into j
      from mysmshook.job_queue q where q.job_id = retry_job.job_id for update;
    if not found then
        raise exception 'job % does not exist', job_id using errcode = 'no_data_found';
    elsif j.status = 'pending' then
        update mysmshook.job_queue q set scheduled_at = now() where q.job_id = retry_job.job_id;
        return 'pending';
    elsif j.status = 'running' then
        raise exception 'job % is being delivered (its worker holds it until %)', job_id, j.locked_until
            using errcode = 'object_not_in_prerequisite_state';
    elsif j.status = 'paused' then
        raise exception 'job % waits for % to be resumed', job_id, replace(j.paused_on, ':', ' ')
            using errcode = 'object_not_in_prerequisite_state',
                  hint = format('select mysmshook.resume(%L, %L)', split_part(j.paused_on, ':', 1),
                                split_part(j.paused_on, ':', 2));
    elsif exists (select from mysmshook.requeue_failed(array[job_id])) then
        return 'pending';
    end if;
    raise exception 'job % cannot be sent again: %', job_id, mysmshook.not_resendable(j.status, j.expires_at, j.replaced)
        using errcode = 'object_not_in_prerequisite_state',
              hint = 'Codes are removed once a job is final; the user has to ask for a new one.';
end;
$$;
comment on function mysmshook.retry_job(uuid) is
    'Send a job again now: a pending job becomes due, a failed one is queued while its code lives; otherwise an error says why not.';

-- Cancels a job that has not been sent: it ends 'cancelled' and its code is removed.
create function mysmshook.cancel_job(job_id uuid, reason text default null) returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    j record;
begin
    select q.status, q.locked_until into j
      from mysmshook.job_queue q where q.job_id = cancel_job.job_id for update;
    if not found then
        raise exception 'job % does not exist', job_id using errcode = 'no_data_found';
    elsif j.status = 'running' then
        raise exception 'job % is being delivered (its worker holds it until %) and cannot be called back',
                        job_id, j.locked_until
            using errcode = 'object_not_in_prerequisite_state',
                  hint = 'To hold jobs before they are sent, pause their channel, route or provider.';
    elsif j.status not in ('pending', 'paused') then
        raise exception 'job % is already %', job_id, j.status
            using errcode = 'object_not_in_prerequisite_state';
    end if;
    update mysmshook.job_queue q
       set status = 'cancelled', paused_on = null, finished_at = clock_timestamp(),
           job_data = mysmshook.scrubbed_job_data(q.job_data), fallback_data = null,
           last_error = 'cancelled by ' || session_user || coalesce(': ' || reason, ''),
           attempts = q.attempts || jsonb_build_array(jsonb_build_object(
               'at', clock_timestamp(), 'result', 'cancelled', 'by', session_user, 'reason', reason))
     where q.job_id = cancel_job.job_id;
    return 'cancelled';
end;
$$;
comment on function mysmshook.cancel_job(uuid, text) is
    'Cancel a pending or paused job: it ends cancelled and its code is removed.';

-- Failed jobs of a recent period, back in line: those whose message can still be sent are
-- queued, the others are listed with the reason they cannot be (a code is never sent once
-- removed). Filters: channel, route, and a provider that was tried. Oldest first.
create function mysmshook.redrive(
    since timestamptz default now() - interval '1 hour',
    channel text default null,
    route text default null,
    provider text default null,
    max_jobs int default 1000
) returns table (job_id uuid, action_type text, result text)
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    chosen uuid[];
    queued uuid[];
begin
    select coalesce(array_agg(q.job_id order by q.finished_at), '{}') into chosen
      from (select q.job_id, q.finished_at
              from mysmshook.job_queue q
             where q.status = 'failed' and q.finished_at >= since
               and (redrive.channel is null or q.channel = redrive.channel)
               and (redrive.route is null or q.route = redrive.route)
               and (redrive.provider is null or exists (
                    select 1 from jsonb_array_elements(q.attempts) a where a->>'provider' = redrive.provider))
             order by q.finished_at
             limit max_jobs
               for update skip locked) q;
    select coalesce(array_agg(r), '{}') into queued from mysmshook.requeue_failed(chosen) r;
    return query
    select q.job_id, q.action_type,
           case when q.job_id = any (queued) then 'queued'
                else 'refused: ' || mysmshook.not_resendable(q.status, q.expires_at,
                                                            mysmshook.replaced(q.resend_key, q.created_at)) end
      from mysmshook.job_queue q join unnest(chosen) with ordinality c(id, n) on q.job_id = c.id
     order by c.n;
end;
$$;
comment on function mysmshook.redrive(timestamptz, text, text, text, int) is
    'Queue again the failed jobs since a time (filters: channel, route, provider tried) whose message can still be sent; lists the others with the reason.';

-- Metrics (sql/metrics.sql, new) -----------------------------------------------------------

-- What the queue is doing, per channel, route and provider: the live queue (pending, paused,
-- running), and over a recent period the jobs that finished, the requests made to providers,
-- receipts, and latencies. Cheap with millions of finished rows: the live statuses are read
-- from their partial indexes, the recent period from job_queue_finished_idx.
--
-- A row's route and provider are those a job took: the provider that accepted it, or for a job
-- that was not sent the last one it was tried on; jobs not routed yet (new) have neither.
-- Requests count per provider asked, so a fallback chain shows every provider it went through.
create function mysmshook.metrics(recent interval default '15 minutes')
returns table (
    channel              text,
    route                text,
    provider             text,
    -- Now.
    pending              bigint,
    paused               bigint,
    running              bigint,
    retries_waiting      bigint,   -- pending after a failed attempt
    oldest_due_seconds   float8,   -- how long the oldest due pending job has been due
    -- Finished within `recent`.
    completed            bigint,
    failed               bigint,
    expired              bigint,
    superseded           bigint,
    cancelled            bigint,
    delivered            bigint,   -- completed, and a receipt confirmed it reached the person
    success_rate         float8,   -- completed / (completed + failed + expired)
    -- Requests to providers within `recent`, and how they failed.
    requests             bigint,
    retryable_failures   bigint,   -- timeouts, 5xx, throttling: tried again later
    provider_failures    bigint,   -- the provider refused the request: the next one is asked
    recipient_rejections bigint,   -- the number or address itself was refused
    -- Milliseconds: the hook's insert to the first request (p50, p95, p99), and a request to
    -- its answer.
    queue_latency_ms     float8[],
    request_latency_ms   float8[]
)
language sql stable security definer
set search_path = pg_catalog, pg_temp
-- The recent period is a parameter, so the planner guesses a third of the finished rows and
-- would compile the query with JIT: tens of milliseconds for a query that takes a few.
set jit = off
as $$
    with live as materialized (
        select q.channel, q.route, q.provider, q.status, q.retry_count, q.scheduled_at, q.created_at, q.attempts
          from mysmshook.job_queue q where q.status = 'pending'
        union all
        select q.channel, q.route, q.provider, q.status, q.retry_count, q.scheduled_at, q.created_at, q.attempts
          from mysmshook.job_queue q where q.status = 'paused'
        union all
        select q.channel, q.route, q.provider, q.status, q.retry_count, q.scheduled_at, q.created_at, q.attempts
          from mysmshook.job_queue q where q.status = 'running'
    ), finished as materialized (
        select q.channel, q.route,
               coalesce(q.provider, (
                   select a->>'provider' from jsonb_array_elements(q.attempts) with ordinality x(a, n)
                    where a->>'result' in ('sent', 'retryable', 'provider_failed', 'recipient_rejected',
                                           'channel_rejected') and a->>'provider' <> '-'
                    order by x.n desc limit 1)) as provider,
               q.status, q.created_at, q.first_attempt_at, q.delivered_at, q.attempts
          from mysmshook.job_queue q
         where q.status in ('completed', 'failed', 'expired', 'superseded', 'cancelled')
           and q.finished_at >= now() - recent
    ), requests as (
        select j.channel, j.route, a->>'provider' as provider, a->>'result' as result,
               case when jsonb_typeof(a->'ms') = 'number' then (a->>'ms')::float8 end as ms
          from (select f.channel, f.route, f.attempts from finished f
                union all
                select l.channel, l.route, l.attempts from live l where l.attempts <> '[]') j,
               jsonb_array_elements(j.attempts) a
         where a->>'result' in ('sent', 'retryable', 'provider_failed', 'recipient_rejected', 'channel_rejected')
           and a->>'provider' <> '-'
           -- Written by the worker as RFC 3339; anything else (a hand edit) is not counted.
           and case when a->>'at' ~ '^\d{4}-\d\d-\d\dT' then (a->>'at')::timestamptz >= now() - recent end
    ), figures as (
        select l.channel, l.route, l.provider,
               count(*) filter (where l.status = 'pending') as pending,
               count(*) filter (where l.status = 'paused') as paused,
               count(*) filter (where l.status = 'running') as running,
               count(*) filter (where l.status = 'pending' and l.retry_count > 0) as retries_waiting,
               -- Due since: a new job's scheduled_at is the start of its window, before it existed.
               extract(epoch from now() - min(greatest(l.scheduled_at, l.created_at)) filter (
                   where l.status = 'pending' and l.scheduled_at <= now()))::float8 as oldest_due_seconds,
               null::bigint as completed, null::bigint as failed, null::bigint as expired,
               null::bigint as superseded, null::bigint as cancelled, null::bigint as delivered,
               null::bigint as requests, null::bigint as retryable_failures,
               null::bigint as provider_failures, null::bigint as recipient_rejections,
               null::float8[] as queue_latency_ms, null::float8[] as request_latency_ms
          from live l
         group by l.channel, l.route, l.provider
        union all
        select f.channel, f.route, f.provider, null, null, null, null, null,
               count(*) filter (where f.status = 'completed'),
               count(*) filter (where f.status = 'failed'),
               count(*) filter (where f.status = 'expired'),
               count(*) filter (where f.status = 'superseded'),
               count(*) filter (where f.status = 'cancelled'),
               count(*) filter (where f.status = 'completed' and f.delivered_at is not null),
               null, null, null, null,
               percentile_cont(array[0.5, 0.95, 0.99]) within group (
                   order by extract(epoch from f.first_attempt_at - f.created_at) * 1000),
               null
          from finished f
         group by f.channel, f.route, f.provider
        union all
        select r.channel, r.route, r.provider, null, null, null, null, null,
               null, null, null, null, null, null,
               count(*),
               count(*) filter (where r.result = 'retryable'),
               count(*) filter (where r.result = 'provider_failed'),
               count(*) filter (where r.result in ('recipient_rejected', 'channel_rejected')),
               null,
               percentile_cont(array[0.5, 0.95, 0.99]) within group (order by r.ms)
          from requests r
         group by r.channel, r.route, r.provider
    )
    select x.channel, x.route, x.provider,
           coalesce(sum(x.pending), 0)::bigint, coalesce(sum(x.paused), 0)::bigint,
           coalesce(sum(x.running), 0)::bigint, coalesce(sum(x.retries_waiting), 0)::bigint,
           max(x.oldest_due_seconds),
           coalesce(sum(x.completed), 0)::bigint, coalesce(sum(x.failed), 0)::bigint,
           coalesce(sum(x.expired), 0)::bigint, coalesce(sum(x.superseded), 0)::bigint,
           coalesce(sum(x.cancelled), 0)::bigint, coalesce(sum(x.delivered), 0)::bigint,
           sum(x.completed)::float8 / nullif(sum(x.completed) + sum(x.failed) + sum(x.expired), 0),
           coalesce(sum(x.requests), 0)::bigint, coalesce(sum(x.retryable_failures), 0)::bigint,
           coalesce(sum(x.provider_failures), 0)::bigint,
           coalesce(sum(x.recipient_rejections), 0)::bigint,
           max(x.queue_latency_ms), max(x.request_latency_ms)
      from figures x
     group by x.channel, x.route, x.provider
     order by x.channel, x.route nulls first, x.provider nulls first
$$;
comment on function mysmshook.metrics(interval) is
    'Queue figures per channel, route and provider: live counts, and over the recent period finished jobs, requests, failures, receipts and latency percentiles (ms: p50, p95, p99).';

-- A label value as the exposition format escapes it; absent is empty.
create function mysmshook.prometheus_label(value text) returns text
language sql immutable
set search_path = pg_catalog, pg_temp
return replace(replace(replace(coalesce(value, ''), E'\\', E'\\\\'), '"', E'\\"'), E'\n', E'\\n');

-- The same figures in Prometheus' text exposition format, for a textfile collector or any
-- exporter that serves text. Gauges: the windowed counts are over `recent`, not counters.
create function mysmshook.metrics_prometheus(recent interval default '15 minutes') returns text
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
    with m as (
        select m.*,
               format('channel="%s",route="%s",provider="%s"',
                      mysmshook.prometheus_label(m.channel), mysmshook.prometheus_label(m.route),
                      mysmshook.prometheus_label(m.provider)) as labels
          from mysmshook.metrics(recent) m
    ), samples as (
        select s.metric, m.labels || s.extra as labels, s.value
          from m, lateral (values
              ('mysmshook_jobs', ',status="pending"', m.pending::float8),
              ('mysmshook_jobs', ',status="paused"', m.paused),
              ('mysmshook_jobs', ',status="running"', m.running),
              ('mysmshook_retries_waiting', '', m.retries_waiting),
              ('mysmshook_oldest_due_seconds', '', m.oldest_due_seconds),
              ('mysmshook_jobs_finished', ',status="completed"', m.completed),
              ('mysmshook_jobs_finished', ',status="failed"', m.failed),
              ('mysmshook_jobs_finished', ',status="expired"', m.expired),
              ('mysmshook_jobs_finished', ',status="superseded"', m.superseded),
              ('mysmshook_jobs_finished', ',status="cancelled"', m.cancelled),
              ('mysmshook_delivered', '', m.delivered),
              ('mysmshook_success_ratio', '', m.success_rate),
              ('mysmshook_requests', '', m.requests),
              ('mysmshook_request_failures', ',kind="retryable"', m.retryable_failures),
              ('mysmshook_request_failures', ',kind="provider"', m.provider_failures),
              ('mysmshook_request_failures', ',kind="recipient"', m.recipient_rejections),
              ('mysmshook_queue_latency_seconds', ',quantile="0.5"', m.queue_latency_ms[1] / 1000),
              ('mysmshook_queue_latency_seconds', ',quantile="0.95"', m.queue_latency_ms[2] / 1000),
              ('mysmshook_queue_latency_seconds', ',quantile="0.99"', m.queue_latency_ms[3] / 1000),
              ('mysmshook_request_latency_seconds', ',quantile="0.5"', m.request_latency_ms[1] / 1000),
              ('mysmshook_request_latency_seconds', ',quantile="0.95"', m.request_latency_ms[2] / 1000),
              ('mysmshook_request_latency_seconds', ',quantile="0.99"', m.request_latency_ms[3] / 1000)
          ) s(metric, extra, value)
         where s.value is not null
    ), help(n, metric, text) as (values
        (1, 'mysmshook_jobs', 'Jobs in the queue now, by status.'),
        (2, 'mysmshook_retries_waiting', 'Pending jobs waiting to be tried again.'),
        (3, 'mysmshook_oldest_due_seconds', 'Age of the oldest due pending job.'),
        (4, 'mysmshook_jobs_finished', 'Jobs that finished in the recent period, by status.'),
        (5, 'mysmshook_delivered', 'Completed jobs in the recent period that a receipt confirmed.'),
        (6, 'mysmshook_success_ratio', 'Completed / (completed + failed + expired) in the recent period.'),
        (7, 'mysmshook_requests', 'Requests to providers in the recent period.'),
        (8, 'mysmshook_request_failures', 'Failed requests in the recent period, by kind.'),
        (9, 'mysmshook_queue_latency_seconds', 'From the hook to the first request, recent period.'),
        (10, 'mysmshook_request_latency_seconds', 'From a request to the provider''s answer, recent period.')
    )
    select coalesce(string_agg(block, '' order by n), '')
      from (select h.n,
                   format(E'# HELP %s %s\n# TYPE %s gauge\n', h.metric, h.text, h.metric)
                   || string_agg(format(E'%s{%s} %s\n', s.metric, s.labels, s.value), '' order by s.labels)
                   as block
              from help h join samples s on s.metric = h.metric
             group by h.n, h.metric, h.text) blocks
$$;
comment on function mysmshook.metrics_prometheus(interval) is
    'mysmshook.metrics() in Prometheus text exposition format.';

-- Scheduling (sql/schedule.sql): run_as, the housekeeping job ------------------------------

drop function mysmshook.schedule(text, interval, text);
-- pg_cron helpers. pg_cron 1.5 and later run a job every N seconds: the command delivers for a
-- few seconds and ends before the next tick. pg_cron 1.4 fires at most once a minute, so there
-- the command polls for most of its minute (poll_for). pg_cron never runs two instances of the
-- same job at once, so runs chain back to back either way.
--
-- run_as: the role the scheduled worker runs as (see grant_worker_access in
-- sql/privileges.sql); by default the caller. A job of the same name is replaced, whoever owns
-- it. A second job, mysmshook-housekeeping, keeps pg_cron's run history of these jobs short.
create function mysmshook.schedule(
    cron_schedule text default null,   -- '5 seconds' (pg_cron >= 1.5), else '* * * * *'
    poll_for interval default null,    -- '4 seconds' (pg_cron >= 1.5), else '58 seconds'
    job_name text default 'mysmshook-deliver',
    run_as regrole default null
) returns bigint
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    preload text := pg_catalog.current_setting('shared_preload_libraries', true);
    cron_version int[];
    job_id bigint;
    username text;
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
    select r.rolname into username from pg_catalog.pg_roles r
     where r.oid = coalesce(run_as, (select u.oid from pg_catalog.pg_roles u where u.rolname = current_user));
    if not pg_catalog.has_function_privilege(username, 'mysmshook.worker_step()', 'execute') then
        raise exception 'role % may not run the worker', username
            using hint = pg_catalog.format('select mysmshook.grant_worker_access(%L)', username);
    end if;
    if not (select r.rolcanlogin from pg_catalog.pg_roles r where r.rolname = username) then
        raise exception 'role % cannot log in, and pg_cron starts its jobs as a session of it', username
            using hint = pg_catalog.format('alter role %I login', username);
    end if;
    perform mysmshook.replace_cron_job(job_name, cron_schedule,
                                       pg_catalog.format('call mysmshook.run_worker(poll_for => %L)', poll_for),
                                       username);
    perform mysmshook.replace_cron_job('mysmshook-housekeeping', '17 * * * *',
                                       'select mysmshook.prune_cron_history()', username);
    execute 'select jobid from cron.job where jobname = $1' into job_id using job_name;
    return job_id;
end;
$$;
comment on function mysmshook.schedule(text, interval, text, regrole) is
    'Register (or replace) the pg_cron job that runs mysmshook.run_worker, as run_as (default: the caller), and the hourly housekeeping job; returns the cron job id.';

-- A pg_cron job by this name, in this database, run as `username`: other jobs of that name
-- (another owner's, a previous schedule's) are removed first.
create function mysmshook.replace_cron_job(job_name text, cron_schedule text, command text, username text)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    old_job bigint;
begin
    for old_job in execute 'select jobid from cron.job where jobname = $1' using job_name loop
        execute 'select cron.unschedule($1)' using old_job;
    end loop;
    execute 'select cron.schedule_in_database($1, $2, $3, $4, $5)'
      using job_name, cron_schedule, command, pg_catalog.current_database(), username;
end;
$$;

-- pg_cron records every run in cron.job_run_details and never deletes them: a worker every
-- 5 seconds adds 17,280 rows a day. The housekeeping job deletes the runs of mysmshook's jobs
-- (named mysmshook-*, in this database) older than `keep`, at least an hour, and nothing else;
-- as the extension's owner, so that the worker's role needs no rights on schema cron. Returns
-- how many.
create function mysmshook.prune_cron_history(keep interval default '1 day') returns bigint
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    pruned bigint;
begin
    if to_regclass('cron.job_run_details') is null then
        return 0;
    end if;
    execute 'delete from cron.job_run_details d
              where d.end_time < now() - $1
                and d.jobid in (select j.jobid from cron.job j
                                 where j.jobname like ''mysmshook-%'' and j.database = $2)'
      using greatest(keep, interval '1 hour'), pg_catalog.current_database();
    get diagnostics pruned = row_count;
    return pruned;
end;
$$;
comment on function mysmshook.prune_cron_history(interval) is
    'Delete pg_cron''s run history of mysmshook''s jobs older than keep (the housekeeping job calls it hourly).';

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
    -- By id: cron.unschedule(name) finds only the caller's own job.
    perform cron.unschedule(j.jobid) from cron.job j where j.jobname = job_name;
    -- The housekeeping job goes with the last worker.
    if not exists (select 1 from cron.job j where j.command like 'call mysmshook.run_worker%') then
        perform cron.unschedule(j.jobid) from cron.job j where j.jobname = 'mysmshook-housekeeping';
    end if;
    return true;
end;
$$;
comment on function mysmshook.unschedule(text) is 'Remove the pg_cron job registered by mysmshook.schedule(); false if there was none.';

-- Privileges (sql/privileges.sql) ---------------------------------------------------------

-- Lets a role run the worker and nothing else: the worker's steps run as the extension's owner
-- (SECURITY DEFINER), so the role reads no table and no secret. Schedule it with
-- mysmshook.schedule(run_as => role). pg_cron starts jobs as a session of the role: it needs
-- LOGIN (and, with cron.use_background_workers off, a pg_hba entry for cron.host).
-- Not dequeue_and_run_jobs: it sends in the caller's transaction, and a caller that rolls it
-- back has every code sent again (run_worker's steps refuse to send what has not committed).
create function mysmshook.grant_worker_access(grantee regrole) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    execute pg_catalog.format('grant usage on schema mysmshook to %s', grantee);
    execute pg_catalog.format('grant execute on procedure mysmshook.run_worker(interval) to %s', grantee);
    execute pg_catalog.format('grant execute on function mysmshook.worker_begin(float8), mysmshook.worker_step(), '
                              'mysmshook.prune_cron_history(interval) to %s', grantee);
end;
$$;
comment on function mysmshook.grant_worker_access(regrole) is
    'Allow a role to run the delivery worker (CALL mysmshook.run_worker) and its housekeeping, and nothing else.';
revoke all on function mysmshook.grant_worker_access(regrole) from public;

-- Lets a role (a metrics exporter's) read the queue's figures, not its jobs.
create function mysmshook.grant_monitor_access(grantee regrole) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    execute pg_catalog.format('grant usage on schema mysmshook to %s', grantee);
    execute pg_catalog.format('grant execute on function mysmshook.metrics(interval), '
                              'mysmshook.metrics_prometheus(interval) to %s', grantee);
end;
$$;
comment on function mysmshook.grant_monitor_access(regrole) is
    'Allow a role to call mysmshook.metrics() and mysmshook.metrics_prometheus(), and nothing else.';
revoke all on function mysmshook.grant_monitor_access(regrole) from public;

-- The worker's steps now run as the extension's owner: a role granted them under 0.3.0 (with
-- the table rights they needed then) would now run them with the owner's. Such grants are
-- taken back; grant_worker_access gives them again, knowingly.
do $$
declare
    fn regprocedure;
    grantee regrole;
begin
    for fn, grantee in
        select p.oid::regprocedure, acl.grantee::regrole
          from pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) acl
         where p.oid in ('mysmshook.worker_begin(double precision)'::regprocedure,
                         'mysmshook.worker_step()'::regprocedure,
                         'mysmshook.dequeue_and_run_jobs()'::regprocedure)
           and acl.grantee <> p.proowner and acl.grantee <> 0
    loop
        execute pg_catalog.format('revoke all on function %s from %s', fn, grantee);
        raise notice 'mysmshook 0.4.0: % may no longer execute %; select mysmshook.grant_worker_access(%L) to let it run the worker',
                     grantee, fn, grantee::text;
    end loop;
end;
$$;

-- As at the end of a fresh install: nothing new is PUBLIC's, nor Supabase's API roles'.
revoke all on all tables in schema mysmshook from public;
revoke all on all functions in schema mysmshook from public;
revoke all on all procedures in schema mysmshook from public;
do $$
begin
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

-- A worker scheduled under 0.3.0 gets the housekeeping job schedule() now adds.
do $$
declare
    scheduled boolean;
begin
    if pg_catalog.to_regclass('cron.job') is not null then
        execute 'select exists (select 1 from cron.job where command like ''call mysmshook.run_worker%'' and database = $1)'
           into scheduled using pg_catalog.current_database();
        if scheduled then
            perform mysmshook.replace_cron_job('mysmshook-housekeeping', '17 * * * *',
                                               'select mysmshook.prune_cron_history()', current_user::text);
        end if;
    end if;
end;
$$;

-- Workers reload their configuration (it now holds the pauses).
update mysmshook.config_version set version = version + 1;
