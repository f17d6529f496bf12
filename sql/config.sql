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
    providers jsonb := '[]'::jsonb;
    vault_names text[] := '{}'::text[];
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

-- A provider's kind and settings, Vault references resolved, to verify its receipts (inside
-- PostgreSQL receive_receipt; mysmshook-worker's receipts endpoint as a role given remote
-- access); no row if no provider has that name. An unresolvable reference raises.
create function mysmshook.provider_settings(name text, out kind text, out settings jsonb)
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
    select p.kind, mysmshook.resolve_vault_references(p.settings) from mysmshook.providers p where p.name = $1
$$;

-- The accepted number prefixes, as the hooks read them (mysmshook.setting), for mysmshook-worker
-- where it is not told its own: the extension's GUC as the worker's session sees it, or the
-- SQL-only install's settings row, which the worker's role may not read itself.
create function mysmshook.worker_number_prefixes() returns text
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
    select mysmshook.setting('accepted_number_prefixes')
$$;
