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
--
-- Webhooks and status callbacks are often account-wide: most receipts may be for messages that
-- are not ours, and they must cost next to nothing. Everything is looked up by message id:
--   - the callback applies its own receipt through its job (job_queue_message_idx), if the job
--     has recorded the id;
--   - a job that records a message id marks the receipts already waiting for it `ready`
--     (trigger job_queue_receipts_ready), and the next run applies them;
--   - each run probes, once, the receipts that arrived since the last probe, a bounded number
--     (receipt_probe, below); one that no job has is set aside by moving past it, without a
--     write, and no run reads it again. It goes after a day.

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
    -- The transaction that recorded it: the runs' probe goes in this order (receipt_probe).
    recorded_by xid8        not null default pg_current_xact_id(),
    -- Its job is known (it recorded the message id after the receipt came, or another
    -- transaction held it when the receipt came): the next run applies it.
    ready       boolean     not null default false,
    constraint receipts_outcome_check check (outcome in ('progress', 'delivered', 'failed')),
    constraint receipts_event_key unique (provider, event_id)
);
-- Receipts older than a day that no job took are deleted (apply_receipts).
create index receipts_waiting_idx on mysmshook.receipts (received_at) where applied_at is null;
-- A job finds the receipts that wait for its message id, oldest first.
create index receipts_message_idx on mysmshook.receipts (provider, message_id, receipt_id) where applied_at is null;
-- The runs' probe walks this from where it stands: the receipts set aside behind it cost nothing.
create index receipts_probe_idx on mysmshook.receipts (recorded_by, receipt_id) where applied_at is null;
-- The receipts whose job is known: only these are read by every run.
create index receipts_ready_idx on mysmshook.receipts (receipt_id) where applied_at is null and ready;
-- Receipts go with their job when retention prunes it (sql/queue.sql, prune_finished_jobs).
create index receipts_job_idx on mysmshook.receipts (job_id) where job_id is not null;
comment on table mysmshook.receipts is
    'Verified delivery receipts (provider callbacks). applied_at is null while no job has recorded the message id yet.';

-- Where the runs' probe of new receipts stands. Receipts are probed in (recorded_by, receipt_id)
-- order; those up to (probed_by, probed_id) have been probed, and the ones no job had then are set
-- aside: no run reads them again. The probe passes a receipt only once it is settled (recorded_by
-- below settled_below): every transaction that could have recorded its message id on a job
-- without seeing it (the two in flight at once) has ended, so the probe sees that job.
-- settled_below takes a probe's xmin (seen_xmin) once every transaction running at that probe
-- (below its xmax, seen_xmax) has ended: a receipt is settled from the second run after it came,
-- unless a transaction runs across both. Receipts not settled yet are probed too (and applied if
-- their job is there), not passed. Not dumped: transaction ids belong to the cluster.
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

-- Applies waiting receipts (those whose job is known and those not probed yet, or those of the
-- given jobs) to their jobs, each job's oldest first; returns how many were applied. Each job is
-- read again, locked, for each receipt (two receipts of one job in one call see each other's
-- effect); rows another transaction holds are skipped, never waited for, and their receipts
-- wait for the next call. Without job_ids (a worker run) it reads at most `batch` ready and
-- `batch` new receipts; one worker probes at a time (the others skip it). Also drops the fallback
-- copies of codes that have expired, and waiting receipts older than a day (their message is not
-- one of ours, or its job was pruned), `batch` at a time.
-- Every query here reads an index in the order it wants, and stops at its LIMIT: no sort, no
-- bitmap. A burst of receipts that ANALYZE has not seen yet looks like a few rows to the planner,
-- and a plan that sorts them would read every one of them. The rows a statement changes are
-- named by an array of ids (= any (array(…)), computed once), never by a join or IN (…) with the
-- table itself, which such a planner may run as a loop over the whole table.
create function mysmshook.apply_receipts(job_ids uuid[] default null) returns int
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
             where rc.receipt_id = any (array(select d.receipt_id from due d where d.job_id is null))
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
         where rc.receipt_id = any (array(select h.receipt_id from mysmshook.receipts h
                                           where h.receipt_id = any (passed_with_job) and h.applied_at is null
                                             and not h.ready
                                             for update skip locked));
    end if;

    if job_ids is null then
        -- Rows someone holds (an operator's redrive) are left for the next run.
        with dead as (
            select q.job_id from mysmshook.job_queue q
             where q.fallback_data is not null and q.expires_at <= now()
             limit batch
               for update skip locked
        )
        update mysmshook.job_queue jq set fallback_data = null
         where jq.job_id = any (array(select d.job_id from dead d));
        -- A failed message without a code (sql/operations.sql, redrive) is kept for a day.
        with old as (
            select q.job_id from mysmshook.job_queue q
             where q.fallback_data is not null and q.expires_at is null
               and q.finished_at < now() - interval '1 day'
             limit batch
               for update skip locked
        )
        update mysmshook.job_queue jq set fallback_data = null
         where jq.job_id = any (array(select o.job_id from old o));
    end if;
    if probing then
        delete from mysmshook.receipts rc
         where rc.receipt_id = any (array(select o.receipt_id from mysmshook.receipts o
                                           where o.applied_at is null and o.received_at < now() - interval '1 day'
                                           order by o.received_at
                                           limit batch
                                             for update skip locked));
    end if;
    return applied;
end;
$$;

-- Records one verified receipt and applies it if its job is known. Returns what happened:
-- {"receipt_id", "job_id" (null while the job has not recorded the message id), "duplicate"}.
-- Called by receive_receipt inside PostgreSQL, and by mysmshook-worker's receipts endpoint (as a
-- role given remote access) once it has verified the callback.
create function mysmshook.record_receipt(
    provider text, message_id text, event_id text, status text, outcome text, error text)
returns jsonb
language plpgsql security definer
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

-- A job that records a message id marks the receipts already waiting for it: the next run
-- applies them. One index probe per message id recorded; rows someone holds are skipped (the
-- holder applies them or marks them). As in apply_receipts: by an array of ids, and in the
-- message index's order, which no other index gives without a sort (a sort would let a planner
-- that thinks the waiting receipts few read all of them through receipts_waiting_idx).
create function mysmshook.receipts_job_recorded() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
set enable_sort = off
set enable_bitmapscan = off
as $$
begin
    update mysmshook.receipts rc set ready = true
     where rc.receipt_id = any (array(select w.receipt_id from mysmshook.receipts w
                                       where w.provider = new.provider and w.message_id = new.provider_message_id
                                         and w.applied_at is null and not w.ready
                                       order by w.receipt_id
                                         for update skip locked));
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

-- Keeps the receipts with the configuration and the queue in pg_dump.
select pg_catalog.pg_extension_config_dump('mysmshook.receipts', '');
select pg_catalog.pg_extension_config_dump('mysmshook.receipts_receipt_id_seq', '');
