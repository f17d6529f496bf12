-- mysmshook.scrubbed_job_data for the SQL-only edition: what a final job keeps of its data (the
-- extension's is the engine's JobData::scrubbed): the masked destination, the user, the event
-- and the region; never a code, token, link or full address. Data that is not a job's (no "to")
-- keeps nothing.
create function mysmshook.scrubbed_job_data(job_data jsonb) returns jsonb
language sql immutable parallel safe
set search_path = pg_catalog, pg_temp
as $$
    select case when jsonb_typeof(job_data -> 'to') = 'string' then
        jsonb_build_object('to', mysmshook.mask_recipient(job_data ->> 'to'),
                           'user_id', job_data -> 'user_id', 'event_id', job_data -> 'event_id',
                           'region', job_data -> 'region', 'scrubbed', true)
    else '{"scrubbed": true}' end;
$$;
