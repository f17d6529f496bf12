-- The delivery loop. A procedure, not a function, so that it can COMMIT between steps:
--   claim a batch (status running + lease)  -> COMMIT: other workers skip these rows, and a
--                                              worker that dies leaves a lease to expire
--   deliver the batch over HTTP, record     -> COMMIT: a sent message is recorded for good,
--   every outcome                              whatever happens later in the run
-- With poll_for > 0 it keeps polling for new work until that much time has passed, so that the
-- once-a-minute pg_cron schedule delivers a new job in about a second.
--
-- No SET clause (a procedure with one cannot COMMIT): every name is schema-qualified instead.
create procedure mysmshook.dequeue_and_run_jobs(poll_for interval default '0 seconds')
language plpgsql
as $$
declare
    deadline timestamptz := pg_catalog.clock_timestamp() + poll_for;
    claimed  uuid[];
begin
    perform mysmshook.prune_finished_jobs();
    commit;
    loop
        claimed := mysmshook.claim_batch();
        commit;
        if pg_catalog.cardinality(claimed) > 0 then
            perform mysmshook.deliver_batch(claimed);
            commit;
        else
            exit when pg_catalog.clock_timestamp() >= deadline;
            perform pg_catalog.pg_sleep(mysmshook.poll_interval());
        end if;
    end loop;
end;
$$;
comment on procedure mysmshook.dequeue_and_run_jobs(interval) is
    'Deliver due jobs in batches, committing after each claim and each batch; with poll_for, keep polling for new jobs that long. Run as CALL, outside an explicit transaction block.';
