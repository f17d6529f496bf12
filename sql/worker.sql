-- The delivery run. Two ways to start one:
--
--   CALL mysmshook.run_worker(poll_for => '58 seconds')     -- recommended (what schedule() uses)
--     A procedure, so that it can COMMIT between steps. Each step (mysmshook.worker_step) waits
--     up to ~100 ms for answers from the HTTP threads, records them in one statement, renews
--     the leases it holds, claims more when threads are free, and returns; the COMMIT after it
--     makes the outcomes permanent. A failure (cancel, crash, timeout) repeats at most the
--     requests in flight and the answers of the last ~100 ms, never a whole batch. Claims
--     commit before their requests start. The run claims until poll_for has passed (and at
--     least one batch), then finishes what it holds and ends: within poll_for plus one batch.
--
--   SELECT mysmshook.dequeue_and_run_jobs()                   -- the seed documents' shape
--     A function: one transaction, at most one batch (mysmshook.batch_size jobs), committed
--     when the caller's statement ends. A failure before then repeats the whole batch. Kept so
--     that the cron line `select mysmshook.dequeue_and_run_jobs();` works as written.
--
-- No SET clause on the procedure (a procedure with one cannot COMMIT): every name is qualified,
-- types and operators included, so that nothing on the caller's search_path (or in its pg_temp)
-- runs inside it.
create procedure mysmshook.run_worker(poll_for interval default '0 seconds')
language plpgsql
as $$
declare
    state pg_catalog.text;
begin
    perform mysmshook.worker_begin(pg_catalog.date_part('epoch', poll_for));
    commit;
    loop
        state := mysmshook.worker_step();
        commit;
        exit when state operator(pg_catalog.=) 'done';
    end loop;
end;
$$;
comment on procedure mysmshook.run_worker(interval) is
    'Deliver due jobs, committing every step; with poll_for, keep claiming new jobs that long. Run as CALL, outside an explicit transaction block.';
