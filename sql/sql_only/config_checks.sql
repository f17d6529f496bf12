-- The save-time checks of the SQL-only edition. The extension checks a provider's settings and
-- a template by building them with the delivery engine; without the library only their shape
-- is checked here. `mysmshook-worker --check` builds them all as the extension does and names
-- each that is wrong; the worker builds them when it loads the configuration too: a provider
-- it cannot build fails its jobs with the reason in last_error, and a template that does not
-- compile fails the jobs that use it the same way (README, "Editions").

-- A known kind (the engine's providers::KINDS; the suite compares the two lists) with an
-- object of settings.
create function mysmshook.check_provider(kind text, settings jsonb) returns void
language plpgsql stable parallel safe
set search_path = pg_catalog, pg_temp
as $$
begin
    if kind is null or not kind = any (array['log', 'webhook', 'twilio', 'twilio_whatsapp', 'resend', 'smtp', 'vonage',
                                             'messagebird', 'textlocal', 'msg91', 'africastalking', 'plivo',
                                             'twilio_verify']) then
        raise exception 'invalid % provider: unknown kind', coalesce(kind, 'null')
            using errcode = 'invalid_parameter_value';
    end if;
    if jsonb_typeof(settings) is distinct from 'object' then
        raise exception 'invalid % provider: settings must be a JSON object', kind
            using errcode = 'invalid_parameter_value';
    end if;
end;
$$;

-- A template's body is checked when mysmshook-worker compiles it, not here.
create function mysmshook.check_template(channel text, action_type text, subject text, body text, html text)
returns void
language sql immutable parallel safe
set search_path = pg_catalog, pg_temp
as $$
    select;
$$;
