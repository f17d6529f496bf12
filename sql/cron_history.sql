-- pg_cron's run history of mysmshook's jobs, in either install (the extension's schedule() and
-- the SQL-only install's schedule_housekeeping() register the job that calls it).

-- pg_cron records every run in cron.job_run_details and never deletes them: a worker every
-- 5 seconds adds 17,280 rows a day. The housekeeping job deletes the runs of mysmshook's jobs
-- (named mysmshook-*, in this database) older than `keep`, at least an hour, and nothing else;
-- as mysmshook's owner, so that the worker's role needs no rights on schema cron (pg_cron's row
-- security lets an owner that is neither superuser nor BYPASSRLS delete its own jobs' runs
-- only). Returns how many: none where the owner may not use pg_cron, so that the housekeeping
-- it runs beside is not rolled back with it.
create function mysmshook.prune_cron_history(keep interval default '1 day') returns bigint
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    pruned bigint;
begin
    -- to_regclass raises, not answers null, for a schema the caller may not use.
    if pg_catalog.to_regnamespace('cron') is null then
        return 0;
    end if;
    if not pg_catalog.has_schema_privilege('cron', 'usage') then
        return 0;
    end if;
    if to_regclass('cron.job_run_details') is null then
        return 0;
    end if;
    execute 'delete from cron.job_run_details d
              where d.end_time < now() - $1
                and d.jobid in (select j.jobid from cron.job j
                                 where j.jobname like ''mysmshook-%'' and j.database = $2)'
      using greatest(keep, interval '1 hour'), pg_catalog.current_database();
    get diagnostics pruned = row_count;
    return pruned;
end;
$$;
comment on function mysmshook.prune_cron_history(interval) is
    'Delete pg_cron''s run history of mysmshook''s jobs older than keep (the housekeeping job calls it).';
