-- mysmshook.record_refusal for the SQL-only edition. The refusal must outlive the auth server's
-- rollback, and no table row does; where no library can append to a file, the server log is
-- what outlives it. One line per refusal, always starting "mysmshook refusal: " and then a JSON
-- object (the rule, the masked destination, the client IP, the region; never a code), so that a
-- log search for that prefix finds them all (Supabase: Logs, Postgres). A WARNING through
-- mysmshook.server_log, not a LOG line, which would bring the caller's statement with it.
create function mysmshook.record_refusal(rule text, destination text, ip text, region text) returns void
language sql volatile
set search_path = pg_catalog, pg_temp
as $$
    select mysmshook.server_log('mysmshook refusal: '
        || json_build_object('rule', rule, 'to', destination, 'ip', ip, 'region', region)::text);
$$;
