-- Configuration is checked when it is saved, not when a user signs in at 3 a.m.

create function mysmshook.providers_check() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    route_name text;
begin
    if tg_op in ('UPDATE', 'DELETE') and (tg_op = 'DELETE' or new.name is distinct from old.name) then
        select r.name into route_name from mysmshook.routes r where old.name = any (r.providers) limit 1;
        if found then
            raise exception 'provider % is used by route %', old.name, route_name
                using hint = 'Remove it from the route''s providers first.';
        end if;
    end if;
    if tg_op = 'DELETE' then
        return old;
    end if;
    if new.name = 'log' then
        raise exception 'provider name log is taken by the built-in log provider'
            using hint = 'Choose another name; routes may name the built-in provider as ''log''.';
    end if;
    perform mysmshook.check_provider(new.kind, new.settings);
    new.updated_at := pg_catalog.now();
    return new;
end;
$$;

create trigger providers_check
    before insert or update or delete on mysmshook.providers
    for each row execute function mysmshook.providers_check();

create function mysmshook.routes_check() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    missing text;
    bad_region text;
begin
    -- pg_restore -j loads tables in parallel, routes possibly before providers; the dump was
    -- consistent when taken (a provider in use cannot be deleted), so a restore is not checked.
    select p into missing
      from pg_catalog.unnest(new.providers) p
     where p <> 'log' and not exists (select 1 from mysmshook.providers x where x.name = p)
     limit 1;
    if found and pg_catalog.current_setting('application_name') <> 'pg_restore' then
        raise exception 'route %: provider % does not exist', new.name, missing
            using hint = 'Insert it into mysmshook.providers first.';
    end if;
    select r into bad_region from pg_catalog.unnest(new.regions) r where r !~ '^[A-Z]{2}$' limit 1;
    if found then
        raise exception 'route %: region % is not a two-letter ISO 3166 code such as MX or PR', new.name, bad_region;
    end if;
    if exists (select 1 from pg_catalog.unnest(new.calling_codes) c where c < 1 or c > 999) then
        raise exception 'route %: calling codes are 1 to 999 (52 for Mexico, not +52)', new.name;
    end if;
    return new;
end;
$$;

create trigger routes_check
    before insert or update on mysmshook.routes
    for each row execute function mysmshook.routes_check();

create function mysmshook.templates_check() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    perform mysmshook.check_template(new.channel, new.action_type, new.subject, new.body, new.html);
    new.updated_at := pg_catalog.now();
    return new;
end;
$$;

create trigger templates_check
    before insert or update on mysmshook.templates
    for each row execute function mysmshook.templates_check();

-- Any change to the configuration tables bumps mysmshook.config_version in the same
-- transaction: workers reload their cached configuration when they see the new number.
-- Jobs waiting for a template fix (a template that fails for their data) are due again: they
-- wait for a change, not a timer (src/delivery.rs). Due two seconds on, so that running workers
-- have read the new configuration (they look every second) before they claim them. Rows a
-- worker holds are skipped.
create function mysmshook.config_changed() returns trigger
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

create trigger providers_changed
    after insert or update or delete or truncate on mysmshook.providers
    for each statement execute function mysmshook.config_changed();
create trigger routes_changed
    after insert or update or delete or truncate on mysmshook.routes
    for each statement execute function mysmshook.config_changed();
create trigger templates_changed
    after insert or update or delete or truncate on mysmshook.templates
    for each statement execute function mysmshook.config_changed();
