-- The SQL-only install's pg_cron job, where the database has pg_cron (hosted Supabase:
-- Database, Extensions): housekeeping only, as delivery is mysmshook-worker's. The worker does
-- the same at every run; the job does it when no worker runs (stopped, misconfigured, gone), so
-- that finished jobs still go after the retention, expired codes' fallback copies are still
-- dropped, and pg_cron's own run history stays short. Through cron.schedule and
-- cron.unschedule only: hosted Supabase lets no one write cron.job. pg_cron runs the job as
-- the caller (the owner), in this database, which must be pg_cron's (cron.database_name).
-- pg_cron names a job by name and role across the cluster: a job of this name that the same
-- role has for another database is that database's, and left alone.
create function mysmshook.schedule_housekeeping(cron_schedule text default '*/5 * * * *') returns bigint
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    job_id bigint;
    job_database text;
    job_active boolean;
begin
    if not exists (select from pg_catalog.pg_extension e where e.extname = 'pg_cron') then
        raise exception 'pg_cron is not installed in database %', pg_catalog.current_database()
            using hint = 'Hosted Supabase: enable pg_cron under Database, Extensions. Elsewhere: CREATE EXTENSION pg_cron '
                         'in the database named by cron.database_name, which must be the one mysmshook is in.';
    end if;
    if not pg_catalog.has_schema_privilege('cron', 'usage') then
        raise exception 'role % may not use pg_cron', current_user
            using hint = pg_catalog.format('As a superuser: grant usage on schema cron to %I', current_user);
    end if;
    if not (select r.rolcanlogin from pg_catalog.pg_roles r where r.rolname = current_user) then
        raise exception 'role % cannot log in, and pg_cron starts its jobs as a session of it', current_user
            using hint = 'Schedule it as the role that owns mysmshook, logged in as that role (not through SET ROLE).';
    end if;
    execute 'select j.jobid, j.database, j.active from cron.job j where j.jobname = $1 and j.username = current_user'
      into job_id, job_database, job_active using 'mysmshook-housekeeping';
    if job_database <> pg_catalog.current_database() then
        raise exception 'role % has the pg_cron job mysmshook-housekeeping in database % already', current_user, job_database
            using hint = 'pg_cron names jobs by name and role across databases: schedule it as another role.';
    end if;
    -- cron.schedule updates a job of the same name and role, but never turns one on again that
    -- was turned off (Supabase's Cron screen does that): such a job is made anew.
    if not job_active then
        execute 'select cron.unschedule($1)' using job_id;
    end if;
    execute 'select cron.schedule($1, $2, $3)' into job_id
      using 'mysmshook-housekeeping', cron_schedule,
            'select mysmshook.worker_housekeeping(), mysmshook.prune_cron_history()';
    return job_id;
end;
$$;
comment on function mysmshook.schedule_housekeeping(text) is
    'Register (or reschedule) the pg_cron job mysmshook-housekeeping, run as the caller: worker_housekeeping() and prune_cron_history(); returns its job id.';

create function mysmshook.unschedule_housekeeping() returns boolean
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    job_id bigint;
begin
    if not exists (select from pg_catalog.pg_extension e where e.extname = 'pg_cron') then
        return false;
    end if;
    if not pg_catalog.has_schema_privilege('cron', 'usage') then
        return false;
    end if;
    execute 'select j.jobid from cron.job j where j.jobname = $1 and j.username = current_user and j.database = $2'
      into job_id using 'mysmshook-housekeeping', pg_catalog.current_database();
    if job_id is null then
        return false;
    end if;
    execute 'select cron.unschedule($1)' using job_id;
    return true;
end;
$$;
comment on function mysmshook.unschedule_housekeeping() is
    'Remove the caller''s pg_cron job mysmshook-housekeeping of this database; false if there was none.';
