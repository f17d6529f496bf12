-- mysmshook 0.2.0 -> 0.3.0 (ALTER EXTENSION mysmshook UPDATE): queued jobs and configuration
-- are kept. Run it right after installing the 0.3.0 files.
--
-- What changes: delivery receipts (sql/receipts.sql: the receipts table, receive_receipt,
-- delivered_at, and a sent code's fallback copy so that an undelivered message goes through
-- the rest of its chain); the SMS pumping defence (sql/defence.sql: geo rules, velocity limits
-- and spend caps the SMS hook enforces, the refusals audit log); new provider kinds (smtp,
-- vonage, messagebird, textlocal, msg91, africastalking, plivo, twilio_verify), code only.

-- The queue --------------------------------------------------------------------------------

-- Added at the end of the table (no rewrite): a fresh install has them in the same place.
alter table mysmshook.job_queue add column delivered_at timestamptz;
alter table mysmshook.job_queue add column fallback_data jsonb;
create index job_queue_message_idx
    on mysmshook.job_queue (provider, provider_message_id)
    where provider_message_id is not null;
create index job_queue_fallback_idx
    on mysmshook.job_queue (expires_at)
    where fallback_data is not null;

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

-- Pruning takes a job's receipts with it.
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
-- Receipts go with their job when retention prunes it (sql/queue.sql, prune_finished_jobs).
create index receipts_job_idx on mysmshook.receipts (job_id) where job_id is not null;
comment on table mysmshook.receipts is
    'Verified delivery receipts (provider callbacks). applied_at is null while no job has recorded the message id yet.';

-- Applies waiting receipts (all of them, or those of the given jobs) to their jobs, oldest
-- first; returns how many were applied. Each job is read again, locked, for each receipt (two
-- receipts of one job in one call see each other's effect); rows another transaction holds are
-- skipped, never waited for, and their receipts wait for the next call. Also drops the fallback
-- copies of codes that have expired, and waiting receipts older than a day (their message is
-- not one of ours, or its job was pruned).
create function mysmshook.apply_receipts(job_ids uuid[] default null) returns int
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

-- Keeps the receipts with the configuration and the queue in pg_dump.
select pg_catalog.pg_extension_config_dump('mysmshook.receipts', '');
select pg_catalog.pg_extension_config_dump('mysmshook.receipts_receipt_id_seq', '');

-- The library's functions, all of them re-declared (the same definitions as a fresh install):
-- receive_receipt and refusals are new.
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

-- The SMS pumping defence (sql/defence.sql) -------------------------------------------------

-- A region is a libphonenumber (CLDR) region such as 'MX', or a calling code such as '+52'.
-- With no rows every region is allowed. 'deny' rows refuse their regions; once a channel has
-- an 'allow' row, only allowed regions pass. The hook's channel is 'sms' (WhatsApp is a
-- delivery choice made later, by the routes).
create table mysmshook.geo_rules (
    channel text    not null default 'sms',
    region  text    not null,
    allow   boolean not null,
    primary key (channel, region),
    constraint geo_rules_channel_check check (channel = 'sms'),
    constraint geo_rules_region_check check (region ~ '^([A-Z]{2}|\+[1-9][0-9]{0,2})$')
);
comment on table mysmshook.geo_rules is
    'Destination regions (CLDR, e.g. MX) or calling codes (e.g. +52) allowed or denied for SMS codes. No rows: all allowed; any allow row: only allowed ones pass.';

-- Velocity limits and spend caps. scope says what is counted together:
--   destination  one phone number              prefix   numbers sharing their first
--   ip           one client IP (the event's              prefix_digits digits (after +),
--                metadata.ip_address)                    where pumped ranges live
--   country      one destination region        global   every code
--   country_spend, global_spend: the estimated price (sms_prices), not the count.
-- A request over any limit is refused. Counting is a sliding window: the current window's
-- count plus the previous window's, weighted by how much of it still overlaps.
-- Built in (no row): 'codes_per_number', at most 5 codes to one number in 10 minutes. A row of
-- that name replaces it (enabled = false turns it off).
create table mysmshook.limits (
    name          text     primary key,
    scope         text     not null,
    prefix_digits int,
    per           interval not null,
    maximum       float8   not null,
    enabled       boolean  not null default true,
    constraint limits_scope_check check (scope in
        ('destination', 'prefix', 'ip', 'country', 'global', 'country_spend', 'global_spend')),
    constraint limits_prefix_check check ((scope = 'prefix') = (prefix_digits is not null)
                                          and coalesce(prefix_digits between 1 and 14, true)),
    constraint limits_per_check check (per between interval '1 second' and interval '31 days'),
    constraint limits_maximum_check check (maximum >= 0)
);
comment on table mysmshook.limits is
    'Velocity limits and spend caps the SMS hook enforces (sliding window). Built in: codes_per_number, 5 per 10 minutes per destination, unless a row of that name replaces it.';

-- The estimated price of one SMS segment by destination region; '*' for every other region.
-- A code is estimated at one segment (the built-in wording is); the worker records the real
-- count in job_queue.sms_segments.
create table mysmshook.sms_prices (
    region      text    primary key,
    per_segment numeric not null check (per_segment >= 0),
    constraint sms_prices_region_check check (region ~ '^([A-Z]{2}|\*)$')
);
comment on table mysmshook.sms_prices is
    'Estimated price of one SMS segment per destination region (''*'': any other), for spend caps.';

-- What the limits have counted: per limit and key, this window's amount and the previous
-- window's (one row, so the hook reads both from the row it updates). Unlogged: nothing is
-- written to WAL for it on the sign-in path, and a crash (or a failover: standbys do not have
-- it) starts every count at zero. Shared counters (country, global, spend) are spread over 8
-- shards by backend, so that sign-ins do not queue behind one row lock held until each auth
-- transaction commits.
-- Byte-wise collation: keys are numbers, addresses and names, compared on every sign-in.
create unlogged table mysmshook.limit_counters (
    limit_name   text        collate "C" not null,
    key          text        collate "C" not null,
    shard        smallint    not null,
    window_start timestamptz not null,
    amount       float8      not null,
    previous     float8      not null,
    primary key (limit_name, key, shard)
);

-- Deletes counters no limit reads any more (last counted two windows ago, or of a limit gone).
create function mysmshook.prune_limit_counters() returns int
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    pruned int;
begin
    delete from mysmshook.limit_counters c
     where not exists (
        select 1
          from (select l.name, l.per from mysmshook.limits l
                union all
                select 'codes_per_number', interval '10 minutes'
                 where not exists (select 1 from mysmshook.limits l where l.name = 'codes_per_number')) r
         where r.name = c.limit_name and c.window_start >= now() - 2 * r.per);
    get diagnostics pruned = row_count;
    return pruned;
end;
$$;

-- A conservative starting allow-list: the regions your SMS codes were delivered to since
-- `since` (at least `min_jobs` of them), from the queue's own history.
--   insert into mysmshook.geo_rules (region, allow)
--   select region, true from mysmshook.suggested_geo_allowlist();
create function mysmshook.suggested_geo_allowlist(since interval default '30 days', min_jobs int default 3)
returns table (region text, delivered bigint)
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    select q.job_data->>'region', count(*)
      from mysmshook.job_queue q
     where q.channel in ('sms', 'whatsapp') and q.status = 'completed'
       and q.created_at > now() - since and q.job_data ? 'region'
     group by 1
    having count(*) >= min_jobs
     order by 2 desc, 1;
$$;

create trigger geo_rules_changed
    after insert or update or delete or truncate on mysmshook.geo_rules
    for each statement execute function mysmshook.config_changed();
create trigger limits_changed
    after insert or update or delete or truncate on mysmshook.limits
    for each statement execute function mysmshook.config_changed();
create trigger sms_prices_changed
    after insert or update or delete or truncate on mysmshook.sms_prices
    for each statement execute function mysmshook.config_changed();

-- Geo rules, limits and prices are configuration: pg_dump keeps them. Counters are not.
select pg_catalog.pg_extension_config_dump('mysmshook.geo_rules', '');
select pg_catalog.pg_extension_config_dump('mysmshook.limits', '');
select pg_catalog.pg_extension_config_dump('mysmshook.sms_prices', '');

-- What fired, by rule, region and hour, from the audit log: many destinations from few IPs, or
-- sequential numbers of one prefix, is an attacker; one destination refused a few times is a
-- person asking again. mysmshook.refusals() has every refusal (masked destination, IP, time).
create view mysmshook.refusal_summary as
select r.rule, r.region, date_trunc('hour', r.refused_at) as hour, count(*) as refusals,
       count(distinct r.destination) as destinations, count(distinct r.ip) as ips,
       min(r.refused_at) as first_at, max(r.refused_at) as last_at
  from mysmshook.refusals() r
 group by 1, 2, 3
 order by 3 desc, 4 desc;
comment on view mysmshook.refusal_summary is
    'SMS hook refusals per rule, region and hour (from mysmshook.refusals(), the audit log).';

-- Hooks and workers that loaded the 0.3.0 library before this update ran without the new
-- tables; this makes them read the configuration again.
update mysmshook.config_version set version = version + 1;

-- Privileges (sql/privileges.sql): nothing new is usable by PUBLIC or Supabase's API roles.
revoke all on all tables in schema mysmshook from public;
revoke all on all functions in schema mysmshook from public;
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
