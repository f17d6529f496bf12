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
-- mysmshook-worker's receipts endpoint records what it verified.
alter function mysmshook.record_receipt(text, text, text, text, text, text) security definer;

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

-- What this update adds is the owner's alone, as in a fresh install (privileges.sql); so is
-- record_receipt, which runs as the owner now (an older update left it to service_role).
revoke all on function mysmshook.vault_secret(text), mysmshook.is_vault_reference(jsonb),
    mysmshook.resolve_vault_references(jsonb), mysmshook.vault_references(jsonb),
    mysmshook.worker_config(), mysmshook.provider_settings(text), mysmshook.worker_housekeeping(),
    mysmshook.record_receipt(text, text, text, text, text, text)
    from public;
-- ...and from Supabase's API roles, as a fresh install revokes everything from them. By name:
-- a schema-wide REVOKE here would record operators' grants as initial privileges.
do $$
declare
    api_role text;
begin
    foreach api_role in array array['anon', 'authenticated', 'service_role'] loop
        if exists (select 1 from pg_catalog.pg_roles where rolname = api_role) then
            execute pg_catalog.format(
                'revoke all on function mysmshook.vault_secret(text), mysmshook.is_vault_reference(jsonb), '
                'mysmshook.resolve_vault_references(jsonb), mysmshook.vault_references(jsonb), '
                'mysmshook.worker_config(), mysmshook.provider_settings(text), '
                'mysmshook.worker_housekeeping(), mysmshook.grant_worker_access(regrole, boolean), '
                'mysmshook.record_receipt(text, text, text, text, text, text) from %I',
                api_role);
        end if;
    end loop;
end;
$$;


-- The hooks and the pumping defence become SQL (sql/hooks.sql, sql/defence.sql), one core for
-- both editions: only phone_info, setting and record_refusal stay in this library. The hook's
-- cached policy goes, and with it the invalidation the configuration tables sent for it.
-- Any change to the configuration tables bumps mysmshook.config_version in the same
-- transaction: workers reload their cached configuration when they see the new number.
-- Jobs waiting for a template fix (a template that fails for their data) are due again: they
-- wait for a change, not a timer (src/delivery.rs). Due two seconds on, so that running workers
-- have read the new configuration (they look every second) before they claim them. Rows a
-- worker holds are skipped.
create or replace function mysmshook.config_changed() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    update mysmshook.config_version set version = version + 1;
    update mysmshook.job_queue j set scheduled_at = now() + interval '2 seconds'
      from (select q.job_id from mysmshook.job_queue q
             where q.status = 'pending' and q.scheduled_at > now()
               and q.last_error like 'waiting for a template fix%'
               for update skip locked) w
     where j.job_id = w.job_id;
    return null;
end;
$$;


drop function mysmshook.invalidate_config_caches();

-- What mysmshook.phone_info says of a number (sql/hooks.sql).
create type mysmshook.phone_number as (
    e164         text,    -- the number in E.164 form, when it parses
    calling_code int,
    region       text,    -- CLDR region, e.g. MX; null for non-geographic numbers
    valid        boolean,
    reason       text     -- why it is not valid, worded to follow "phone number +52****5678 "
);

CREATE  FUNCTION "phone_info"(
	"number" TEXT /* & str */
) RETURNS phone_number /* :: pgrx :: heap_tuple :: PgHeapTuple < '_, :: pgrx :: pgbox :: AllocatedByRust
> */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'phone_info_wrapper';

CREATE  FUNCTION "setting"(
	"name" TEXT /* & str */
) RETURNS TEXT /* String */
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'setting_wrapper';

CREATE  FUNCTION "record_refusal"(
	"rule" TEXT, /* & str */
	"destination" TEXT, /* & str */
	"ip" TEXT, /* Option < & str > */
	"region" TEXT /* Option < & str > */
) RETURNS void
VOLATILE PARALLEL UNSAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'record_refusal_wrapper';

-- Checks a request for a code against the geo rules and counts it against every limit that
-- applies; returns the rule that refuses it ('geo' or a limit's name, the first by name when
-- several do), or null. Each limit counts in its counter row for this key, rolled over when
-- its window has passed; shared limits (country, global, spend) also read the other shards'
-- rows. Sliding window: this window's amount plus the previous window's, weighted by how much
-- of it still falls within `per` of now.
create function mysmshook.refusing_rule(to_number text, to_region text, to_calling_code int, from_ip text)
returns text
language plpgsql volatile
as $$
declare
    now_s float8 := extract(epoch from clock_timestamp());
    -- Shared counters are spread over 8 rows per key, by backend, so that concurrent sign-ins
    -- do not queue behind one row lock held until each auth transaction commits.
    my_shard smallint := pg_backend_pid() % 8;
    geo_refused boolean;
    -- The limit being counted (scalars, not a record: a record's fields would make PL/pgSQL
    -- plan the expressions that read them again in every transaction).
    this_limit text;
    limit_scope text;
    limit_digits int;
    limit_per float8;
    limit_maximum float8;
    counter_key text;
    shared boolean;
    this_window float8;
    added float8;
    counted float8;
    counted_before float8;
    others float8;
    others_before float8;
    rule text;
begin
    -- The geo rules' verdict and the limits, in one statement (one row even without limits).
    -- Regions match as CLDR codes (MX) or calling codes (+52).
    -- Every row carries the same verdict (computed once), so the first row decides it before
    -- anything is counted. No join or grouping: starting their executor nodes cost more than
    -- the rest. In name order: each counter row stays locked until the auth transaction ends,
    -- and two sign-ins that locked the same rows in different orders would deadlock.
    for geo_refused, this_limit, limit_scope, limit_digits, limit_per, limit_maximum in
        select (select coalesce(bool_or(not g.allow and g.region in (to_region, '+' || to_calling_code)), false)
                       or (coalesce(bool_or(g.allow), false)
                           and not coalesce(bool_or(g.allow and g.region in (to_region, '+' || to_calling_code)),
                                            false))
                  from mysmshook.geo_rules g),
               l.name, l.scope, l.prefix_digits, l.per, l.maximum
          from (select l.name, l.scope, l.prefix_digits, extract(epoch from l.per)::float8, l.maximum
                  from mysmshook.limits l
                 where l.enabled
                union all
                select 'codes_per_number', 'destination', null, 600, 5
                 where not exists (select from mysmshook.limits l where l.name = 'codes_per_number')
                union all
                select null, null, null, null, null) l(name, scope, prefix_digits, per, maximum)
         order by l.name
    loop
        if geo_refused then
            return 'geo';
        end if;
        continue when this_limit is null;
        counter_key := case limit_scope when 'destination' then to_number
                                        when 'prefix' then left(to_number, limit_digits + 1)
                                        when 'ip' then from_ip
                                        when 'country' then to_region
                                        when 'country_spend' then to_region
                                        else '' end;
        continue when counter_key is null;  -- no IP, or no region: the limit does not apply
        shared := limit_scope not in ('destination', 'prefix', 'ip');
        this_window := floor(now_s / limit_per) * limit_per;
        added := 1;
        if limit_scope like '%spend' then
            select coalesce(max(s.per_segment) filter (where s.region = to_region),
                            max(s.per_segment) filter (where s.region = '*'), 0)
              into added
              from mysmshook.sms_prices s
             where s.region in (to_region, '*');
        end if;
        insert into mysmshook.limit_counters as c (limit_name, key, shard, window_start, amount, previous)
        values (this_limit, counter_key, case when shared then my_shard else 0 end, to_timestamp(this_window),
                added, 0)
        on conflict (limit_name, key, shard) do update set
            previous = case when c.window_start = excluded.window_start then c.previous
                            when c.window_start = to_timestamp(this_window - limit_per) then c.amount
                            else 0 end,
            amount = case when c.window_start = excluded.window_start then c.amount + excluded.amount
                          else excluded.amount end,
            window_start = excluded.window_start
        returning c.amount, c.previous into counted, counted_before;
        others := 0;
        others_before := 0;
        if shared then
            select coalesce(sum(o.amount) filter (where o.window_start = to_timestamp(this_window)), 0),
                   coalesce(sum(case when o.window_start = to_timestamp(this_window) then o.previous
                                     when o.window_start = to_timestamp(this_window - limit_per) then o.amount
                                     else 0 end), 0)
              into others, others_before
              from mysmshook.limit_counters o
             where o.limit_name = this_limit and o.key = counter_key and o.shard <> my_shard;
        end if;
        if counted + others
           + (counted_before + others_before) * (1 - least(greatest((now_s - this_window) / limit_per, 0), 1))
           > limit_maximum + 1e-9
           and (rule is null or this_limit collate "C" < rule collate "C") then
            rule := this_limit;
        end if;
    end loop;
    return rule;
end;
$$;

-- Deletes counters no limit reads any more (last counted two windows ago, or of a limit gone).
-- Never waits for a counter a sign-in holds (it is counting again, so not stale): the hook locks
-- its counters in name order and the delete would take them in the table's, so waiting could
-- deadlock with the sign-in and fail it.
create or replace function mysmshook.prune_limit_counters() returns int
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    pruned int;
begin
    delete from mysmshook.limit_counters c
     where c.ctid = any (array(
        select o.ctid
          from mysmshook.limit_counters o
         where not exists (
            select 1
              from (select l.name, l.per from mysmshook.limits l
                    union all
                    select 'codes_per_number', interval '10 minutes'
                     where not exists (select 1 from mysmshook.limits l where l.name = 'codes_per_number')) r
             where r.name = o.limit_name and o.window_start >= now() - 2 * r.per)
           for update skip locked));
    get diagnostics pruned = row_count;
    return pruned;
end;
$$;


-- The Send SMS and Send Email hooks Supabase Auth calls, in its transaction, as
-- supabase_auth_admin (or any role given mysmshook.grant_hook_access). Both editions install
-- these same functions; only mysmshook.phone_info and mysmshook.record_refusal differ between
-- them, each with one contract.
--
-- An event that cannot be used is answered with the 400 error object Auth shows to the user,
-- never an exception: the hooks read only the fields they need, by path, so a document
-- PostgreSQL accepts (a user's metadata nested 5,000 levels deep, a number such as 1e309) is
-- never refused for parts they do not look at. Database errors stay exceptions (a 500).
--
-- They run as the schema's owner: SET search_path takes the caller's search_path (and whatever
-- a caller planted on it or in pg_temp) out of every statement they and their helpers run. The
-- helpers they call on every sign-in (about_user, enqueue, refusing_rule, phone_info, setting)
-- carry no SET clause of their own: each costs about 10 µs a call, and they run under the
-- hooks' pinned path (no other role may execute them). plan_cache_mode: every statement they
-- run is planned once per session; a custom plan per call (PostgreSQL's choice for the first
-- calls, and for good when a generic plan does not look cheaper) costs a fifth of a call.
-- Helpers are called by assignment, in expressions without a subquery: PL/pgSQL evaluates
-- those without starting an executor, which PERFORM or a subquery costs on every call.

-- A recipient as errors and logs show it: the country code and last digits of a number, the
-- first letter and the domain of an address. At least three characters are always hidden.
create function mysmshook.mask_recipient(recipient text) returns text
language sql immutable strict parallel safe
set search_path = pg_catalog, pg_temp
as $$
    select case
        when strpos(recipient, '@') > 0 then
            left(left(recipient, length(recipient) - strpos(reverse(recipient), '@')), 1)
            || '***@' || right(recipient, strpos(reverse(recipient), '@') - 1)
        when length(recipient) <= 6 then repeat('*', length(recipient))
        when length(recipient) >= 10 then
            left(recipient, 3) || repeat('*', length(recipient) - 7) || right(recipient, 4)
        else left(recipient, 1) || repeat('*', length(recipient) - 3) || right(recipient, 2)
    end;
$$;

-- A line for the server log only. WARNING, not LOG: PostgreSQL writes the statement after a LOG
-- line (LOG ranks above log_min_error_statement's default, ERROR), and the caller's statement
-- may hold the event with its code. client_min_messages keeps it from the caller.
create function mysmshook.server_log(message text) returns void
language plpgsql volatile
set search_path = pg_catalog, pg_temp
set client_min_messages = error
as $$
begin
    raise warning '%', message;
end;
$$;

-- The answer Auth turns into an HTTP error for the client.
create function mysmshook.hook_error(http_code int, message text) returns jsonb
language sql immutable parallel safe
set search_path = pg_catalog, pg_temp
as $$
    select jsonb_build_object('error', jsonb_build_object('http_code', http_code, 'message', message));
$$;

-- Why an event is not what a hook reads, or null: the first of its fields, given as paths,
-- that is not an object (`objects`) or a string (`strings`). Required fields end in '!'; an
-- optional one may be absent or JSON null. Parents come before their fields. Worded like the
-- JSON path errors Auth's operators know: "invalid event at sms.otp: invalid type: number,
-- expected a string". (Only for an event that failed the hook's quick check.)
create function mysmshook.event_error(event jsonb, objects text[], strings text[]) returns text
language plpgsql immutable parallel safe
set search_path = pg_catalog, pg_temp
as $$
declare
    path text;
    parent text;
    required boolean;
    expected text;
    found_type text;
begin
    if event is null then
        return 'event is null';
    elsif jsonb_typeof(event) <> 'object' then
        return 'event must be a JSON object';
    end if;
    for i in 1 .. cardinality(objects) + cardinality(strings) loop
        expected := case when i <= cardinality(objects) then 'object' else 'string' end;
        path := coalesce(objects[i], strings[i - cardinality(objects)]);
        required := path like '%!';
        path := rtrim(path, '!');
        found_type := jsonb_typeof(event #> string_to_array(path, '.'));
        parent := nullif(regexp_replace(path, '[.]?[^.]*$', ''), '');
        if found_type is null and required then
            return case when parent is null then format('invalid event: missing field `%s`', path)
                        else format('invalid event at %s: missing field `%s`', parent,
                                    regexp_replace(path, '^.*[.]', '')) end;
        elsif found_type is distinct from expected and (required or found_type <> 'null') then
            return format('invalid event at %s: invalid type: %s, expected %s', path, found_type,
                          case expected when 'string' then 'a string' else 'an object' end);
        end if;
    end loop;
    return null;
end;
$$;

-- mysmshook.accepted_number_prefixes as E.164 prefixes ('521' is read as '+521'): real numbers
-- libphonenumber's metadata refuses, such as Mexico's old mobile prefix +52 1.
create function mysmshook.accepted_number_prefixes() returns text[]
language sql stable parallel safe
set search_path = pg_catalog, pg_temp
as $$
    select coalesce(array_agg('+' || x.prefix), '{}')
      from regexp_split_to_table(mysmshook.setting('accepted_number_prefixes'), '[, ]') t(item)
      cross join lateral (select ltrim(btrim(t.item, E' \t\n\r\f'), '+')) x(prefix)
     where x.prefix ~ '^[0-9]+$';
$$;

-- What a job keeps of the user and the event, for templates, logs and correlation. The
-- application's user_metadata goes in as it came; the user's preferred language is the first
-- of its locale, language, lang and i18n that holds a short string.
create function mysmshook.about_user(event jsonb) returns jsonb
language plpgsql immutable parallel safe
as $$
declare
    metadata jsonb := event -> 'user' -> 'user_metadata';
begin
    return jsonb_strip_nulls(jsonb_build_object(
               'locale', case
                   when jsonb_typeof(metadata -> 'locale') = 'string' and metadata ->> 'locale' <> ''
                        and octet_length(metadata ->> 'locale') <= 35 then metadata ->> 'locale'
                   when jsonb_typeof(metadata -> 'language') = 'string' and metadata ->> 'language' <> ''
                        and octet_length(metadata ->> 'language') <= 35 then metadata ->> 'language'
                   when jsonb_typeof(metadata -> 'lang') = 'string' and metadata ->> 'lang' <> ''
                        and octet_length(metadata ->> 'lang') <= 35 then metadata ->> 'lang'
                   when jsonb_typeof(metadata -> 'i18n') = 'string' and metadata ->> 'i18n' <> ''
                        and octet_length(metadata ->> 'i18n') <= 35 then metadata ->> 'i18n' end,
               'user_id', nullif(event -> 'user' ->> 'id', ''),
               'event_id', nullif(event -> 'metadata' ->> 'uuid', ''),
               'email', nullif(event -> 'user' ->> 'email', ''),
               'phone', nullif(event -> 'user' ->> 'phone', '')))
           || case when coalesce(jsonb_typeof(metadata), 'null') <> 'null'
                   then jsonb_build_object('user_metadata', metadata) else '{}' end;
end;
$$;
-- Queues one message and returns its job_id. Codes first so that bulk notifications never
-- delay a sign-in; MFA and reauthentication (a user blocked mid-session) before everything.
-- Due at the start of the current scheduling window (at once). Codes for the same user, action
-- and destination share a resend_key: the auth server accepts only the newest, so a worker
-- that claims a job with a newer one of the same key does not send it (sql/queue.sql,
-- claim_jobs).
--
-- created_at is the time of the hook call, not of the auth server's transaction: the auth
-- server serialises the requests of one user, not the start of their transactions; a request
-- whose transaction began first but asked later holds the code the auth server kept.
create function mysmshook.enqueue(channel mysmshook.job_channel, action_type text, job_data jsonb)
returns uuid
language plpgsql volatile
as $$
declare
    carries_code boolean := job_data ? 'code' or job_data ? 'token_hash';
    queued uuid;
begin
    insert into mysmshook.job_queue
        (job_data, channel, action_type, priority, max_retries, scheduled_at, expires_at, resend_key,
         created_at)
    values (job_data, channel, action_type,
            case when action_type in ('mfa', 'reauthentication') then 30
                 when action_type = 'invite' then 10
                 when not carries_code then 0
                 else 20 end,
            mysmshook.setting('max_retries')::int,
            date_bin(mysmshook.setting('schedule_window')::interval, now(), '1970-01-01 00:00:00+00'),
            -- As seconds: '1d' read as a calendar day would be 23 or 25 hours across a
            -- daylight-saving change in the caller's time zone.
            now() + make_interval(secs => extract(epoch from
                case when not carries_code then mysmshook.setting('notification_lifetime')
                     when channel = 'email' then mysmshook.setting('email_code_lifetime')
                     else mysmshook.setting('sms_code_lifetime') end::interval)),
            case when carries_code then
                concat_ws('/', channel, action_type, coalesce(job_data ->> 'sms_type', ''),
                          coalesce(job_data ->> 'user_id', ''), job_data ->> 'to') end,
            clock_timestamp())
    returning job_id into queued;
    return queued;
end;
$$;

-- Supabase Auth "Send SMS" hook: queues the one-time code for delivery, unless the pumping
-- defence refuses it (sql/defence.sql): 429, or 400 for a region codes may not go to.
create or replace function mysmshook.send_sms(event jsonb) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
    otp text := event -> 'sms' ->> 'otp';
    raw_phone text;
    digits text;
    to_number text;
    number mysmshook.phone_number;
    rule text;
    ip text := nullif(event -> 'metadata' ->> 'ip_address', '');
    sms_type text;
    job_id uuid;
begin
    -- Every field read below, checked in one expression; the wording only when it fails. (An
    -- absent field makes the expression null, hence the coalesce.)
    if not coalesce(jsonb_typeof(event) = 'object'
            and jsonb_typeof(event -> 'user') = 'object' and jsonb_typeof(event -> 'sms') = 'object'
            and jsonb_typeof(event -> 'sms' -> 'otp') = 'string'
            and coalesce(jsonb_typeof(event -> 'metadata'), 'null') in ('object', 'null')
            and coalesce(jsonb_typeof(event -> 'metadata' -> 'uuid'), 'null') in ('string', 'null')
            and coalesce(jsonb_typeof(event -> 'metadata' -> 'ip_address'), 'null') in ('string', 'null')
            and coalesce(jsonb_typeof(event -> 'user' -> 'id'), 'null') in ('string', 'null')
            and coalesce(jsonb_typeof(event -> 'user' -> 'email'), 'null') in ('string', 'null')
            and coalesce(jsonb_typeof(event -> 'user' -> 'new_email'), 'null') in ('string', 'null')
            and coalesce(jsonb_typeof(event -> 'user' -> 'phone'), 'null') in ('string', 'null')
            and coalesce(jsonb_typeof(event -> 'sms' -> 'phone'), 'null') in ('string', 'null')
            and coalesce(jsonb_typeof(event -> 'sms' -> 'sms_type'), 'null') in ('string', 'null'), false)
    then
        return mysmshook.hook_error(400, coalesce(mysmshook.event_error(event,
            array['user!', 'sms!', 'metadata'],
            array['sms.otp!', 'sms.phone', 'sms.sms_type', 'user.id', 'user.email', 'user.new_email', 'user.phone',
                  'metadata.uuid', 'metadata.ip_address']), 'invalid event'));
    end if;
    if otp !~ '^[A-Za-z0-9]{1,64}$' then
        return mysmshook.hook_error(400, 'sms.otp must be 1 to 64 letters or digits');
    end if;
    -- sms.phone is where Auth wants the code to go (it differs from user.phone on a change).
    raw_phone := coalesce(nullif(event -> 'sms' ->> 'phone', ''), nullif(event -> 'user' ->> 'phone', ''));
    if raw_phone is null then
        return mysmshook.hook_error(400, 'no destination: sms.phone and user.phone are both empty');
    end if;
    digits := case when left(raw_phone, 1) = '+' then substr(raw_phone, 2) else raw_phone end;
    if digits !~ '^[1-9][0-9]{6,14}$' then
        return mysmshook.hook_error(400, format(
            'phone number %s is not an international number (E.164: country code and 7 to 15 digits)',
            to_json(left(raw_phone, 40))));
    end if;
    to_number := '+' || digits;
    -- Refused here, Auth shows the message and the person can correct the number; queued, the
    -- job would fail later while they wait for a code that never comes. Real numbers the
    -- metadata refuses pass when mysmshook.accepted_number_prefixes lists their prefix.
    number := mysmshook.phone_info(to_number);
    if number.e164 is null or not number.valid and not to_number ^@ any (mysmshook.accepted_number_prefixes())
    then
        return mysmshook.hook_error(400, format('phone number %s %s',
            mysmshook.mask_recipient(to_number), number.reason));
    end if;

    rule := mysmshook.refusing_rule(to_number, number.region, number.calling_code, ip);
    if rule is not null then
        -- The answer does not say which rule fired: that would tell an attacker what to vary.
        perform mysmshook.record_refusal(rule, mysmshook.mask_recipient(to_number), ip, number.region);
        return case rule
            when 'geo' then mysmshook.hook_error(400, 'Codes cannot be sent to this phone number.')
            else mysmshook.hook_error(429, 'Too many codes were requested. Please wait and try again later.')
        end;
    end if;

    sms_type := nullif(event -> 'sms' ->> 'sms_type', '');
    job_id := mysmshook.enqueue('sms', case when sms_type = 'mfa' then 'mfa' else 'sms' end,
        jsonb_strip_nulls(jsonb_build_object('to', to_number, 'code', otp, 'sms_type', sms_type,
                                             'region', number.region))
        || mysmshook.about_user(event));
    return '{}'::jsonb;
end;
$$;
comment on function mysmshook.send_sms(jsonb) is
    'Supabase Auth Send SMS hook: queues the one-time code (or answers the 400/429 error object Auth shows).';

-- Email action types that carry a code or confirmation link, and those that only notify.
create function mysmshook.code_actions() returns text[]
language sql immutable parallel safe
set search_path = pg_catalog, pg_temp
as $$
    select array['signup', 'invite', 'magiclink', 'recovery', 'email_change', 'reauthentication', 'email'];
$$;

create function mysmshook.notification_actions() returns text[]
language sql immutable parallel safe
set search_path = pg_catalog, pg_temp
as $$
    select array['password_changed_notification', 'email_changed_notification',
                 'phone_changed_notification', 'identity_linked_notification',
                 'identity_unlinked_notification', 'mfa_factor_enrolled_notification',
                 'mfa_factor_unenrolled_notification'];
$$;

-- Whether a text holds a control character or a blank of any script, or a character that
-- changes how text around it shows (zero-width, bidirectional controls): what must never reach
-- an address or a link, whatever the database's locale says [[:space:]] is. Written without a
-- backslash in a plain literal, which a caller's standard_conforming_strings would change.
create function mysmshook.has_blank_or_control(value text) returns boolean
language plpgsql immutable strict parallel safe
set search_path = pg_catalog, pg_temp
as $$
begin
    return value ~ ('[[:cntrl:][:space:]' || chr(128) || '-' || chr(160) || chr(5760) || chr(8192) || '-'
                    || chr(8207) || chr(8232) || '-' || chr(8239) || chr(8287) || '-' || chr(8303)
                    || chr(12288) || chr(65279) || ']');
end;
$$;

-- An address a message can go to: one mailbox (no display name, no list, nothing that would
-- become another header), a dot-atom or quoted local part of at most 64 bytes, a host name
-- (international ones included, not with a full stop of another script) or an address literal.
create function mysmshook.is_email_address(address text) returns boolean
language plpgsql immutable strict parallel safe
set search_path = pg_catalog, pg_temp
as $$
declare
    -- Characters of an unquoted local part, and of a host name's labels.
    atext constant text := 'A-Za-z0-9!#$%&''*+/=?^_`{|}~' || chr(161) || '-' || chr(12289) || chr(12291) || '-'
                           || chr(65293) || chr(65295) || '-' || chr(65376) || chr(65378) || '-' || chr(1114111) || '-';
    label constant text := 'A-Za-z0-9_' || chr(161) || '-' || chr(12289) || chr(12291) || '-' || chr(65293)
                           || chr(65295) || '-' || chr(65376) || chr(65378) || '-' || chr(1114111);
    host_label constant text := format('[%1$s]([%1$s-]{0,61}[%1$s])?', label);
begin
    return octet_length(address) <= 254
       and address !~ '[<>,]'
       and not mysmshook.has_blank_or_control(address)
       and address ~ format('^([%1$s]+([.][%1$s]+)*|"([^"%2$s]|%2$s.)+")@(%3$s([.]%3$s)*|[[][^][%2$s]*[]])$',
                            atext, chr(92) || chr(92), host_label)
       and octet_length(left(address, length(address) - strpos(reverse(address), '@'))) <= 64;
end;
$$;
-- Why one of the Send Email event's values cannot be used, or null: codes, token hashes (hex
-- of SHA-224, possibly prefixed pkce_), addresses and links, each checked when present.
create function mysmshook.email_event_value_error(event jsonb) returns text
language plpgsql immutable parallel safe
set search_path = pg_catalog, pg_temp
as $$
declare
    data jsonb := event -> 'email_data';
    field text;
    value text;
begin
    foreach field in array array['token', 'token_new'] loop
        value := data ->> field;
        if value <> '' and value !~ '^[A-Za-z0-9]{1,64}$' then
            return format('email_data.%s must be 1 to 64 letters or digits', field);
        end if;
    end loop;
    foreach field in array array['token_hash', 'token_hash_new'] loop
        value := data ->> field;
        if value <> '' and (octet_length(value) > 128 or value !~ '^[A-Za-z0-9_-]*$') then
            return format('email_data.%s is not a token hash', field);
        end if;
    end loop;
    foreach field in array array['email', 'new_email'] loop
        value := event -> 'user' ->> field;
        if value <> '' and not mysmshook.is_email_address(value) then
            return format('user.%s %s is not a valid email address', field, to_json(left(value, 80)));
        end if;
    end loop;
    -- A URL the message links to: http(s) only.
    value := data ->> 'site_url';
    if value <> '' and (octet_length(value) > 2048 or value !~* '^https?://' or mysmshook.has_blank_or_control(value)) then
        return 'email_data.site_url must be an http(s) URL';
    end if;
    -- Where Auth sends the user after a link: any URL the project allow-lists, custom schemes of
    -- mobile apps (io.supabase.app://login-callback) and universal links included. Refused only
    -- what would break the link.
    value := data ->> 'redirect_to';
    if value <> '' and (octet_length(value) > 2048 or value !~ '^[A-Za-z][A-Za-z0-9+.-]*:'
                        or mysmshook.has_blank_or_control(value)) then
        return 'email_data.redirect_to must be a URL of at most 2048 characters without spaces or control characters';
    end if;
    return null;
end;
$$;
-- Supabase Auth "Send Email" hook: queues the email(s) for delivery.
create or replace function mysmshook.send_email(event jsonb) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_generic_plan
as $$
declare
    action text := event -> 'email_data' ->> 'email_action_type';
    known boolean;
    problem text;
    user_email text := nullif(event -> 'user' ->> 'email', '');
    new_email text := nullif(event -> 'user' ->> 'new_email', '');
    token text := nullif(event -> 'email_data' ->> 'token', '');
    token_hash text := nullif(event -> 'email_data' ->> 'token_hash', '');
    token_new text := nullif(event -> 'email_data' ->> 'token_new', '');
    token_hash_new text := nullif(event -> 'email_data' ->> 'token_hash_new', '');
    base jsonb;
    recipient text;
    job_id uuid;
begin
    -- The fields read below, checked in one expression; the wording only when it fails. (Auth
    -- sends every email_data field as a string.)
    if not coalesce(jsonb_typeof(event -> 'user') = 'object' and jsonb_typeof(event -> 'email_data') = 'object'
                    and jsonb_typeof(event -> 'email_data' -> 'email_action_type') = 'string'
                    and coalesce(jsonb_typeof(event -> 'metadata'), 'null') in ('object', 'null')
                    -- strict: lax mode would take an array of strings for a string. Without
                    -- metadata strict mode errs, which silent makes null: not a failure.
                    and jsonb_path_exists(event, 'strict $.email_data.* ? (@.type() != "string")',
                                          silent => true) is not true
                    and jsonb_path_exists(event, 'strict $.metadata.* ? (@.type() != "string" && @.type() != "null")',
                                          silent => true) is not true
                    and coalesce(jsonb_typeof(event -> 'user' -> 'id'), 'null') in ('string', 'null')
                    and coalesce(jsonb_typeof(event -> 'user' -> 'email'), 'null') in ('string', 'null')
                    and coalesce(jsonb_typeof(event -> 'user' -> 'new_email'), 'null') in ('string', 'null')
                    and coalesce(jsonb_typeof(event -> 'user' -> 'phone'), 'null') in ('string', 'null'), false)
    then
        problem := mysmshook.event_error(event,
        array['user!', 'email_data!', 'metadata'],
        array['email_data.email_action_type!', 'email_data.token', 'email_data.token_hash',
              'email_data.redirect_to', 'email_data.site_url', 'email_data.token_new',
              'email_data.token_hash_new', 'email_data.old_email', 'email_data.old_phone',
              'email_data.provider', 'email_data.factor_type', 'user.id', 'user.email',
              'user.new_email', 'user.phone', 'metadata.uuid', 'metadata.ip_address']);
        if problem is not null then
            return mysmshook.hook_error(400, problem);
        end if;
    end if;
    known := action = any (mysmshook.code_actions()) or action = any (mysmshook.notification_actions());
    -- A type a later Auth release added is queued with a generic message rather than refused,
    -- which would break that flow the day Auth is upgraded.
    if not known then
        if action !~ '^[a-z][a-z0-9_]{0,63}$' then
            return mysmshook.hook_error(400, format('email_data.email_action_type %s is not an action type',
                                                    to_json(left(action, 60))));
        end if;
        perform mysmshook.server_log(format(
            'mysmshook: email action type "%s" is unknown to this version; its emails get a generic message', action));
    end if;
    problem := mysmshook.email_event_value_error(event);
    if problem is not null then
        return mysmshook.hook_error(400, problem);
    end if;

    base := jsonb_strip_nulls(jsonb_build_object(
                'site_url', nullif(event -> 'email_data' ->> 'site_url', ''),
                'redirect_to', nullif(event -> 'email_data' ->> 'redirect_to', ''),
                'new_email', new_email,
                'old_email', nullif(event -> 'email_data' ->> 'old_email', ''),
                'old_phone', nullif(event -> 'email_data' ->> 'old_phone', ''),
                'provider', nullif(event -> 'email_data' ->> 'provider', ''),
                'factor_type', nullif(event -> 'email_data' ->> 'factor_type', '')))
            || mysmshook.about_user(event);

    if known and (action = any (mysmshook.notification_actions())) then
        -- A changed address is announced to the old one, where the account owner still reads.
        recipient := case when action = 'email_changed_notification'
                          then coalesce(base ->> 'old_email', user_email) else user_email end;
        token := null;
        token_hash := null;
    elsif action = 'email_change' and token_hash is not null and token_hash_new is not null then
        -- Auth's historical naming: token_hash_new belongs to the current address and
        -- token_hash to the new one.
        if user_email is null or new_email is null then
            return mysmshook.hook_error(400, format('%s is required for %s',
                case when user_email is null then 'user.email' else 'user.new_email' end, action));
        end if;
        job_id := mysmshook.enqueue('email', action, jsonb_strip_nulls(jsonb_build_object(
            'to', user_email, 'code', token, 'token_hash', token_hash_new)) || base);
        job_id := mysmshook.enqueue('email', action, jsonb_strip_nulls(jsonb_build_object(
            'to', new_email, 'code', token_new, 'token_hash', token_hash)) || base);
        return '{}'::jsonb;
    elsif action = 'email_change' then
        token := coalesce(token, token_new);
        token_hash := coalesce(token_hash, token_hash_new);
        if token is null and token_hash is null then
            return mysmshook.hook_error(400, 'email_change needs a token or token_hash');
        end if;
        -- The confirmation is meant for the new address: never send it to another mailbox.
        if new_email is null then
            return mysmshook.hook_error(400, 'user.new_email is required for email_change');
        end if;
        recipient := new_email;
    else
        if known and token is null and token_hash is null then
            return mysmshook.hook_error(400, format('%s needs email_data.token or email_data.token_hash', action));
        end if;
        recipient := user_email;
    end if;
    if recipient is null then
        return mysmshook.hook_error(400, format('user.email is required for %s', action));
    end if;
    job_id := mysmshook.enqueue('email', action, jsonb_strip_nulls(jsonb_build_object(
        'to', recipient, 'code', token, 'token_hash', token_hash)) || base);
    return '{}'::jsonb;
end;
$$;
comment on function mysmshook.send_email(jsonb) is
    'Supabase Auth Send Email hook: queues the email(s) (or answers the 400 error object Auth shows).';

-- What this part adds is the owner's alone, as in a fresh install, and Supabase's API roles
-- get none of it (by name, as above).
revoke all on function mysmshook.mask_recipient(text),
    mysmshook.server_log(text),
    mysmshook.hook_error(int, text),
    mysmshook.event_error(jsonb, text[], text[]),
    mysmshook.accepted_number_prefixes(),
    mysmshook.about_user(jsonb),
    mysmshook.enqueue(mysmshook.job_channel, text, jsonb),
    mysmshook.code_actions(),
    mysmshook.notification_actions(),
    mysmshook.has_blank_or_control(text),
    mysmshook.is_email_address(text),
    mysmshook.email_event_value_error(jsonb),
    mysmshook.refusing_rule(text, text, int, text),
    mysmshook.phone_info(text),
    mysmshook.setting(text),
    mysmshook.record_refusal(text, text, text, text)
    from public;
do $$
declare
    api_role text;
begin
    foreach api_role in array array['anon', 'authenticated', 'service_role'] loop
        if exists (select 1 from pg_catalog.pg_roles where rolname = api_role) then
            execute pg_catalog.format(
                'revoke all on function mysmshook.mask_recipient(text), '
                'mysmshook.server_log(text), '
                'mysmshook.hook_error(int, text), '
                'mysmshook.event_error(jsonb, text[], text[]), '
                'mysmshook.accepted_number_prefixes(), '
                'mysmshook.about_user(jsonb), '
                'mysmshook.enqueue(mysmshook.job_channel, text, jsonb), '
                'mysmshook.code_actions(), '
                'mysmshook.notification_actions(), '
                'mysmshook.has_blank_or_control(text), '
                'mysmshook.is_email_address(text), '
                'mysmshook.email_event_value_error(jsonb), '
                'mysmshook.refusing_rule(text, text, int, text), '
                'mysmshook.phone_info(text), '
                'mysmshook.setting(text), '
                'mysmshook.record_refusal(text, text, text, text) from %I', api_role);
        end if;
    end loop;
end;
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
revoke all on function mysmshook.worker_number_prefixes() from public;
do $$
declare
    api_role text;
begin
    foreach api_role in array array['anon', 'authenticated', 'service_role'] loop
        if exists (select 1 from pg_catalog.pg_roles where rolname = api_role) then
            execute pg_catalog.format('revoke all on function mysmshook.worker_number_prefixes() from %I', api_role);
        end if;
    end loop;
end;
$$;

-- The receipts' statements, and the pruning of finished jobs, name the rows they change by an
-- array of ids, never by a join or IN (…) with a table: with statistics from before a burst of
-- receipts, the planner ran the day's cleanup (and the marking of a job's receipts) as a loop
-- over the whole table, once per row.
create or replace function mysmshook.apply_receipts(job_ids uuid[] default null) returns int
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

create or replace function mysmshook.receipts_job_recorded() returns trigger
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

create or replace function mysmshook.prune_finished_jobs(retention interval, max_rows int default 10000)
returns int
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    pruned int;
begin
    with old as (
        select q.job_id from mysmshook.job_queue q
         where q.status in ('completed', 'failed', 'expired', 'superseded', 'cancelled')
           and q.finished_at < now() - retention
         order by q.finished_at
         limit max_rows
           for update skip locked  -- an operator may hold one (redrive)
    ), gone as (
        -- By an array of ids, never a join: on stale statistics a join may read a whole table.
        delete from mysmshook.job_queue j where j.job_id = any (array(select o.job_id from old o))
        returning j.job_id
    ), receipts_gone as (
        -- A job's delivery receipts (sql/receipts.sql) go with it.
        delete from mysmshook.receipts rc where rc.job_id = any (array(select g.job_id from gone g))
    )
    select count(*) into pruned from gone;
    return pruned;
end;
$$;

-- pg_cron's run history (sql/cron_history.sql, shared with the SQL-only install's housekeeping
-- job, which runs it beside worker_housekeeping()): a caller that may not use pg_cron prunes
-- nothing rather than failing, so that the housekeeping beside it is not rolled back.
create or replace function mysmshook.prune_cron_history(keep interval default '1 day') returns bigint
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
