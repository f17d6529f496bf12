-- mysmshook 0.5.0 -> 0.6.0 (ALTER EXTENSION mysmshook UPDATE): queued jobs, configuration and
-- grants are kept. Run it right after installing the 0.6.0 files.
--
-- What changes: the hooks pin their search_path (a caller's functions, operators and types could
-- otherwise run inside them, as the extension's owner), and run_worker names only pg_catalog's
-- types and operators. retry_job and cancel_job never lock a job a worker holds, and a worker
-- never waits for an operator's transaction to record a late outcome. A job that becomes final
-- keeps a keyed hash of its resend_key instead of the number or address. A job's attempts are bounded, and a
-- job waiting for a template fix waits for a configuration change, not a timer. Receipts for
-- messages no job sent cost runs and callbacks a bounded, indexed read. Last, the
-- extension's initial privileges (pg_init_privs) become a fresh install's: the scripts to 0.2.0,
-- 0.3.0 and 0.4.0 had recorded operators' grants there, and pg_dump left them out.

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
-- number or address. Jobs already final keep theirs until retention prunes them: hashing them
-- here would rewrite every finished row while the hooks wait on this update's locks.
create table mysmshook.hash_key (
    created_at timestamptz not null default pg_catalog.clock_timestamp(),
    key        bytea       not null default pg_catalog.uuid_send(pg_catalog.gen_random_uuid())
                                        operator(pg_catalog.||) pg_catalog.uuid_send(pg_catalog.gen_random_uuid())
);
comment on table mysmshook.hash_key is 'The key of the hash that replaces a final job''s resend_key: the oldest row (owner only).';
insert into mysmshook.hash_key default values;

create function mysmshook.hashed_resend_key(resend_key text) returns text
language sql stable
set search_path = pg_catalog, pg_temp
return case when left(resend_key, 2) = 'h:' then resend_key
            else 'h:' || encode(sha256((select k.key from mysmshook.hash_key k order by k.created_at limit 1)
                                       || convert_to(resend_key, 'UTF8')), 'hex') end;

create function mysmshook.hash_final_resend_key() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
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

-- A job's history, bounded: the first 10 entries and the latest 39, and between them one entry
-- {"result": "omitted", "count": n} for the rest, so that a job tried again and again (a template
-- that fails for one user's data, a provider down for days) does not grow a row without end.
create function mysmshook.bounded_attempts(attempts jsonb) returns jsonb
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
declare
    total int := jsonb_array_length(attempts);
begin
    if total <= 50 then
        return attempts;
    end if;
    return (select jsonb_agg(e.a order by e.i) from jsonb_array_elements(attempts) with ordinality e(a, i) where e.i <= 10)
        || jsonb_build_array(jsonb_build_object('result', 'omitted', 'count', (
               select sum(case when e.a->>'result' = 'omitted' then (e.a->>'count')::bigint else 1 end)
                 from jsonb_array_elements(attempts) with ordinality e(a, i)
                where e.i > 10 and e.i <= total - 39)))
        || (select jsonb_agg(e.a order by e.i) from jsonb_array_elements(attempts) with ordinality e(a, i) where e.i > total - 39);
end;
$$;

-- sql/validation.sql: a configuration change makes the jobs waiting for a template fix due.
create or replace function mysmshook.config_changed() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    update mysmshook.config_version set version = version + 1;
    perform mysmshook.invalidate_config_caches();
    update mysmshook.job_queue j set scheduled_at = now() + interval '2 seconds'
      from (select q.job_id from mysmshook.job_queue q
             where q.status = 'pending' and q.scheduled_at > now()
               and q.last_error like 'waiting for a template fix%'
               for update skip locked) w
     where j.job_id = w.job_id;
    return null;
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
               attempts = mysmshook.bounded_attempts(j.attempts || o.attempts),
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
                   attempts = mysmshook.bounded_attempts(j.attempts || mysmshook.late_attempts(o.attempts)),
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
               set attempts = mysmshook.bounded_attempts(j.attempts || mysmshook.late_attempts(o.attempts))
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

-- sql/receipts.sql: receipts nobody sent. Account-wide webhooks and status callbacks bring
-- receipts for other mail and SMS; they no longer cost every run and every callback a scan of
-- all of them. A callback applies its own receipt through its job; a job that records a message
-- id marks the receipts already waiting for it (trigger job_queue_receipts_ready); each run
-- probes the new receipts once, a bounded number, and moves past those of no job of ours
-- (receipt_probe). The receipts waiting now count as recorded by transaction 0: the first runs
-- after the update probe them, `batch` per run; those whose job has already recorded the message
-- id are marked ready here (one pass over the waiting receipts: well under a second per 200,000).
alter table mysmshook.receipts
    add column recorded_by xid8 not null default '0',
    add column ready boolean not null default false;
alter table mysmshook.receipts alter column recorded_by set default pg_current_xact_id();
create index receipts_message_idx on mysmshook.receipts (provider, message_id, receipt_id) where applied_at is null;
create index receipts_probe_idx on mysmshook.receipts (recorded_by, receipt_id) where applied_at is null;
create index receipts_ready_idx on mysmshook.receipts (receipt_id) where applied_at is null and ready;
update mysmshook.receipts rc set ready = true
 where rc.applied_at is null
   and exists (select from mysmshook.job_queue q
                where q.provider = rc.provider and q.provider_message_id = rc.message_id);

create table mysmshook.receipt_probe (
    only_row      boolean primary key default true check (only_row),
    probed_by     xid8    not null default '0',
    probed_id     bigint  not null default 0,
    settled_below xid8    not null default '0',
    seen_xmin     xid8    not null default '0',
    seen_xmax     xid8    not null default '0'
);
comment on table mysmshook.receipt_probe is
    'Where the worker runs'' probe of new receipts stands (one row; see sql/receipts.sql).';
insert into mysmshook.receipt_probe default values;

-- Replaced, not dropped: they keep their grants.
create or replace function mysmshook.apply_receipts(job_ids uuid[] default null) returns int
language plpgsql
set search_path = pg_catalog, pg_temp
set enable_sort = off
set enable_bitmapscan = off
as $$
declare
    batch constant int := 10000;
    jobs uuid[] := coalesce(job_ids, '{}');
    probing boolean := false;
    probe record;
    snap pg_snapshot;
    settled boolean := true;
    passed_with_job bigint[] := '{}';
    w record;
    jid uuid;
    m record;
    r record;
    j record;
    applied int := 0;
    entry jsonb;
begin
    if job_ids is null then
        select p.* into probe from mysmshook.receipt_probe p for update skip locked;
        probing := found;
    end if;

    if probing then
        -- The receipts whose job is known; one whose job no longer has the id (pruned, or sent
        -- again through another provider) is set aside.
        with due as (
            select rc.receipt_id,
                   (select q.job_id from mysmshook.job_queue q
                     where q.provider = rc.provider and q.provider_message_id = rc.message_id
                     limit 1) as job_id
              from mysmshook.receipts rc
             where rc.applied_at is null and rc.ready
             order by rc.receipt_id
             limit batch
               for update skip locked
        ), unmatched as (
            update mysmshook.receipts rc set ready = false
              from due where rc.receipt_id = due.receipt_id and due.job_id is null
        )
        select jobs || coalesce(array_agg(due.job_id) filter (where due.job_id is not null), '{}')
          into jobs from due;

        -- Every transaction running at the last probe has ended: what it recorded before is settled.
        snap := pg_current_snapshot();
        if pg_snapshot_xmin(snap) >= probe.seen_xmax then
            probe.settled_below := probe.seen_xmin;
            probe.seen_xmin := pg_snapshot_xmin(snap);
            probe.seen_xmax := pg_snapshot_xmax(snap);
        end if;
        -- The new receipts, by message id: those with a job are applied; the probe passes those
        -- without one, and stops passing at the first that is not settled.
        for w in
            select rc.receipt_id, rc.recorded_by,
                   (select q.job_id from mysmshook.job_queue q
                     where q.provider = rc.provider and q.provider_message_id = rc.message_id
                     limit 1) as job_id
              from mysmshook.receipts rc
             where rc.applied_at is null
               and (rc.recorded_by, rc.receipt_id) > (probe.probed_by, probe.probed_id)
             order by rc.recorded_by, rc.receipt_id
             limit batch
        loop
            if w.job_id is not null then
                jobs := jobs || w.job_id;
                if settled then
                    passed_with_job := passed_with_job || w.receipt_id;
                end if;
            elsif w.recorded_by >= probe.settled_below then
                settled := false;
            end if;
            if settled then
                probe.probed_by := w.recorded_by;
                probe.probed_id := w.receipt_id;
            end if;
        end loop;
        update mysmshook.receipt_probe
           set probed_by = probe.probed_by, probed_id = probe.probed_id,
               settled_below = probe.settled_below, seen_xmin = probe.seen_xmin, seen_xmax = probe.seen_xmax;
    end if;

    foreach jid in array array(select distinct x from unnest(jobs) x) loop
        select q.provider, q.provider_message_id into m
          from mysmshook.job_queue q where q.job_id = jid
           for update skip locked;
        continue when not found;  -- held by a worker or an operator: next time
        for r in
            select rc.receipt_id, rc.provider, rc.status, rc.outcome, rc.error, rc.received_at
              from mysmshook.receipts rc
             where rc.provider = m.provider and rc.message_id = m.provider_message_id
               and rc.applied_at is null
             order by rc.receipt_id
               for update skip locked
        loop
            select q.job_id, q.status, q.fallback_data, q.expires_at, q.delivered_at, q.attempts into j
              from mysmshook.job_queue q
             where q.job_id = jid;
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
    end loop;
    -- The probe passed these and their job was held: the next run applies them.
    if cardinality(passed_with_job) > 0 then
        update mysmshook.receipts rc set ready = true
         where rc.receipt_id in (select h.receipt_id from mysmshook.receipts h
                                  where h.receipt_id = any (passed_with_job) and h.applied_at is null
                                    and not h.ready
                                    for update skip locked);
    end if;

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
    end if;
    if probing then
        delete from mysmshook.receipts rc
         where rc.receipt_id in (select o.receipt_id from mysmshook.receipts o
                                  where o.applied_at is null and o.received_at < now() - interval '1 day'
                                  order by o.received_at
                                  limit batch
                                    for update skip locked);
    end if;
    return applied;
end;
$$;

create or replace function mysmshook.record_receipt(
    provider text, message_id text, event_id text, status text, outcome text, error text)
returns jsonb
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    id bigint;
    job uuid;
begin
    select j.job_id into job from mysmshook.job_queue j
     where j.provider = record_receipt.provider and j.provider_message_id = record_receipt.message_id;
    -- Ready: should the job be held now, the next run applies it.
    insert into mysmshook.receipts as rc (provider, message_id, event_id, status, outcome, error, ready)
    values (provider, message_id, event_id, status, outcome, error, job is not null)
    on conflict on constraint receipts_event_key do nothing
    returning rc.receipt_id into id;
    if id is null then
        return jsonb_build_object('duplicate', true);
    end if;
    if job is not null then
        perform mysmshook.apply_receipts(array[job]);
    end if;
    return jsonb_build_object('receipt_id', id, 'job_id', job, 'duplicate', false);
end;
$$;

create function mysmshook.receipts_job_recorded() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    update mysmshook.receipts rc set ready = true
     where rc.receipt_id in (select w.receipt_id from mysmshook.receipts w
                              where w.provider = new.provider and w.message_id = new.provider_message_id
                                and w.applied_at is null and not w.ready
                                for update skip locked);
    return null;
end;
$$;

create trigger job_queue_receipts_ready
    after update of provider, provider_message_id on mysmshook.job_queue
    for each row
    when (new.provider_message_id is not null
          and (new.provider_message_id is distinct from old.provider_message_id
               or new.provider is distinct from old.provider))
    execute function mysmshook.receipts_job_recorded();

-- Privileges -------------------------------------------------------------------------------

-- What this update adds is the owner's only, as in a fresh install: revoked by name (a REVOKE
-- on all of the schema would also touch operators' grants), from PUBLIC and Supabase's API roles.
do $$
declare
    grantee text;
begin
    foreach grantee in array array['public', 'anon', 'authenticated'] loop
        if grantee = 'public' or exists (select from pg_catalog.pg_roles where rolname = grantee) then
            execute pg_catalog.format('revoke all on table mysmshook.hash_key, mysmshook.receipt_probe from %s', grantee);
            execute pg_catalog.format(
                'revoke all on function mysmshook.hashed_resend_key(text), mysmshook.hash_final_resend_key(), '
                'mysmshook.bounded_attempts(jsonb), mysmshook.refuse_busy_job(uuid, text, text), '
                'mysmshook.receipts_job_recorded() from %s', grantee);
        end if;
    end loop;
end;
$$;

-- Initial privileges --------------------------------------------------------------------------

-- pg_dump dumps an extension's privileges as the difference from its initial privileges
-- (pg_init_privs), and PostgreSQL records as initial privileges the whole ACL an object has after
-- any GRANT or REVOKE an extension script runs. The scripts to 0.2.0, 0.3.0 and 0.4.0 ended with
-- REVOKEs on all of the schema: they recorded the grants operators had made by then (a hook role's
-- EXECUTE on send_sms and send_email and USAGE on the schema, a receipts endpoint's, a metrics
-- exporter's, SELECT on queue_status ...) as the extension's own, so pg_dump left them out and a
-- restored database lost them. Here every entry of the extension's objects becomes what a fresh
-- install records (sql/privileges.sql): the owner's privileges only, plus supabase_auth_admin's
-- EXECUTE on the two hooks and USAGE on the schema when that role exists. The grants themselves
-- (proacl, relacl, nspacl) are not touched.
--
-- pg_init_privs is written directly: a GRANT or REVOKE here would record the operators' grants
-- again. On PostgreSQL 17 and later each entry also has pg_shdepend rows (deptype 'i') for the
-- roles it names, which are kept in step the way PostgreSQL does it (aclchk.c,
-- recordExtensionInitPrivWorker; pg_shdepend.c, updateInitAclDependencies): one row per role the
-- entry names as grantee or grantor, none for PUBLIC or for a pinned role (created by initdb).
-- This block stays last in the script: anything after it that grants or revokes is recorded on
-- top of it, as in a fresh install.
do $$
declare
    schema_oid pg_catalog.oid := 'mysmshook'::pg_catalog.regnamespace;
    extension_oid pg_catalog.oid := (select e.oid from pg_catalog.pg_extension e where e.extname = 'mysmshook');
    auth_role pg_catalog.oid := (select r.oid from pg_catalog.pg_roles r where r.rolname = 'supabase_auth_admin');
    hook_functions pg_catalog.oid[] := array['mysmshook.send_sms(jsonb)'::pg_catalog.regprocedure,
                                             'mysmshook.send_email(jsonb)'::pg_catalog.regprocedure]::pg_catalog.oid[];
    this_database pg_catalog.oid := (select d.oid from pg_catalog.pg_database d
                                      where d.datname = pg_catalog.current_database());
    recorded pg_catalog.pg_init_privs[];
    wanted pg_catalog.pg_init_privs[];
begin
    -- The entries this block answers for: those of the schema, of every member of the extension
    -- (columns included), and of anything else in the schema that no other extension owns (an
    -- operator's own table there was recorded by the same REVOKEs; a fresh install has none).
    select pg_catalog.array_agg(p) into recorded
      from pg_catalog.pg_init_privs p
     where (p.classoid = 'pg_catalog.pg_namespace'::pg_catalog.regclass and p.objoid = schema_oid)
        or exists (select from pg_catalog.pg_depend d
                    where d.classid = p.classoid and d.objid = p.objoid and d.deptype = 'e'
                      and d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
                      and d.refobjid = extension_oid)
        or (((p.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass
              and p.objoid in (select c.oid from pg_catalog.pg_class c where c.relnamespace = schema_oid))
             or (p.classoid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                 and p.objoid in (select f.oid from pg_catalog.pg_proc f where f.pronamespace = schema_oid))
             or (p.classoid = 'pg_catalog.pg_type'::pg_catalog.regclass
                 and p.objoid in (select t.oid from pg_catalog.pg_type t where t.typnamespace = schema_oid)))
            and not exists (select from pg_catalog.pg_depend d
                             where d.classid = p.classoid and d.objid = p.objoid and d.deptype = 'e'
                               and d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass));

    -- What a fresh install records (sql/privileges.sql, run last, as a superuser): the REVOKEs
    -- from PUBLIC on the schema, on all tables (and views) and on all functions and procedures
    -- leave each with its owner's privileges; grant_hook_access('supabase_auth_admin') then adds
    -- that role after them, granted by the owner. Columns, sequences and types get no entry.
    select pg_catalog.array_agg(row(w.objoid, w.classoid, w.objsubid, w.privtype, w.initprivs)::pg_catalog.pg_init_privs)
      into wanted
      from (select n.oid as objoid, 'pg_catalog.pg_namespace'::pg_catalog.regclass::pg_catalog.oid as classoid,
                   0 as objsubid, 'e'::"char" as privtype,
                   pg_catalog.acldefault('n', n.nspowner)
                   || case when auth_role is null then '{}'::pg_catalog.aclitem[]
                           else array[pg_catalog.makeaclitem(auth_role, n.nspowner, 'USAGE', false)] end as initprivs
              from pg_catalog.pg_namespace n
             where n.oid = schema_oid
            union all
            select c.oid, 'pg_catalog.pg_class'::pg_catalog.regclass::pg_catalog.oid, 0, 'e'::"char",
                   pg_catalog.acldefault('r', c.relowner)
              from pg_catalog.pg_class c
             where c.relnamespace = schema_oid and c.relkind in ('r', 'v', 'm', 'f', 'p')
               and exists (select from pg_catalog.pg_depend d
                            where d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass and d.objid = c.oid
                              and d.deptype = 'e' and d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
                              and d.refobjid = extension_oid)
            union all
            select f.oid, 'pg_catalog.pg_proc'::pg_catalog.regclass::pg_catalog.oid, 0, 'e'::"char",
                   array[pg_catalog.makeaclitem(f.proowner, f.proowner, 'EXECUTE', false)]
                   || case when auth_role is null or f.oid <> all (hook_functions) then '{}'::pg_catalog.aclitem[]
                           else array[pg_catalog.makeaclitem(auth_role, f.proowner, 'EXECUTE', false)] end
              from pg_catalog.pg_proc f
             where f.pronamespace = schema_oid
               and exists (select from pg_catalog.pg_depend d
                            where d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass and d.objid = f.oid
                              and d.deptype = 'e' and d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
                              and d.refobjid = extension_oid)) w;

    delete from pg_catalog.pg_init_privs p
     using pg_catalog.unnest(recorded) r
     where p.objoid = r.objoid and p.classoid = r.classoid and p.objsubid = r.objsubid;
    insert into pg_catalog.pg_init_privs (objoid, classoid, objsubid, privtype, initprivs)
    select w.objoid, w.classoid, w.objsubid, w.privtype, w.initprivs from pg_catalog.unnest(wanted) w;

    if pg_catalog.current_setting('server_version_num')::pg_catalog.int4 >= 170000 then
        delete from pg_catalog.pg_shdepend s
         using (select r.classoid, r.objoid from pg_catalog.unnest(recorded) r
                union
                select w.classoid, w.objoid from pg_catalog.unnest(wanted) w) k
         where s.dbid = this_database and s.classid = k.classoid and s.objid = k.objoid and s.deptype = 'i';
        -- FirstUnpinnedObjectId (src/include/access/transam.h): roles below it are pinned.
        insert into pg_catalog.pg_shdepend (dbid, classid, objid, objsubid, refclassid, refobjid, deptype)
        select distinct this_database, w.classoid, w.objoid, w.objsubid,
               'pg_catalog.pg_authid'::pg_catalog.regclass, m.roleid, 'i'::"char"
          from pg_catalog.unnest(wanted) w,
               pg_catalog.aclexplode(w.initprivs) a,
               lateral (values (a.grantee), (a.grantor)) m(roleid)
         where m.roleid <> 0 and m.roleid >= 12000;
    end if;
end;
$$;
