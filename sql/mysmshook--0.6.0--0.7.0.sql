-- 0.6.0 -> 0.7.0: the delivery engine gets a second host, mysmshook-worker, outside PostgreSQL.
-- Both hosts read the configuration as one document (worker_config(), Vault references resolved
-- in SQL) and run a run's housekeeping with one call (worker_housekeeping()). The queue's
-- functions run as the owner, so that grant_worker_access(role, remote => true) can give them
-- to mysmshook-worker's role without any table. No table, column or job changes.

-- The delivery configuration as one document, for both hosts of the delivery engine: the
-- in-database worker (worker_begin, as the owner) and mysmshook-worker (over a connection, as a
-- role given grant_worker_access(role, remote => true)). A provider setting may name a Supabase
-- Vault secret ({"vault": "name"}) instead of holding it; it is resolved here, so that the
-- engine only ever sees plain values.

-- The secret a Vault reference names; an error (raise_exception) if it cannot be read.
create function mysmshook.vault_secret(name text) returns text
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
    secret text;
begin
    if to_regclass('vault.decrypted_secrets') is null then
        raise exception 'refers to Vault secret "%" but the Vault extension is not installed', name;
    end if;
    execute 'select decrypted_secret from vault.decrypted_secrets where name = $1 limit 1'
       into secret using name;
    if secret is null then
        raise exception 'Vault secret "%" does not exist', name;
    end if;
    return secret;
end;
$$;

-- Whether a JSON value is a Vault reference: an object with the one key "vault", a string.
create function mysmshook.is_vault_reference(value jsonb) returns boolean
language sql immutable
set search_path = pg_catalog, pg_temp
as $$
    select jsonb_typeof(value) = 'object' and jsonb_typeof(value -> 'vault') = 'string'
       and (select count(*) from jsonb_object_keys(value)) = 1
$$;

-- Settings with every Vault reference, at any depth of objects, replaced by its secret.
create function mysmshook.resolve_vault_references(settings jsonb) returns jsonb
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
begin
    if jsonb_typeof(settings) is distinct from 'object' then
        return settings;
    elsif mysmshook.is_vault_reference(settings) then
        return to_jsonb(mysmshook.vault_secret(settings ->> 'vault'));
    end if;
    return (select coalesce(jsonb_object_agg(e.key, mysmshook.resolve_vault_references(e.value)), '{}')
              from jsonb_each(settings) e);
end;
$$;

-- The names of the Vault secrets settings refer to, resolvable or not: creating a missing
-- secret must reload the configuration too (config_fingerprint watches them).
create function mysmshook.vault_references(settings jsonb) returns text[]
language sql immutable
set search_path = pg_catalog, pg_temp
as $$
    with recursive walk(value) as (
        select settings
        union all
        select e.value from walk, jsonb_each(walk.value) e
         where jsonb_typeof(walk.value) = 'object' and not mysmshook.is_vault_reference(walk.value)
    )
    select coalesce(array_agg(value ->> 'vault'), '{}') from walk where mysmshook.is_vault_reference(value)
$$;

-- Everything a worker needs to deliver: enabled providers (settings resolved, or the error that
-- kept them from resolving), enabled routes in order, templates, pauses, and the Vault secrets
-- referred to. The engine builds its configuration from this (engine/src/config.rs).
create function mysmshook.worker_config() returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    provider record;
    providers jsonb := '[]';
    vault_names text[] := '{}';
begin
    for provider in select p.name, p.kind, p.settings from mysmshook.providers p where p.enabled order by p.name loop
        vault_names := vault_names || mysmshook.vault_references(provider.settings);
        begin
            providers := providers || jsonb_build_array(jsonb_build_object(
                'name', provider.name, 'kind', provider.kind,
                'settings', mysmshook.resolve_vault_references(provider.settings)));
        exception when raise_exception then
            -- Kept as a provider that reports why: its jobs say what to fix.
            providers := providers || jsonb_build_array(jsonb_build_object(
                'name', provider.name, 'kind', provider.kind, 'error', sqlerrm));
        end;
    end loop;
    return jsonb_build_object(
        'providers', providers,
        'routes', (select coalesce(jsonb_agg(jsonb_build_object(
                              'name', r.name, 'channel', r.channel, 'calling_codes', r.calling_codes,
                              'regions', r.regions, 'providers', r.providers, 'app_hash', r.app_hash)
                          order by r.position, r.name), '[]')
                     from mysmshook.routes r where r.enabled),
        'templates', (select coalesce(jsonb_agg(jsonb_build_object(
                                 'channel', t.channel, 'action_type', t.action_type, 'language', t.language,
                                 'subject', t.subject, 'body', t.body, 'html', t.html)), '[]')
                        from mysmshook.templates t),
        'pauses', (select coalesce(jsonb_agg(jsonb_build_object('scope', p.scope, 'name', p.name)), '[]')
                     from mysmshook.pauses p),
        'vault_names', to_jsonb(vault_names));
end;
$$;
comment on function mysmshook.worker_config() is
    'The delivery configuration as one document, Vault references resolved (it holds secrets: the worker role only).';

-- A provider's kind and settings, Vault references resolved (receipt verification); no row if
-- no provider has that name. An unresolvable reference raises.
create function mysmshook.provider_settings(name text, out kind text, out settings jsonb)
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    select p.kind, mysmshook.resolve_vault_references(p.settings) from mysmshook.providers p where p.name = $1
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

-- The queue's functions run as the owner (a remote worker's role is granted them, not the table).
alter function mysmshook.claim_jobs(int, interval, uuid) security definer;
alter function mysmshook.renew_leases(uuid[], interval) security definer;
alter function mysmshook.release_jobs(uuid[], uuid[]) security definer;
alter function mysmshook.rescue_expired_leases() security definer;
alter function mysmshook.record_outcomes(jsonb) security definer;
alter function mysmshook.config_fingerprint(text[]) security definer;

-- grant_worker_access gains remote => false: the same grants as before unless asked.
drop function mysmshook.grant_worker_access(regrole);
-- Lets a role run the worker and nothing else: the worker's steps run as the extension's owner
-- (SECURITY DEFINER), so the role reads no table and no secret. Schedule it with
-- mysmshook.schedule(run_as => role). pg_cron starts jobs as a session of the role: it needs
-- LOGIN (and, with cron.use_background_workers off, a pg_hba entry for cron.host).
-- Not dequeue_and_run_jobs: it sends in the caller's transaction, and a caller that rolls it
-- back has every code sent again (run_worker's steps refuse to send what has not committed).
-- remote => true: the role is mysmshook-worker's, delivering from outside PostgreSQL. It also
-- gets the queue's functions and the configuration (with the providers' secrets): it sees the
-- jobs it claims, as any sender must, and still no table.
create function mysmshook.grant_worker_access(grantee regrole, remote boolean default false) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    execute pg_catalog.format('grant usage on schema mysmshook to %s', grantee);
    execute pg_catalog.format('grant execute on procedure mysmshook.run_worker(interval) to %s', grantee);
    execute pg_catalog.format('grant execute on function mysmshook.worker_begin(float8), mysmshook.worker_step(), '
                              'mysmshook.prune_cron_history(interval) to %s', grantee);
    if remote then
        execute pg_catalog.format(
            'grant execute on function mysmshook.claim_jobs(int, interval, uuid), '
            'mysmshook.renew_leases(uuid[], interval), mysmshook.release_jobs(uuid[], uuid[]), '
            'mysmshook.record_outcomes(jsonb), mysmshook.rescue_expired_leases(), '
            'mysmshook.config_fingerprint(text[]), mysmshook.worker_config(), '
            'mysmshook.worker_housekeeping(), mysmshook.metrics_prometheus(interval) to %s', grantee);
    end if;
end;
$$;
comment on function mysmshook.grant_worker_access(regrole, boolean) is
    'Allow a role to run the delivery worker (CALL mysmshook.run_worker) and its housekeeping, and nothing else; remote => true: also mysmshook-worker''s calls (the queue''s functions and the configuration).';
revoke all on function mysmshook.grant_worker_access(regrole, boolean) from public;

-- Functions of the library ----------------------------------------------------------------

-- Every one is bound to this version's library again (CREATE OR REPLACE keeps its grants).
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
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'send_email_wrapper';
CREATE OR REPLACE FUNCTION "send_sms"(
	"event" jsonb /* Option < hook_arg :: JsonbText > */
) RETURNS jsonb /* JsonB */
VOLATILE SECURITY DEFINER PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
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

-- What this update adds is the owner's alone, as in a fresh install (privileges.sql).
revoke all on function mysmshook.vault_secret(text), mysmshook.is_vault_reference(jsonb),
    mysmshook.resolve_vault_references(jsonb), mysmshook.vault_references(jsonb),
    mysmshook.worker_config(), mysmshook.provider_settings(text), mysmshook.worker_housekeeping()
    from public;
-- ...and from Supabase's API roles, as a fresh install revokes everything from them. By name:
-- a schema-wide REVOKE here would record operators' grants as initial privileges.
do $$
declare
    api_role text;
begin
    foreach api_role in array array['anon', 'authenticated'] loop
        if exists (select 1 from pg_catalog.pg_roles where rolname = api_role) then
            execute pg_catalog.format(
                'revoke all on function mysmshook.vault_secret(text), mysmshook.is_vault_reference(jsonb), '
                'mysmshook.resolve_vault_references(jsonb), mysmshook.vault_references(jsonb), '
                'mysmshook.worker_config(), mysmshook.provider_settings(text), '
                'mysmshook.worker_housekeeping(), mysmshook.grant_worker_access(regrole, boolean) from %I',
                api_role);
        end if;
    end loop;
end;
$$;
