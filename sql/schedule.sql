-- pg_cron helpers. pg_cron 1.5 and later run a job every N seconds: the command delivers for a
-- few seconds and ends before the next tick. pg_cron 1.4 fires at most once a minute, so there
-- the command polls for most of its minute (poll_for). pg_cron never runs two instances of the
-- same job at once, so runs chain back to back either way.
create function mysmshook.schedule(
    cron_schedule text default null,   -- '5 seconds' (pg_cron >= 1.5), else '* * * * *'
    poll_for interval default null,    -- '4 seconds' (pg_cron >= 1.5), else '58 seconds'
    job_name text default 'mysmshook-deliver'
) returns bigint
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    preload text := pg_catalog.current_setting('shared_preload_libraries', true);
    cron_version int[];
    job_id bigint;
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
    execute 'select cron.schedule($1, $2, $3)'
       into job_id
      using job_name, cron_schedule,
            pg_catalog.format('call mysmshook.run_worker(poll_for => %L)', poll_for);
    return job_id;
end;
$$;
comment on function mysmshook.schedule(text, interval, text) is
    'Register (or update) the pg_cron job that runs mysmshook.run_worker; returns the cron job id.';

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
    execute 'select cron.unschedule($1)' using job_name;
    return true;
end;
$$;
comment on function mysmshook.unschedule(text) is 'Remove the pg_cron job registered by mysmshook.schedule(); false if there was none.';
