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

create function mysmshook.unschedule(job_name text default 'mysmshook-deliver') returns boolean
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
