-- mysmshook 0.4.0 -> 0.5.0 (ALTER EXTENSION mysmshook UPDATE): queued jobs and configuration
-- are kept. Run it right after installing the 0.5.0 files.
--
-- What changes: job_queue's status and channel are domains instead of CHECK constraints, so the
-- hook's INSERT no longer re-plans two constraints on every sign-in. Values and their checks are
-- the same; queue_status still shows them as text. A configuration change now also sends an
-- invalidation to every backend (invalidate_config_caches), so the SMS hook no longer reads
-- config_version on every sign-in.

-- The queue --------------------------------------------------------------------------------

-- The constraints are added once the columns have their types: changing a column to a domain
-- with a constraint rewrites the table, adding the constraint to the domain only reads it
-- through. The partial indexes on status are rebuilt either way (about a second per million
-- jobs, measured, with the queue held).
create domain mysmshook.job_status as text;
comment on domain mysmshook.job_status is
    'A job''s status: pending, running, completed, failed, expired, superseded, paused, cancelled (see job_queue).';
create domain mysmshook.job_channel as text;
comment on domain mysmshook.job_channel is 'The channel a job goes out on: sms, whatsapp or email.';

-- queue_status reads the two columns: it reads nothing while they change type, then reads them
-- again. Replaced, not dropped: it keeps its grants, its comment and its place in pg_dump. The
-- default is set again so that it reads as a fresh install's.
create or replace view mysmshook.queue_status as
select null::text as status, null::text as channel, 0::bigint as jobs, null::timestamptz as oldest_due,
       null::timestamptz as last_finished, 0::bigint as to_server_log
 where false;

alter table mysmshook.job_queue
    drop constraint job_queue_status_check,
    drop constraint job_queue_channel_check,
    alter column status drop default,
    alter column status type mysmshook.job_status,
    alter column status set default 'pending',
    alter column channel type mysmshook.job_channel;

create or replace view mysmshook.queue_status as
select q.status::text                                    as status,
       q.channel::text                                   as channel,
       count(*)                                          as jobs,
       min(q.scheduled_at) filter (where q.status = 'pending' and q.scheduled_at <= now())
                                                         as oldest_due,
       max(q.finished_at)                                as last_finished,
       count(*) filter (where q.provider = 'log'
                           or q.provider in (select p.name from mysmshook.providers p where p.kind = 'log'))
                                                         as to_server_log
  from mysmshook.job_queue q
 group by q.status, q.channel;

alter domain mysmshook.job_status add constraint job_status_check
    check (value in ('pending', 'running', 'completed', 'failed', 'expired', 'superseded',
                     'paused', 'cancelled'));
alter domain mysmshook.job_channel add constraint job_channel_check
    check (value in ('sms', 'whatsapp', 'email'));

-- sql/queue.sql: RETURN QUERY wants the declared types exactly.
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
                where n.resend_key = c.resend_key and n.created_at > c.created_at)
      from claimed c
     order by c.priority desc, (c.retry_count = 0), c.scheduled_at, c.created_at;
end;
$$;

-- Functions of the library ----------------------------------------------------------------

-- Every one is bound to this version's library again; invalidate_config_caches is new.
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

-- sql/validation.sql: a configuration change also tells every backend, so that the SMS hook
-- no longer reads config_version on every sign-in.
create or replace function mysmshook.config_changed() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    update mysmshook.config_version set version = version + 1;
    perform mysmshook.invalidate_config_caches();
    return null;
end;
$$;

-- The new function is the owner's only, as in a fresh install. Only it: a REVOKE on all of the
-- schema here would record every grant an operator has made (a worker role's, say) as the
-- extension's initial privileges, which pg_dump leaves out.
revoke all on function mysmshook.invalidate_config_caches() from public;
do $$
begin
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'anon') then
        execute 'revoke all on function mysmshook.invalidate_config_caches() from anon';
    end if;
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'authenticated') then
        execute 'revoke all on function mysmshook.invalidate_config_caches() from authenticated';
    end if;
end;
$$;

-- Hooks running this version's library before this update cached the configuration without
-- the trigger's invalidations: they reload now.
select mysmshook.invalidate_config_caches();
