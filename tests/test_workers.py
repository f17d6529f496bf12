"""Workers together and apart: concurrent workers, a worker killed mid-batch, pg_cron."""

import threading
import time

import psycopg
import pytest

from conftest import (
    BackgroundWorker,
    deliver_due,
    enqueue_many,
    jobs,
    requests_per_job,
    unanswered_jobs,
    run_worker,
    slow_ok,
    status_counts,
    use_webhook,
    wait_for_leases_to_lapse,
)
from mock_provider import ok_json

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_four_concurrent_workers_deliver_each_job_exactly_once(cluster, db, mock):
    use_webhook(db, mock.url, SECRET)
    enqueue_many(db, 3000)
    errors = []
    workers_started = []
    # All four start delivering together: one connecting late must not find the queue empty.
    ready = threading.Barrier(4)

    class Started:
        def __init__(self, pid):
            self.pid = pid

    def worker():
        try:
            with cluster.connect() as conn:
                conn.execute("set mysmshook.batch_size = 50")
                # A request that outlives the timeout on a loaded machine is tried again, rightly
                # (see the twenty-thousand-jobs test): this test is about claims, not timeouts.
                conn.execute("set mysmshook.http_timeout = '10s'")
                workers_started.append(Started(conn.info.backend_pid))
                ready.wait(timeout=60)
                deliver_due(conn)
        except Exception as e:  # reported below; a thread cannot fail the test itself
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    leftovers = db.execute("select status, last_error from mysmshook.job_queue where status <> 'completed'").fetchall()
    assert leftovers == []
    assert status_counts(db) == {"completed": 3000}
    per_job = requests_per_job(mock)
    assert len(per_job) == 3000 and set(per_job.values()) == {1}
    # All four took part: every attempt names the backend that made it.
    per_worker = dict(db.execute(
        "select attempts->-1->>'worker', count(*) from mysmshook.job_queue group by 1").fetchall())
    pids = {str(w.pid) for w in workers_started}
    assert set(per_worker) == pids, (per_worker, pids)
    assert min(per_worker.values()) >= 100, per_worker  # shared, not serialised behind one lock


def test_worker_killed_mid_batch_loses_nothing(cluster, db, mock):
    mock.responder = slow_ok(0.4)
    use_webhook(db, mock.url, SECRET)
    enqueue_many(db, 30)
    victim = BackgroundWorker(cluster, batch_size=10, concurrency=2, lease="3s")
    assert mock.wait_for(13)  # into its second batch
    db.execute("select pg_terminate_backend(%s)", (victim.pid,))
    victim.join()
    assert isinstance(victim.error, psycopg.OperationalError), "the worker was not terminated"
    counts = status_counts(db)
    assert counts.get("running", 0) > 0, counts  # what it held stays leased...
    held = {str(j["job_id"]) for j in jobs(db) if j["status"] == "running"}
    assert len(held) <= 2 + 32  # what its 2 threads send plus a group waiting, not a whole batch
    sent_before = set(requests_per_job(mock))

    wait_for_leases_to_lapse(db)  # ...until the lease runs out
    mock.responder = lambda req: ok_json({"code": "ok"})
    deliver_due(db)
    assert status_counts(db) == {"completed": 30}
    per_job = requests_per_job(mock)
    assert len(per_job) == 30
    repeated = {job for job, n in per_job.items() if n > 1}
    # Only what was in flight when it died can go out twice (same webhook-id), or a request
    # that timed out on a loaded machine.
    assert repeated <= (held & sent_before) | unanswered_jobs(db) and all(n <= 2 for n in per_job.values())
    rescued = [j for j in jobs(db) if str(j["job_id"]) in held]
    # A lost lease is not a retry: the job may never have reached a provider.
    assert all(j["retry_count"] == 0 and j["rescues"] == 1 for j in rescued)
    assert all(j["attempts"][0]["result"] == "lease_expired" for j in rescued if str(j["job_id"]) not in sent_before)


@pytest.mark.slow
def test_pg_cron_runs_the_schedule_and_delivers(cluster, db):
    """The recommended schedule, run as a role that may only run the worker, and the seed
    documents' cron line, both run by pg_cron (in background-worker mode, as cluster.sh
    configures it) under a role statement_timeout of 5 s, the kind managed PostgreSQL sets;
    meanwhile an administrator drops a database. pg_cron 1.5
    and later run the job every 5 seconds, each run delivering for 4; pg_cron 1.4 once a minute,
    the run polling for 58 seconds."""
    (cron_version,) = db.execute("select extversion from pg_extension where extname = 'pg_cron'").fetchone()
    seconds = tuple(int(x) for x in cron_version.split("-")[0].split(".")[:2]) >= (1, 5)
    if not db.execute("select 1 from pg_roles where rolname = 'mysmshook_worker'").fetchone():
        db.execute("create role mysmshook_worker login")
    db.execute("select mysmshook.grant_worker_access('mysmshook_worker')")
    for owner in ["postgres", "mysmshook_worker"]:  # the cron jobs' owners
        db.execute(f"alter role {owner} set statement_timeout = '5s'")
    (job_id,) = db.execute("select mysmshook.schedule(run_as => 'mysmshook_worker')").fetchone()
    (seed_job,) = db.execute(
        "select cron.schedule('seed-line', '* * * * *', 'select mysmshook.dequeue_and_run_jobs();')").fetchone()
    try:
        (command, schedule) = db.execute("select command, schedule from cron.job where jobid = %s", (job_id,)).fetchone()
        if seconds:
            assert schedule == "5 seconds" and "run_worker(poll_for => '00:00:04')" in command, (schedule, command)
        else:
            assert schedule == "* * * * *" and "run_worker(poll_for => '00:00:58')" in command, (schedule, command)
        enqueue_many(db, 1)
        deadline = time.time() + 75
        while time.time() < deadline and status_counts(db) != {"completed": 1}:
            time.sleep(0.25)
        assert status_counts(db) == {"completed": 1}
        # While the scheduled run polls, a new job goes out within a second or two, not a minute.
        queued = time.time()
        enqueue_many(db, 1)
        while time.time() < queued + 10 and status_counts(db) != {"completed": 2}:
            time.sleep(0.05)
        latency = time.time() - queued
        print(f"\ncommit-to-completed latency under the pg_cron schedule: {latency:.2f}s")
        assert status_counts(db) == {"completed": 2}

        # An administrator's DROP DATABASE ... WITH (FORCE) does not wait for the run to end.
        db.execute("create database dropped_while_delivering")
        started = time.monotonic()
        db.execute("drop database dropped_while_delivering with (force)")
        drop_seconds = time.monotonic() - started
        print(f"DROP DATABASE WITH (FORCE) during a scheduled run: {drop_seconds:.2f}s")
        assert drop_seconds < 5

        if seconds:
            time.sleep(6)  # runs end on their own, a few seconds each; the next one takes over
        else:
            # Past the role's 5 s statement_timeout the same run still delivers.
            (run_started,) = db.execute("select extract(epoch from start_time) from cron.job_run_details "
                                        "where jobid = %s and status = 'running'", (job_id,)).fetchone()
            time.sleep(max(0.0, float(run_started) + 7 - time.time()))
        queued = time.time()
        enqueue_many(db, 1)
        while time.time() < queued + 10 and status_counts(db) != {"completed": 3}:
            time.sleep(0.05)
        assert status_counts(db) == {"completed": 3}
        statuses = dict(db.execute("select status, count(*) from cron.job_run_details where jobid = %s "
                                   "group by 1", (job_id,)).fetchall())
        runs_as = db.execute("select distinct username from cron.job_run_details where jobid = %s", (job_id,)).fetchall()
        assert runs_as == [("mysmshook_worker",)], runs_as
        if seconds:
            assert statuses.get("succeeded", 0) >= 1 and set(statuses) <= {"succeeded", "running"}, statuses
            (longest,) = db.execute("select max(extract(epoch from end_time - start_time)) from cron.job_run_details "
                                    "where jobid = %s and status = 'succeeded'", (job_id,)).fetchone()
            assert float(longest) < 8, longest  # poll_for (4 s) plus the tail of the run
        else:
            assert statuses == {"running": 1}, statuses
        # The seed documents' line ran as written (it used to fail: "... is a procedure").
        deadline = time.time() + 70  # a once-a-minute line
        while time.time() < deadline and not db.execute(
                "select 1 from cron.job_run_details where jobid = %s and status <> 'running'", (seed_job,)).fetchone():
            time.sleep(0.5)
        seed_runs = db.execute("select status, return_message from cron.job_run_details where jobid = %s "
                               "and status <> 'running'", (seed_job,)).fetchall()
        assert seed_runs and all(status == "succeeded" for status, _ in seed_runs), seed_runs
    finally:
        for owner in ["postgres", "mysmshook_worker"]:
            db.execute(f"alter role {owner} reset statement_timeout")
        db.execute("select cron.unschedule('seed-line')")
        assert db.execute("select mysmshook.unschedule()").fetchone()[0] is True
        db.execute("""select pg_terminate_backend(pid) from pg_stat_activity
                       where query like '%%run_worker(poll_for%%' and pid <> pg_backend_pid()""")
    assert db.execute("select count(*) from cron.job").fetchone()[0] == 0
    assert db.execute("select mysmshook.unschedule()").fetchone()[0] is False


def test_schedule_without_pg_cron_says_so(cluster, db):
    db.execute("drop database if exists nocron")
    db.execute("create database nocron")
    try:
        with cluster.connect(dbname="nocron") as conn:
            conn.execute("create extension mysmshook")
            with pytest.raises(psycopg.errors.RaiseException, match="pg_cron is not installed in database nocron"):
                conn.execute("select mysmshook.schedule()")
    finally:
        db.execute("drop database nocron")


def test_dequeue_inside_a_transaction_block_is_refused_clearly(cluster, db):
    with cluster.connect(autocommit=False) as conn:
        with pytest.raises(psycopg.errors.InvalidTransactionTermination):
            conn.execute("call mysmshook.run_worker()")
