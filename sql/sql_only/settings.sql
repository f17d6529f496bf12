-- mysmshook.setting for the SQL-only edition. The extension registers its settings as
-- superuser-only GUCs; without the library, mysmshook.* would be placeholders that any session
-- may SET, the hook caller's included. Here they are rows that only the owner writes.

-- The settings the hooks read: the extension's defaults (as SHOW shows them) and bounds.
create table mysmshook.setting_defaults (
    name    text primary key,
    value   text not null,
    minimum numeric,          -- bounds: max_retries as a count, the others in seconds
    maximum numeric
);
insert into mysmshook.setting_defaults (name, value, minimum, maximum) values
    ('accepted_number_prefixes', '', null, null),
    ('max_retries', '3', 0, 100),               -- retries after the first attempt
    ('schedule_window', '5min', 1, 86400),
    ('sms_code_lifetime', '1min', 1, 604800),
    ('email_code_lifetime', '1h', 1, 604800),
    ('notification_lifetime', '1d', 1, 2592000);

-- What differs from the defaults: insert or update a row; delete it to go back to the default.
create table mysmshook.settings (
    name  text primary key,
    value text not null
);
comment on table mysmshook.settings is
    'Settings the hooks read, where they differ from mysmshook.setting_defaults (the extension''s mysmshook.* GUCs).';

-- A value the hooks could not read is refused when it is written, not at the next sign-in.
create function mysmshook.settings_check() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    bounds record;
    amount numeric;
begin
    select * into bounds from mysmshook.setting_defaults d where d.name = new.name;
    if not found then
        raise exception 'mysmshook.settings: no setting %', pg_catalog.quote_literal(new.name)
            using errcode = 'invalid_parameter_value',
                  hint = 'The settings: ' || (select string_agg(d.name, ', ') from mysmshook.setting_defaults d);
    end if;
    if bounds.minimum is not null then
        begin
            amount := case when new.name = 'max_retries' then new.value::int
                           else extract(epoch from new.value::interval) end;
        exception when data_exception then  -- not a number, not an interval, out of range
            amount := null;
        end;
        if amount is null or amount not between bounds.minimum and bounds.maximum then
            raise exception 'mysmshook.settings: % = % is not valid', new.name, pg_catalog.quote_literal(new.value)
                using errcode = 'invalid_parameter_value',
                      hint = pg_catalog.format('%s to %s%s', bounds.minimum, bounds.maximum,
                                               case when new.name = 'max_retries' then '' else ' seconds, as an interval' end);
        end if;
    end if;
    return new;
end;
$$;
create trigger settings_check before insert or update on mysmshook.settings
    for each row execute function mysmshook.settings_check();

-- No SET clause: the hooks call it on every sign-in, under their own search_path. One indexed
-- read: the default's row, and the owner's value if there is one. PL/pgSQL, not SQL: its plan
-- is made once per session, where a SQL function's would be made at every call.
create function mysmshook.setting(name text) returns text
language plpgsql stable strict parallel safe
as $$
begin
    return (select coalesce(s.value, d.value)
              from mysmshook.setting_defaults d left join mysmshook.settings s on s.name = d.name
             where d.name = setting.name);
end;
$$;
