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
create function mysmshook.send_sms(event jsonb) returns jsonb
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
create function mysmshook.send_email(event jsonb) returns jsonb
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
