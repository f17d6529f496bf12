-- mysmshook 0.2.0 -> 0.3.0 (ALTER EXTENSION mysmshook UPDATE): queued jobs and configuration
-- are kept. Run it right after installing the 0.3.0 files.
--
-- What changes: delivery receipts (sql/receipts.sql: the receipts table, receive_receipt,
-- delivered_at, and a sent code's fallback copy so that an undelivered message goes through
-- the rest of its chain); new provider kinds (smtp, vonage, messagebird, textlocal, msg91,
-- africastalking, plivo, twilio_verify), which are code only.

-- The queue --------------------------------------------------------------------------------

-- Added at the end of the table (no rewrite): a fresh install has them in the same place.
alter table mysmshook.job_queue add column delivered_at timestamptz;
alter table mysmshook.job_queue add column fallback_data jsonb;
create index job_queue_message_idx
    on mysmshook.job_queue (provider, provider_message_id)
    where provider_message_id is not null;

-- sql/queue.sql: outcomes carry the fallback copy.
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
            job_data jsonb, fallback_data jsonb, sms_encoding text, sms_segments int)
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
               fallback_data = o.fallback_data,
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

-- Receipts (sql/receipts.sql) ---------------------------------------------------------------

create table mysmshook.receipts (
    receipt_id  bigint      generated always as identity primary key,
    provider    text        not null,
    message_id  text        not null,
    -- The provider's id of this event (Svix/Standard Webhooks id; Twilio: sid/status): a
    -- replayed or repeated callback is recorded once.
    event_id    text        not null,
    status      text        not null,
    outcome     text        not null,
    error       text,
    received_at timestamptz not null default now(),
    job_id      uuid,
    applied_at  timestamptz,
    constraint receipts_outcome_check check (outcome in ('progress', 'delivered', 'failed')),
    constraint receipts_event_key unique (provider, event_id)
);
create index receipts_waiting_idx on mysmshook.receipts (received_at) where applied_at is null;
comment on table mysmshook.receipts is
    'Verified delivery receipts (provider callbacks). applied_at is null while no job has recorded the message id yet.';

-- Applies waiting receipts (all of them, or those given) to their jobs, oldest first; returns
-- how many were applied. Rows another transaction holds are skipped, never waited for. Also
-- drops the fallback copies of codes that have expired, and waiting receipts older than a day
-- (their message is not one of ours, or its job was pruned).
create function mysmshook.apply_receipts(job_ids uuid[] default null) returns int
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    r record;
    applied int := 0;
    entry jsonb;
begin
    for r in
        select rc.receipt_id, rc.provider, rc.status, rc.outcome, rc.error, rc.received_at,
               j.job_id, j.status as job_status, j.fallback_data, j.expires_at, j.attempts
          from mysmshook.receipts rc
          join mysmshook.job_queue j
            on j.provider = rc.provider and j.provider_message_id = rc.message_id
         where rc.applied_at is null and (job_ids is null or j.job_id = any (job_ids))
         order by rc.receipt_id
           for update of rc, j skip locked
    loop
        entry := jsonb_build_object('at', r.received_at, 'provider', r.provider, 'result', 'receipt',
                                    'status', r.status) || jsonb_strip_nulls(jsonb_build_object('error', r.error));
        if r.outcome = 'failed' and r.job_status = 'completed' then
            if r.fallback_data is not null and r.expires_at > now() then
                -- The rest of the chain gets its turn: the job goes back in line, no retry charged.
                update mysmshook.job_queue
                   set status = 'pending', scheduled_at = now(), finished_at = null,
                       job_data = r.fallback_data || jsonb_build_object('skip_providers', (
                           select coalesce(jsonb_agg(distinct a->>'provider'), '[]')
                             from jsonb_array_elements(r.attempts) a
                            where a->>'provider' is not null and a->>'provider' <> '-')),
                       fallback_data = null,
                       last_error = format('%s reported it undelivered (%s): trying the next provider',
                                           r.provider, coalesce(r.error, r.status)),
                       attempts = attempts || entry
                 where job_id = r.job_id;
            else
                update mysmshook.job_queue
                   set status = 'failed', fallback_data = null,
                       last_error = format('%s reported it undelivered (%s)', r.provider, coalesce(r.error, r.status)),
                       attempts = attempts || entry
                 where job_id = r.job_id;
            end if;
        elsif r.outcome = 'delivered' then
            update mysmshook.job_queue
               set delivered_at = coalesce(delivered_at, r.received_at), fallback_data = null,
                   attempts = attempts || entry
             where job_id = r.job_id;
        else
            update mysmshook.job_queue set attempts = attempts || entry where job_id = r.job_id;
        end if;
        update mysmshook.receipts set applied_at = now(), job_id = r.job_id where receipt_id = r.receipt_id;
        applied := applied + 1;
    end loop;

    if job_ids is null then
        update mysmshook.job_queue set fallback_data = null
         where fallback_data is not null and expires_at <= now();
        delete from mysmshook.receipts where applied_at is null and received_at < now() - interval '1 day';
    end if;
    return applied;
end;
$$;

-- Records one verified receipt and applies it if its job is known. Returns what happened:
-- {"receipt_id", "job_id" (null while the job has not recorded the message id), "duplicate"}.
create function mysmshook.record_receipt(
    provider text, message_id text, event_id text, status text, outcome text, error text)
returns jsonb
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    id bigint;
    job uuid;
begin
    insert into mysmshook.receipts as rc (provider, message_id, event_id, status, outcome, error)
    values (provider, message_id, event_id, status, outcome, error)
    on conflict on constraint receipts_event_key do nothing
    returning rc.receipt_id into id;
    if id is null then
        return jsonb_build_object('duplicate', true);
    end if;
    select j.job_id into job from mysmshook.job_queue j
     where j.provider = record_receipt.provider and j.provider_message_id = record_receipt.message_id;
    if job is not null then
        perform mysmshook.apply_receipts(array[job]);
    end if;
    return jsonb_build_object('receipt_id', id, 'job_id', job, 'duplicate', false);
end;
$$;

select pg_catalog.pg_extension_config_dump('mysmshook.receipts', '');
select pg_catalog.pg_extension_config_dump('mysmshook.receipts_receipt_id_seq', '');

-- The library's functions, all of them re-declared (the same definitions as a fresh install),
-- receive_receipt new among them.
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

-- Privileges (sql/privileges.sql): nothing new is executable by PUBLIC or Supabase's API roles.
revoke all on table mysmshook.receipts from public;
revoke all on function mysmshook.apply_receipts(uuid[]) from public;
revoke all on function mysmshook.record_receipt(text, text, text, text, text, text) from public;
revoke all on function mysmshook.receive_receipt(text, text, jsonb, text) from public;
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
