-- mysmshook 0.5.0 -> 0.6.0 (ALTER EXTENSION mysmshook UPDATE): queued jobs, configuration and
-- grants are kept. Run it right after installing the 0.6.0 files.
--
-- What changes: the hooks pin their search_path (a caller's functions, operators and types could
-- otherwise run inside them, as the extension's owner), and run_worker names only pg_catalog's
-- types and operators. retry_job and cancel_job never lock a job a worker holds, and a worker
-- never waits for an operator's transaction to record a late outcome. A final job keeps a keyed
-- hash of its resend_key instead of the number or address.

-- sql/worker.sql. Replaced, not dropped: it keeps the grants a worker role has.
create or replace procedure mysmshook.run_worker(poll_for interval default '0 seconds')
language plpgsql
as $$
declare
    state pg_catalog.text;
begin
    perform mysmshook.worker_begin(pg_catalog.date_part('epoch', poll_for));
    commit;
    loop
        state := mysmshook.worker_step();
        commit;
        exit when state operator(pg_catalog.=) 'done';
    end loop;
end;
$$;

-- sql/schema.sql: a final job whose data is gone keeps a keyed hash of its resend_key, not the
-- number or address. Jobs already final are hashed here (one pass over them: about a second per
-- million).
create table mysmshook.hash_key (
    only_row boolean primary key default true check (only_row),
    key      bytea   not null default pg_catalog.uuid_send(pg_catalog.gen_random_uuid())
                                      operator(pg_catalog.||) pg_catalog.uuid_send(pg_catalog.gen_random_uuid())
);
comment on table mysmshook.hash_key is 'The key of the hash that replaces a final job''s resend_key (owner only).';

create function mysmshook.hashed_resend_key(resend_key text) returns text
language sql stable
set search_path = pg_catalog, pg_temp
return case when left(resend_key, 2) = 'h:' then resend_key
            else 'h:' || encode(sha256((select k.key from mysmshook.hash_key k) || convert_to(resend_key, 'UTF8')), 'hex') end;

create function mysmshook.hash_final_resend_key() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    if not exists (select from mysmshook.hash_key) then
        insert into mysmshook.hash_key default values on conflict do nothing;
    end if;
    new.resend_key := mysmshook.hashed_resend_key(new.resend_key);
    return new;
end;
$$;

create trigger job_queue_hash_final_resend_key
    before update of status, fallback_data on mysmshook.job_queue
    for each row
    when (new.resend_key is not null and left(new.resend_key, 2) <> 'h:' and new.fallback_data is null
          and new.status in ('completed', 'failed', 'expired', 'superseded', 'cancelled'))
    execute function mysmshook.hash_final_resend_key();

select pg_catalog.pg_extension_config_dump('mysmshook.hash_key', '');
insert into mysmshook.hash_key default values;
update mysmshook.job_queue set resend_key = mysmshook.hashed_resend_key(resend_key)
 where resend_key is not null and left(resend_key, 2) <> 'h:' and fallback_data is null
   and status in ('completed', 'failed', 'expired', 'superseded', 'cancelled');

-- sql/queue.sql and sql/operations.sql: supersede and redrive compare both forms of a key.
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
        -- channel is a domain over text: RETURN QUERY wants the declared types exactly.
        returning j.job_id, j.channel::text, j.action_type, j.job_data::text, j.priority, j.retry_count,
                  j.max_retries, j.rescues, extract(epoch from j.expires_at)::float8 as expires_at,
                  j.scheduled_at, j.created_at, j.resend_key
    )
    select c.job_id, c.channel, c.action_type, c.job_data, c.priority, c.retry_count,
           c.max_retries, c.rescues, c.expires_at,
           c.resend_key is not null and exists (
               select 1 from mysmshook.job_queue n
                where n.resend_key in (c.resend_key, mysmshook.hashed_resend_key(c.resend_key))
                  and n.created_at > c.created_at)
      from claimed c
     order by c.priority desc, (c.retry_count = 0), c.scheduled_at, c.created_at;
end;
$$;

create or replace function mysmshook.replaced(resend_key text, created_at timestamptz) returns boolean
language sql stable
set search_path = pg_catalog, pg_temp
return resend_key is not null and exists (
    select 1 from mysmshook.job_queue n
     where n.resend_key in (replaced.resend_key, mysmshook.hashed_resend_key(replaced.resend_key))
       and n.created_at > replaced.created_at);

-- The new objects are the owner's only, as in a fresh install.
revoke all on table mysmshook.hash_key from public;
revoke all on function mysmshook.hashed_resend_key(text), mysmshook.hash_final_resend_key() from public;
do $$
declare
    api_role text;
begin
    foreach api_role in array array['anon', 'authenticated'] loop
        if exists (select 1 from pg_catalog.pg_roles where rolname = api_role) then
            execute pg_catalog.format('revoke all on table mysmshook.hash_key from %I', api_role);
            execute pg_catalog.format('revoke all on function mysmshook.hashed_resend_key(text), '
                                      'mysmshook.hash_final_resend_key() from %I', api_role);
        end if;
    end loop;
end;
$$;

-- sql/queue.sql: a late outcome whose job another transaction holds is 'busy' (the worker keeps
-- it for its next step) instead of waiting for that transaction.
create or replace function mysmshook.record_outcomes(outcomes jsonb)
returns table (job_id uuid, recorded text)
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    owned uuid[];
    free uuid[];
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
        -- Late outcomes touch only the jobs nobody else holds.
        select coalesce(array_agg(q.job_id), '{}') into free
          from (select j.job_id from mysmshook.job_queue j
                 where j.job_id in (select x.job_id from jsonb_to_recordset(outcomes) as x(job_id uuid))
                   and j.job_id <> all (owned)
                   for update skip locked) q;
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
             where j.job_id = o.job_id and j.job_id = any (free)
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
             where j.job_id = o.job_id and j.job_id = any (free) and j.job_id <> all (ended)
            returning j.job_id
        )
        select coalesce(array_agg(done.job_id), '{}') into appended from done;
    end if;

    return query
    select o.job_id,
           case when o.job_id = any (owned) then 'recorded'
                when o.job_id = any (ended) or o.job_id = any (appended) then 'late'
                when exists (select from mysmshook.job_queue j where j.job_id = o.job_id) then 'busy'
                else 'missing' end
      from jsonb_to_recordset(outcomes) as o(job_id uuid);
end;
$$;

-- sql/operations.sql: retry_job and cancel_job no longer lock a job a worker has (the worker
-- recording its outcome would wait for the operator's transaction, past its lease).
create function mysmshook.refuse_busy_job(job_id uuid, running_detail text, running_hint text) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    j record;
begin
    select q.status, q.locked_until into j from mysmshook.job_queue q where q.job_id = refuse_busy_job.job_id;
    if not found then
        raise exception 'job % does not exist', job_id using errcode = 'no_data_found';
    elsif j.status = 'running' then
        raise exception 'job % is being delivered (its worker holds it until %)%', job_id, j.locked_until, running_detail
            using errcode = 'object_not_in_prerequisite_state', hint = coalesce(running_hint, '');
    end if;
    raise exception 'job % is being changed by another transaction (a worker recording it, or an operator)', job_id
        using errcode = 'lock_not_available', hint = 'Try again in a moment.';
end;
$$;

create or replace function mysmshook.retry_job(job_id uuid) returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    j record;
begin
    select q.status, q.expires_at, q.paused_on,
           mysmshook.replaced(q.resend_key, q.created_at) as replaced into j
      from mysmshook.job_queue q
     where q.job_id = retry_job.job_id and q.status <> 'running'
       for update skip locked;
    if not found then
        perform mysmshook.refuse_busy_job(job_id, '', null);
    elsif j.status = 'pending' then
        update mysmshook.job_queue q set scheduled_at = now() where q.job_id = retry_job.job_id;
        return 'pending';
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

create or replace function mysmshook.cancel_job(job_id uuid, reason text default null) returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    j record;
begin
    select q.status into j
      from mysmshook.job_queue q
     where q.job_id = cancel_job.job_id and q.status <> 'running'
       for update skip locked;
    if not found then
        perform mysmshook.refuse_busy_job(job_id, ' and cannot be called back',
                                          'To hold jobs before they are sent, pause their channel, route or provider.');
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

-- The new function is the owner's only, as in a fresh install (a REVOKE on all of the schema
-- would record operators' grants as the extension's initial privileges).
revoke all on function mysmshook.refuse_busy_job(uuid, text, text) from public;
do $$
begin
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'anon') then
        execute 'revoke all on function mysmshook.refuse_busy_job(uuid, text, text) from anon';
    end if;
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'authenticated') then
        execute 'revoke all on function mysmshook.refuse_busy_job(uuid, text, text) from authenticated';
    end if;
end;
$$;

-- Functions of the library ----------------------------------------------------------------

-- Every one is bound to this version's library again (CREATE OR REPLACE keeps its grants);
-- send_sms and send_email now have their SET search_path.
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
CREATE OR REPLACE FUNCTION "invalidate_config_caches"() RETURNS void
STRICT VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'invalidate_config_caches_wrapper';
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
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'send_email_wrapper';
CREATE OR REPLACE FUNCTION "send_sms"(
	"event" jsonb /* Option < hook_arg :: JsonbText > */
) RETURNS jsonb /* JsonB */
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
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
