-- Privileges, applied after every object exists. Functions are executable by PUBLIC by default
-- in PostgreSQL: take that away from everything in the schema, then grant the hooks only.
revoke all on schema mysmshook from public;
revoke all on all tables in schema mysmshook from public;
revoke all on all functions in schema mysmshook from public;
revoke all on all procedures in schema mysmshook from public;

-- Lets a role call the two hooks and nothing else (no table, no worker, no settings).
create function mysmshook.grant_hook_access(grantee regrole) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    execute pg_catalog.format('grant usage on schema mysmshook to %s', grantee);
    execute pg_catalog.format('grant execute on function mysmshook.send_sms(jsonb), mysmshook.send_email(jsonb) to %s', grantee);
end;
$$;
comment on function mysmshook.grant_hook_access(regrole) is
    'Allow a role (the auth server''s) to execute mysmshook.send_sms and mysmshook.send_email, and nothing else.';
revoke all on function mysmshook.grant_hook_access(regrole) from public;

-- Lets a role run the worker and nothing else: the worker's steps run as the extension's owner
-- (SECURITY DEFINER), so the role reads no table and no secret. Schedule it with
-- mysmshook.schedule(run_as => role). pg_cron starts jobs as a session of the role: it needs
-- LOGIN (and, with cron.use_background_workers off, a pg_hba entry for cron.host).
-- Not dequeue_and_run_jobs: it sends in the caller's transaction, and a caller that rolls it
-- back has every code sent again (run_worker's steps refuse to send what has not committed).
-- remote => true: the role is mysmshook-worker's, delivering from outside PostgreSQL. It also
-- gets the queue's functions and the configuration (with the providers' secrets): it sees the
-- jobs it claims, as any sender must, and still no table; and records the receipts its
-- endpoint verified (record_receipt), as receive_receipt does inside PostgreSQL.
create function mysmshook.grant_worker_access(grantee regrole, remote boolean default false) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    execute pg_catalog.format('grant usage on schema mysmshook to %s', grantee);
    -- The SQL-only install has no in-database worker: mysmshook-worker delivers there.
    if pg_catalog.to_regprocedure('mysmshook.worker_step()') is not null then
        execute pg_catalog.format('grant execute on procedure mysmshook.run_worker(interval) to %s', grantee);
        execute pg_catalog.format('grant execute on function mysmshook.worker_begin(float8), mysmshook.worker_step(), '
                                  'mysmshook.prune_cron_history(interval) to %s', grantee);
    elsif not remote then
        raise exception 'this install of mysmshook has no in-database worker'
            using hint = pg_catalog.format('mysmshook-worker delivers here: select mysmshook.grant_worker_access(%L, remote => true)',
                                           grantee);
    end if;
    if remote then
        execute pg_catalog.format(
            'grant execute on function mysmshook.claim_jobs(int, interval, uuid), '
            'mysmshook.renew_leases(uuid[], interval), mysmshook.release_jobs(uuid[], uuid[]), '
            'mysmshook.record_outcomes(jsonb), mysmshook.rescue_expired_leases(), '
            'mysmshook.config_fingerprint(text[]), mysmshook.worker_config(), '
            'mysmshook.worker_housekeeping(), mysmshook.metrics_prometheus(interval), '
            'mysmshook.worker_number_prefixes(), mysmshook.provider_settings(text), '
            'mysmshook.record_receipt(text, text, text, text, text, text) to %s', grantee);
    end if;
end;
$$;
comment on function mysmshook.grant_worker_access(regrole, boolean) is
    'Allow a role to run the delivery worker (CALL mysmshook.run_worker) and its housekeeping, and nothing else; remote => true: also mysmshook-worker''s calls (the queue''s functions, the configuration and its receipts endpoint).';
revoke all on function mysmshook.grant_worker_access(regrole, boolean) from public;

-- Lets a role (a metrics exporter's) read the queue's figures, not its jobs.
create function mysmshook.grant_monitor_access(grantee regrole) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    execute pg_catalog.format('grant usage on schema mysmshook to %s', grantee);
    execute pg_catalog.format('grant execute on function mysmshook.metrics(interval), '
                              'mysmshook.metrics_prometheus(interval) to %s', grantee);
end;
$$;
comment on function mysmshook.grant_monitor_access(regrole) is
    'Allow a role to call mysmshook.metrics() and mysmshook.metrics_prometheus(), and nothing else.';
revoke all on function mysmshook.grant_monitor_access(regrole) from public;

-- Nothing is granted to any other role either, whatever was granted as things were created:
-- default privileges
-- (ALTER DEFAULT PRIVILEGES, which managed platforms set up for their API roles, Supabase's
-- anon, authenticated and service_role among them) reach the schema's new tables, sequences
-- and functions, and the schema (this file's own functions included). Then the hooks only.
do $$
declare
    grantee_name text;
begin
    for grantee_name in
        select distinct case when acl.grantee = 0 then 'public' else pg_catalog.quote_ident(r.rolname) end
          from (select (pg_catalog.aclexplode(c.relacl)).grantee, c.relowner as owner from pg_catalog.pg_class c
                 where c.relnamespace = 'mysmshook'::regnamespace
                union select (pg_catalog.aclexplode(p.proacl)).grantee, p.proowner from pg_catalog.pg_proc p
                 where p.pronamespace = 'mysmshook'::regnamespace
                union select (pg_catalog.aclexplode(n.nspacl)).grantee, n.nspowner from pg_catalog.pg_namespace n
                 where n.nspname = 'mysmshook') acl
          left join pg_catalog.pg_roles r on r.oid = acl.grantee
         where acl.grantee <> acl.owner
    loop
        execute pg_catalog.format('revoke all on all tables in schema mysmshook from %s cascade', grantee_name);
        execute pg_catalog.format('revoke all on all sequences in schema mysmshook from %s cascade', grantee_name);
        execute pg_catalog.format('revoke all on all functions in schema mysmshook from %s cascade', grantee_name);
        execute pg_catalog.format('revoke all on all procedures in schema mysmshook from %s cascade', grantee_name);
        execute pg_catalog.format('revoke all on schema mysmshook from %s cascade', grantee_name);
    end loop;
end;
$$;
do $$
begin
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'supabase_auth_admin') then
        perform mysmshook.grant_hook_access('supabase_auth_admin');
    end if;
end;
$$;
