-- The queue's state machine. A job's life, read top to bottom:
--
--   pending ──claim_jobs──▶ running ──record_outcomes──▶ completed | failed | expired
--      ▲                     │  │                     └─▶ pending (retry, after a backoff)
--      │                     │  └─renew_leases (the holder, while it works)
--      └──release_jobs───────┤     (given back unstarted: no retry charged)
--      └──rescue_expired_leases  (the lease ran out: its worker died or stalled)
--   running ──(claimed, but a newer code for its user, action and destination exists)──▶ superseded
--   running ──record_outcomes (its channel, route or provider is paused)──▶ paused
--   paused ──resume (sql/operations.sql)──▶ pending;  paused ──expire_paused_jobs──▶ expired
--   pending | paused ──cancel_job──▶ cancelled;  failed ──retry_job | redrive──▶ pending
--   completed | failed | expired | superseded | cancelled ──prune_finished_jobs──▶ deleted
--
-- Ownership is the claim's token (locked_by), never a backend pid. Every statement that takes a
-- job from another state skips rows that someone else has locked, so no worker ever waits on
-- another's transaction. The delivery engine (engine/src/worker.rs) calls these functions, from
-- inside PostgreSQL or from mysmshook-worker; each is one statement over many jobs, planned once
-- per backend (PL/pgSQL keeps the plans). They run as the owner (SECURITY DEFINER): a worker
-- role is granted them (grant_worker_access(role, remote => true)), never the table.

-- Claims up to max_jobs due jobs for the claim `token`, leased until clock_timestamp() + lease,
-- returned in the order they are to be sent: priority, then due retries, then oldest.
-- `superseded`: a newer code for the same user, action and destination was queued since (a
-- resend); the worker records such a job as superseded instead of sending it.
create function mysmshook.claim_jobs(max_jobs int, lease interval, token uuid)
returns table (
    job_id uuid, channel text, action_type text, job_data text, priority int,
    retry_count int, max_retries int, rescues int, expires_at float8, superseded boolean
)
language plpgsql security definer
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

-- Extends the leases of the jobs the given claims still hold.
create function mysmshook.renew_leases(tokens uuid[], lease interval) returns int
language plpgsql security definer
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
create function mysmshook.release_jobs(job_ids uuid[], tokens uuid[]) returns int
language plpgsql security definer
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
create function mysmshook.rescue_expired_leases() returns int
language plpgsql security definer
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

-- Records what happened to a group of jobs, in one statement. `outcomes` is a JSON array of
-- objects with the columns below; status is the job's new status, retry_in (seconds) is set for
-- a retry. An outcome counts only for the claim that holds the job ('recorded'). One that comes
-- back after its lease passed ('late') is never dropped: its attempts are appended, and a
-- final outcome of a job that is waiting again (rescued, not yet re-claimed) ends that job, so
-- a message that was sent is not sent again. 'missing': the job no longer exists. 'busy':
-- another transaction holds the job (an operator's retry_job, cancel_job or redrive left
-- open): the worker keeps the outcome and records it later, rather than wait for an operator.
create function mysmshook.record_outcomes(outcomes jsonb)
returns table (job_id uuid, recorded text)
language plpgsql security definer
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

-- Attempts that came back after their lease passed, marked as such.
create function mysmshook.late_attempts(attempts jsonb) returns jsonb
language sql immutable
set search_path = pg_catalog, pg_temp
return (select coalesce(jsonb_agg(a || '{"late": true}'), '[]') from jsonb_array_elements(attempts) a);

-- Deletes finished jobs older than the retention period, oldest first, a bounded number per call.
create function mysmshook.prune_finished_jobs(retention interval, max_rows int default 10000)
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
        -- By an array of ids, never a join: on stale statistics a join may read a whole table.
        delete from mysmshook.job_queue j where j.job_id = any (array(select o.job_id from old o))
        returning j.job_id
    ), receipts_gone as (
        -- A job's delivery receipts (sql/receipts.sql) go with it.
        delete from mysmshook.receipts rc where rc.job_id = any (array(select g.job_id from gone g))
    )
    select count(*) into pruned from gone;
    return pruned;
end;
$$;

-- What a worker compares to know whether its cached configuration is current: the tables'
-- version, and the last change of any Vault secret the configuration refers to.
create function mysmshook.config_fingerprint(vault_names text[]) returns text
language plpgsql security definer
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

-- What a run does before it claims, in either host: finished jobs past the retention go, late
-- receipts are applied, limit counters no limit reads go, paused jobs whose code expired end.
-- The retention is mysmshook.retention (7 days unless set), never an argument. Where the library
-- is loaded the setting is superuser-only; a session without it (mysmshook-worker's) may have
-- set the placeholder itself, so there nothing younger than an hour goes.
create function mysmshook.worker_housekeeping() returns void
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    retention interval := coalesce(nullif(current_setting('mysmshook.retention', true), '')::interval,
                                   interval '7 days');
begin
    if not exists (select from pg_catalog.pg_settings s
                    where s.name = 'mysmshook.retention' and s.vartype <> 'string') then
        retention := greatest(retention, interval '1 hour');
    end if;
    perform mysmshook.prune_finished_jobs(retention);
    perform mysmshook.apply_receipts();
    perform mysmshook.prune_limit_counters();
    perform mysmshook.expire_paused_jobs();
end;
$$;
