-- mysmshook.record_refusal for the SQL-only edition. The refusal must outlive the auth server's
-- rollback, and no table row does; where no library can append to a file, the server log is
-- what outlives it. One LOG line per refusal, always starting "mysmshook refusal: " and then a
-- JSON object (the rule, the masked destination, the client IP, the region; never a code), so
-- that a log search for that prefix finds them all (Supabase: Logs > Postgres). LOG reaches the
-- server log whatever the caller's client_min_messages, and never the client.
create function mysmshook.record_refusal(rule text, destination text, ip text, region text) returns void
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
begin
    raise log 'mysmshook refusal: %', json_build_object('rule', rule, 'to', destination, 'ip', ip, 'region', region);
end;
$$;
