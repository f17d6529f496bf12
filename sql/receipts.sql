-- Delivery receipts: what a provider reports after it accepted a message.
--
--   mysmshook.receive_receipt(provider, url, headers, body)   (Rust: verifies the signature the
--     provider's way and reads the callback) → record_receipt → apply_receipts
--
-- A receipt names the provider's message id; the job that recorded that id takes it:
--   completed ──(delivered)──▶ completed, delivered_at set
--   completed ──(not delivered; the code still valid; a provider after the sender)──▶ pending,
--       sent through the rest of its chain (the providers it already tried are skipped)
--   completed ──(not delivered otherwise)──▶ failed
-- and every receipt joins the job's attempts, its timeline. A receipt that arrives before the
-- job's outcome is recorded (fast providers call back within milliseconds) waits in
-- mysmshook.receipts; every worker run applies what has become applicable.

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
