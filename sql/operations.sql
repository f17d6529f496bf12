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
    select 1 from mysmshook.job_queue n
     where n.resend_key in (replaced.resend_key, mysmshook.hashed_resend_key(replaced.resend_key))
       and n.created_at > replaced.created_at);

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

-- retry_job and cancel_job lock a job only while no worker has it: a lock on a running job
-- would hold up the worker recording its outcome for as long as the operator's transaction
-- stays open, past its lease, and other workers would send it again. When their lock finds the
-- job running or locked, this says why, without waiting for it or locking it.
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

-- Sends one job again now: a pending job waiting for its retry is made due; a failed job is
-- queued again if its message can still be sent. Anything else is refused, saying why.
create function mysmshook.retry_job(job_id uuid) returns text
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
