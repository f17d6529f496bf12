"""Operating the queue: pause and resume, retry, cancel and redrive, the metrics and their
Prometheus text, and the least-privileged worker role."""

import threading
import time
import uuid

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from psycopg.types.json import Jsonb

from conftest import BackgroundWorker, add_provider, enqueue_many, jobs, run_worker, seed, set_chain, status_counts
from mock_provider import ok_json
from test_providers import enqueue, mocks, sms_event  # noqa: F401 (fixture)

pytestmark = pytest.mark.both_hosts

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def role(db, name, login):
    """A role for the test, made once per cluster (roles with grants cannot simply be dropped)."""
    if not db.execute("select 1 from pg_roles where rolname = %s", (name,)).fetchone():
        db.execute(f"create role {name} {login}")


def gateway(db, mock, name="gateway"):
    add_provider(db, name, "webhook", {"url": mock.url, "secret": SECRET, "app_id": "demo"})


def otps(mock):
    return [r.json["template_variables"]["code"] for r in mock.requests]


def test_a_paused_route_holds_its_jobs_without_spending_retries_until_resumed(db, mock):
    gateway(db, mock)
    set_chain(db, "sms", ["gateway"])
    db.execute("select mysmshook.pause('route', 'sms', 'carrier incident')")
    enqueue_many(db, 3)
    run_worker(db)
    held = jobs(db)
    assert [j["status"] for j in held] == ["paused"] * 3
    assert all(j["paused_on"] == "route:sms" and j["retry_count"] == 0 for j in held)
    assert "mysmshook.resume('route', 'sms')" in held[0]["last_error"]
    assert held[0]["job_data"]["code"], "a paused job keeps its code"
    assert mock.requests == []
    run_worker(db)  # a paused job is not claimed again
    assert status_counts(db) == {"paused": 3} and mock.requests == []

    (released,) = db.execute("select mysmshook.resume('route', 'sms')").fetchone()
    assert released == 3
    run_worker(db)
    assert status_counts(db) == {"completed": 3}
    assert sorted(otps(mock)) == ["000001", "000002", "000003"]
    assert all(j["retry_count"] == 0 for j in jobs(db))


def test_a_paused_channel_holds_that_channel_only(db):
    db.execute("select mysmshook.pause('channel', 'email')")
    enqueue_many(db, 1)
    enqueue(db, "send_email", seed("email_seed.json"))
    run_worker(db)
    assert dict(db.execute("select channel, status from mysmshook.job_queue").fetchall()) == {
        "sms": "completed", "email": "paused"}


def test_a_paused_provider_holds_the_chain_where_it_stands(db, mocks):
    first, second = mocks(lambda req: ok_json({"error": "bad key"}, status=401)), mocks()
    gateway(db, first, "first")
    gateway(db, second, "second")
    set_chain(db, "sms", ["first", "second", "log"])
    db.execute("select mysmshook.pause('provider', 'second')")
    enqueue_many(db, 1)
    run_worker(db)
    (job,) = jobs(db)
    # The provider before it was asked; the paused one is waited for, not skipped to 'log'.
    assert job["status"] == "paused" and job["paused_on"] == "provider:second"
    assert [a.get("result") for a in job["attempts"]] == ["provider_failed", "paused"]
    assert job["retry_count"] == 0 and len(first.requests) == 1 and second.requests == []
    assert "first: authentication failed" in job["last_error"]

    # Deleting the pause row lifts it as resume() does.
    db.execute("delete from mysmshook.pauses")
    assert status_counts(db) == {"pending": 1}
    run_worker(db)
    (job,) = jobs(db)
    assert job["status"] == "completed" and job["provider"] == "second" and len(second.requests) == 1


def test_a_provider_paused_while_the_one_before_it_answers_holds_the_job(cluster, db, mocks):
    """The pause comes while the chain's first provider is still answering (slowly, then with a
    failure): the job does not go on to the paused provider, it waits for it."""
    def slow_failure(req):
        time.sleep(2.5)
        return ok_json({"error": "bad key"}, status=401)

    first, second = mocks(slow_failure), mocks()
    gateway(db, first, "first")
    gateway(db, second, "second")
    set_chain(db, "sms", ["first", "second"])
    enqueue_many(db, 1)
    worker = BackgroundWorker(cluster, poll_for="0 seconds", http_timeout="5s")
    deadline = time.time() + 5
    while time.time() < deadline and not first.requests:
        time.sleep(0.02)
    assert first.requests, "the first provider was not asked"
    db.execute("select mysmshook.pause('provider', 'second')")
    worker.join(timeout=15)
    assert worker.error is None, worker.error
    (job,) = jobs(db)
    assert job["status"] == "paused" and job["paused_on"] == "provider:second", job["last_error"]
    assert second.requests == [] and job["retry_count"] == 0
    db.execute("select mysmshook.resume('provider', 'second')")
    run_worker(db)
    assert jobs(db)[0]["status"] == "completed" and len(second.requests) == 1


def test_a_code_that_dies_while_paused_expires_with_its_code_removed(db):
    db.execute("select mysmshook.pause('provider', 'log')")
    enqueue_many(db, 1)
    run_worker(db)
    assert status_counts(db) == {"paused": 1}
    db.execute("update mysmshook.job_queue set expires_at = now() - interval '1 second'")
    run_worker(db)
    (job,) = jobs(db)
    assert job["status"] == "expired" and job["paused_on"] is None
    assert job["last_error"] == "the code expired while provider log was paused"
    assert job["job_data"]["scrubbed"] is True and "code" not in job["job_data"]


@pytest.mark.single_host("drives worker_begin and worker_step in a session")
def test_a_resume_during_a_workers_outcome_leaves_no_job_paused(cluster, db):
    """The worker read the pause, sent nothing, and records 'paused' while a resume deletes the
    pause in a transaction that has not committed yet (an operator's open transaction). The
    worker does not wait for it, and does not pause the job on a pause being lifted: the job is
    back in line a second later instead of waiting for a pause that no longer exists."""
    db.execute("select mysmshook.pause('route', 'sms')")
    enqueue_many(db, 1)
    resumer = cluster.connect(autocommit=False)
    worker = cluster.connect()
    try:
        worker.execute("load 'mysmshook'")
        worker.execute("select mysmshook.worker_begin(0)")  # caches the configuration: paused
        resumer.execute("select mysmshook.resume('route', 'sms')")
        worker.execute("set statement_timeout = '5s'")  # waiting on the resume would fail here
        while worker.execute("select mysmshook.worker_step()").fetchone()[0] != "done":
            pass
        (job,) = jobs(db)
        assert job["status"] == "pending" and job["paused_on"] is None
        resumer.commit()
    finally:
        resumer.close()
        worker.close()
    time.sleep(1.1)
    run_worker(db)
    assert status_counts(db) == {"completed": 1}


@pytest.mark.single_host("no worker runs")
def test_pause_refuses_what_does_not_exist(db):
    for scope, name, message in [("route", "nowhere", "no route is named nowhere"),
                                 ("provider", "ghost", "no provider is named ghost"),
                                 ("channel", "fax", "no channel is named fax"),
                                 ("job", "x", "cannot pause a job")]:
        with pytest.raises(psycopg.Error, match=message):
            db.execute("select mysmshook.pause(%s, %s)", (scope, name))
    assert db.execute("select mysmshook.resume('route', 'sms')").fetchone()[0] == 0


def refusing_gateway(db, mock):
    """SMS goes to one provider only, which refuses every request (HTTP 401)."""
    mock.responder = lambda req: ok_json({"error": "bad key"}, status=401)
    gateway(db, mock)
    set_chain(db, "sms", ["gateway"])


def failed_job(db, mock):
    """One SMS job failed by its only provider (HTTP 401), its code still alive."""
    refusing_gateway(db, mock)
    enqueue(db, "send_sms", sms_event("+12125550123", otp="482913"))
    run_worker(db)
    (job,) = jobs(db)
    assert job["status"] == "failed" and "code" not in job["job_data"]
    return job["job_id"]


def test_retry_job_sends_a_failed_job_whose_code_lives(db, mock):
    job_id = failed_job(db, mock)
    mock.responder = lambda req: ok_json({"code": "ok"})
    assert db.execute("select mysmshook.retry_job(%s)", (job_id,)).fetchone()[0] == "pending"
    run_worker(db)
    (job,) = jobs(db)
    assert job["status"] == "completed" and otps(mock) == ["482913", "482913"]
    assert [a["result"] for a in job["attempts"]] == ["provider_failed", "requeued", "sent"]
    assert job["job_data"]["scrubbed"] is True and job["fallback_data"] is None
    with pytest.raises(psycopg.Error, match="cannot be sent again: it was already sent"):
        db.execute("select mysmshook.retry_job(%s)", (job_id,))


def test_retry_job_refuses_a_code_that_expired_or_was_removed(db, mock):
    job_id = failed_job(db, mock)
    db.execute("update mysmshook.job_queue set expires_at = now() - interval '1 minute'")
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState,
                       match="cannot be sent again: its code expired at .* and was removed") as refused:
        db.execute("select mysmshook.retry_job(%s)", (job_id,))
    assert "the user has to ask for a new one" in refused.value.diag.message_hint
    # The next worker run clears the copy of a dead code.
    run_worker(db)
    assert jobs(db)[0]["fallback_data"] is None
    with pytest.raises(psycopg.errors.NoDataFound, match="does not exist"):
        db.execute("select mysmshook.retry_job(gen_random_uuid())")


def test_retry_job_makes_a_waiting_retry_due_and_refuses_a_running_job(db):
    enqueue_many(db, 2)
    db.execute("update mysmshook.job_queue set scheduled_at = now() + interval '1 hour'")
    first, second = [j["job_id"] for j in jobs(db)]
    assert db.execute("select mysmshook.retry_job(%s)", (first,)).fetchone()[0] == "pending"
    run_worker(db)
    assert dict(db.execute("select job_id, status from mysmshook.job_queue").fetchall()) == {
        first: "completed", second: "pending"}
    db.execute("update mysmshook.job_queue set scheduled_at = now()")
    db.execute("select mysmshook.claim_jobs(1, '1 minute', gen_random_uuid())")
    with pytest.raises(psycopg.Error, match="is being delivered"):
        db.execute("select mysmshook.retry_job(%s)", (second,))
    with pytest.raises(psycopg.Error, match="cannot be called back"):
        db.execute("select mysmshook.cancel_job(%s)", (second,))


def test_cancel_job_removes_the_code_and_nothing_is_sent(db, mock):
    gateway(db, mock)
    set_chain(db, "sms", ["gateway"])
    enqueue_many(db, 2)
    db.execute("select mysmshook.pause('route', 'sms')")
    run_worker(db)
    # By code: both jobs came from one statement, so created_at does not order them.
    first, second = [j["job_id"] for j in jobs(db, order="job_data->>'code'")]
    assert db.execute("select mysmshook.cancel_job(%s, 'fraud')", (first,)).fetchone()[0] == "cancelled"
    db.execute("select mysmshook.resume('route', 'sms')")
    run_worker(db)
    done = {j["job_id"]: j for j in jobs(db)}
    assert done[first]["status"] == "cancelled" and done[second]["status"] == "completed"
    assert done[first]["last_error"] == "cancelled by postgres: fraud"
    assert "code" not in done[first]["job_data"] and done[first]["finished_at"] is not None
    assert otps(mock) == ["000002"]
    with pytest.raises(psycopg.Error, match="is already completed"):
        db.execute("select mysmshook.cancel_job(%s)", (second,))
    with pytest.raises(psycopg.Error, match="cannot be sent again: its code was removed when it became cancelled"):
        db.execute("select mysmshook.retry_job(%s)", (first,))


def test_redrive_queues_what_can_still_be_sent_and_says_why_not_for_the_rest(db, mock):
    refusing_gateway(db, mock)
    enqueue_many(db, 3)
    run_worker(db)
    assert status_counts(db) == {"failed": 3}
    ids = [j["job_id"] for j in jobs(db, order="job_data->>'user_id'")]
    db.execute("update mysmshook.job_queue set expires_at = now() - interval '1 second' where job_id = %s", (ids[2],))
    # Filters that match nothing queue nothing.
    assert db.execute("select * from mysmshook.redrive(provider => 'twilio')").fetchall() == []
    assert db.execute("select * from mysmshook.redrive(since => now() + interval '1 minute')").fetchall() == []

    mock.responder = lambda req: ok_json({"code": "ok"})
    rows = db.execute("select job_id, action_type, result from mysmshook.redrive(provider => 'gateway')").fetchall()
    assert sorted(r[0] for r in rows) == sorted(ids) and {r[1] for r in rows} == {"sms"}
    results = {r[0]: r[2] for r in rows}
    assert results[ids[0]] == results[ids[1]] == "queued"
    assert results[ids[2]].startswith("refused: its code expired at"), results
    run_worker(db)
    assert dict(db.execute("select job_id, status from mysmshook.job_queue").fetchall()) == {
        ids[0]: "completed", ids[1]: "completed", ids[2]: "failed"}
    assert sorted(otps(mock)[3:]) == ["000001", "000002"]


def test_redrive_refuses_a_code_that_a_resend_replaced(db, mock):
    refusing_gateway(db, mock)
    enqueue(db, "send_sms", sms_event("+12125550123", otp="111111"))
    run_worker(db)
    enqueue(db, "send_sms", sms_event("+12125550123", otp="222222"))  # the user asked again
    run_worker(db)
    assert status_counts(db) == {"failed": 2}
    mock.responder = lambda req: ok_json({"code": "ok"})
    results = dict((r[0], r[1]) for r in db.execute(
        "select j.job_data->>'user_id' || ':' || r.result, r.result from mysmshook.redrive() r "
        "join mysmshook.job_queue j using (job_id)").fetchall())
    assert sorted(results.values()) == ["queued", "refused: a newer code for the same user and action replaced it"]
    run_worker(db)
    assert otps(mock)[2:] == ["222222"]


def record_outcome(db, job_id, token, status, **fields):
    outcome = {"job_id": str(job_id), "token": str(token), "status": status, "retry_charged": True,
               "attempts": [], "job_data": {"scrubbed": True}, **fields}
    return db.execute("select recorded from mysmshook.record_outcomes(%s)", (Jsonb([outcome]),)).fetchone()[0]


@pytest.mark.single_host("records an outcome through SQL")
def test_a_late_sent_answer_completes_a_job_failed_since_and_redrive_leaves_it(db):
    """Worker A sends, then stalls past its lease; worker B takes the job over and fails it
    (keeping its code for a redrive). A's answer, "sent", arrives last: the job is recorded as
    sent, its code copy dropped, and a redrive does not send it a second time."""
    enqueue(db, "send_sms", sms_event("+12125550123"))
    first, second = uuid.uuid4(), uuid.uuid4()
    (job_id,) = db.execute("select job_id from mysmshook.claim_jobs(1, '1 minute', %s)", (first,)).fetchone()
    db.execute("update mysmshook.job_queue set locked_until = now() - interval '1 second'")
    assert db.execute("select mysmshook.rescue_expired_leases()").fetchone()[0] == 1
    db.execute("select mysmshook.claim_jobs(1, '1 minute', %s)", (second,))
    assert record_outcome(db, job_id, second, "failed", error="gateway: HTTP 503",
                          fallback_data={"to": "+12125550123", "code": "482913"}) == "recorded"
    assert record_outcome(db, job_id, first, "completed", provider="gateway", message_id="m-1") == "late"
    (job,) = jobs(db)
    assert (job["status"], job["provider"], job["provider_message_id"], job["fallback_data"]) == (
        "completed", "gateway", "m-1", None)
    assert db.execute("select * from mysmshook.redrive()").fetchall() == []
    with pytest.raises(psycopg.Error, match="cannot be sent again: it was already sent"):
        db.execute("select mysmshook.retry_job(%s)", (job_id,))


def test_no_worker_run_waits_on_an_operators_open_transaction(cluster, db, mock):
    """An operator's redrive holds a failed job whose code has expired, in a transaction left
    open; the worker's sweep of expired code copies skips that row instead of waiting for it."""
    failed_job(db, mock)
    db.execute("update mysmshook.job_queue set expires_at = now() - interval '1 second'")
    operator = cluster.connect(autocommit=False)
    worker = cluster.connect()
    try:
        (result,) = operator.execute("select result from mysmshook.redrive()").fetchone()
        assert result.startswith("refused: its code expired")
        worker.execute("set statement_timeout = '5s'")
        run_worker(worker)  # would wait on the operator's row lock, and time out
        assert jobs(db)[0]["fallback_data"] is not None  # left for the next run
        operator.rollback()
        run_worker(worker)
        assert jobs(db)[0]["fallback_data"] is None
    finally:
        operator.close()
        worker.close()


def test_a_late_outcome_does_not_wait_for_an_operator_holding_its_job(cluster, db, mock):
    """A job's lease lapsed and it was put back in line while its request was out; an operator's
    retry_job locks it and leaves the transaction open. The worker's answer comes back late: it
    used to wait for that transaction, and nothing else went out meanwhile. Now the worker keeps
    that outcome, sends the next job, and records the kept one once the operator is done: the
    code went out once."""
    mock.responder = lambda req: (time.sleep(1.0), ok_json({"code": "ok"}))[1]
    gateway(db, mock)
    set_chain(db, "sms", ["gateway"])
    enqueue_many(db, 1)
    [held] = [j["job_id"] for j in jobs(db)]
    worker = cluster.connect()
    operator = cluster.connect(autocommit=False)
    run = threading.Thread(target=run_worker, args=(worker, "3 seconds"))
    status = lambda job_id: db.execute("select status from mysmshook.job_queue where job_id = %s",
                                       (job_id,)).fetchone()[0]
    try:
        run.start()
        deadline = time.monotonic() + 5
        while status(held) != "running" and time.monotonic() < deadline:
            time.sleep(0.02)
        # What a rescue by another worker does once the lease has lapsed.
        db.execute("update mysmshook.job_queue set status = 'pending', locked_by = null, locked_until = null")
        assert operator.execute("select mysmshook.retry_job(%s)", (held,)).fetchone() == ("pending",)
        enqueue_many(db, 1, first=2)
        [other] = [j["job_id"] for j in jobs(db) if j["job_id"] != held]
        deadline = time.monotonic() + 3
        while status(other) != "completed" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert status(other) == "completed", "the worker waited for the operator's transaction"
        assert status(held) == "pending"
        operator.commit()
        run.join(timeout=6)
        assert not run.is_alive()
        [job] = [j for j in jobs(db) if j["job_id"] == held]
        assert job["status"] == "completed" and mock.count() == 2
        assert [a.get("late") for a in job["attempts"] if a["result"] == "sent"] == [True]
    finally:
        operator.rollback()
        operator.close()
        run.join()
        worker.close()


def test_a_job_paused_on_a_pause_that_is_gone_goes_back_in_line(db):
    """A pause lifted where its trigger could not see the job (a REPEATABLE READ resume racing a
    worker's outcome, a replica applying the delete): the next worker run heals it."""
    enqueue_many(db, 1)
    db.execute("update mysmshook.job_queue set status = 'paused', paused_on = 'route:sms'")
    run_worker(db)
    (job,) = jobs(db)
    assert job["status"] == "completed" and job["paused_on"] is None


def metrics(db, recent="15 minutes"):
    cur = db.cursor(row_factory=psycopg.rows.dict_row)
    rows = cur.execute("select * from mysmshook.metrics(%s::interval)", (recent,)).fetchall()
    return {(r["channel"], r["route"], r["provider"]): r for r in rows}


def test_metrics_count_jobs_requests_failures_and_latencies_per_route_and_provider(db, mocks):
    failing = mocks(lambda req: ok_json({"error": "bad key"}, status=401))

    def slow(req):
        time.sleep(0.3)  # far from the refusals' latency, even on a loaded machine
        return ok_json({"code": "ok"})

    working = mocks(slow)
    gateway(db, failing, "first")
    gateway(db, working, "second")
    set_chain(db, "sms", ["first", "second"])
    enqueue_many(db, 4)
    run_worker(db)  # 4 completed by 'second', each after 'first' refused it
    set_chain(db, "sms", ["first"])
    enqueue_many(db, 1, first=10)
    run_worker(db)  # failed
    enqueue_many(db, 2, first=20)
    # Queued 30 s ago; its scheduled_at is the start of its 5-minute window, earlier still.
    db.execute("update mysmshook.job_queue set created_at = now() - interval '30 seconds', "
               "scheduled_at = now() - interval '200 seconds' where status = 'pending'")
    db.execute("update mysmshook.job_queue set retry_count = 1 "
               "where job_id = (select job_id from mysmshook.job_queue where status = 'pending' limit 1)")
    db.execute("update mysmshook.job_queue set delivered_at = now() "
               "where job_id = (select job_id from mysmshook.job_queue where status = 'completed' limit 1)")

    m = metrics(db)
    # The failed job counts under the provider it was last tried on.
    assert set(m) == {("sms", "sms", "second"), ("sms", "sms", "first"), ("sms", None, None)}
    sent, tried, waiting = m[("sms", "sms", "second")], m[("sms", "sms", "first")], m[("sms", None, None)]
    assert (sent["completed"], sent["delivered"], sent["requests"], sent["success_rate"]) == (4, 1, 4, 1.0)
    assert (tried["requests"], tried["provider_failures"], tried["completed"], tried["failed"],
            tried["success_rate"]) == (5, 5, 0, 1, 0.0)
    assert (waiting["pending"], waiting["retries_waiting"]) == (2, 1)
    assert 29 < waiting["oldest_due_seconds"] < 60  # due for 30 s
    p50, p95, p99 = sent["request_latency_ms"]
    assert 300 <= p50 <= p95 <= p99 < 1500
    assert len(sent["queue_latency_ms"]) == 3 and 0 <= sent["queue_latency_ms"][0] < 10_000
    assert tried["request_latency_ms"][0] < 300

    # Outside the recent period only the live queue remains.
    db.execute("update mysmshook.job_queue set finished_at = finished_at - interval '1 hour', "
               "attempts = (select jsonb_agg(a || jsonb_build_object('at', now() - interval '1 hour')) "
               "            from jsonb_array_elements(attempts) a) where finished_at is not null")
    assert set(metrics(db)) == {("sms", None, None)}


def test_metrics_prometheus_is_valid_exposition_text(db):
    enqueue_many(db, 2)
    run_worker(db)
    enqueue_many(db, 1, first=5)
    db.execute("select mysmshook.pause('route', 'sms')")
    run_worker(db)
    (text,) = db.execute("select mysmshook.metrics_prometheus()").fetchone()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    jobs_now = {}
    for sample in families["mysmshook_jobs"].samples:
        jobs_now[sample.labels["status"]] = jobs_now.get(sample.labels["status"], 0) + sample.value
    assert jobs_now == {"pending": 0, "paused": 1, "running": 0}
    finished = [s for s in families["mysmshook_jobs_finished"].samples
                if s.labels == {"channel": "sms", "route": "sms", "provider": "log", "status": "completed"}]
    assert [s.value for s in finished] == [2.0]
    assert {s.labels["quantile"] for s in families["mysmshook_request_latency_seconds"].samples} == {
        "0.5", "0.95", "0.99"}
    assert "# TYPE mysmshook_success_ratio gauge" in text


@pytest.mark.single_host("no worker runs")
def test_metrics_read_indexes_not_the_finished_rows(db):
    """With 200,000 finished rows older than the period, the plan reads the live statuses and
    the recent period from their partial indexes: no sequential scan of job_queue."""
    db.execute("""insert into mysmshook.job_queue (job_data, channel, action_type, status, route, provider,
                                                   finished_at, created_at)
                  select '{"scrubbed": true}', 'sms', 'sms', 'completed', 'sms', 'log',
                         now() - interval '2 days' - i * interval '1 second', now() - interval '2 days'
                    from generate_series(1, 200000) i""")
    enqueue_many(db, 3)
    db.execute("analyze mysmshook.job_queue")
    plans = []
    db.add_notice_handler(lambda notice: plans.append(notice.message_primary))
    db.execute("load 'auto_explain'")
    for name, value in [("log_min_duration", "0"), ("log_nested_statements", "on"), ("log_level", "notice")]:
        db.execute(f"set auto_explain.{name} = '{value}'")
    started = time.monotonic()
    rows = db.execute("select * from mysmshook.metrics()").fetchall()
    elapsed = time.monotonic() - started
    db.execute("set auto_explain.log_min_duration = -1")
    plan = "\n".join(plans)
    print(f"\nmetrics() with 200,000 old finished rows: {elapsed * 1000:.1f} ms\n{plan}")
    assert len(rows) == 1 and "job_queue_finished_idx" in plan and "job_queue_due_idx" in plan
    assert "Seq Scan on job_queue" not in plan


@pytest.mark.single_host("no worker runs")
def test_the_monitor_role_reads_figures_and_nothing_else(cluster, db):
    role(db, "exporter", "login")
    db.execute("select mysmshook.grant_monitor_access('exporter')")
    enqueue_many(db, 1)
    with cluster.connect(user="exporter") as conn:
        assert conn.execute("select sum(pending) from mysmshook.metrics()").fetchone()[0] == 1
        assert "mysmshook_jobs" in conn.execute("select mysmshook.metrics_prometheus()").fetchone()[0]
        for query in ["select * from mysmshook.job_queue", "select * from mysmshook.providers",
                      "call mysmshook.run_worker()"]:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(query)


@pytest.mark.single_host("the in-database worker's role; test_privileges.py covers the remote role")
def test_the_worker_role_delivers_without_reading_a_table(cluster, db, mock):
    role(db, "courier", "login")
    db.execute("select mysmshook.grant_worker_access('courier')")
    gateway(db, mock)
    set_chain(db, "sms", ["gateway"])
    enqueue_many(db, 2)
    with cluster.connect(user="courier") as conn:
        assert conn.execute("select current_user, usesuper from pg_user where usename = current_user"
                            ).fetchone() == ("courier", False)
        run_worker(conn)
        for query in ["select * from mysmshook.job_queue", "select settings from mysmshook.providers",
                      "select mysmshook.dequeue_and_run_jobs()",
                      "select mysmshook.send_sms('{}')", "select mysmshook.retry_job(gen_random_uuid())",
                      "select mysmshook.pause('channel', 'sms')", "select * from mysmshook.metrics()"]:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(query)
    assert status_counts(db) == {"completed": 2} and len(mock.requests) == 2


@pytest.mark.single_host("drives worker_begin and worker_step in a session")
def test_the_worker_role_cannot_have_codes_sent_again_by_rolling_back(cluster, db, mock):
    """A role that may run the worker sends only what a committed claim holds: stepping twice
    in one transaction, or after a claim that rolled back, sends nothing; the codes go out once
    each, later, from a run that commits."""
    role(db, "courier", "login")
    db.execute("select mysmshook.grant_worker_access('courier')")
    gateway(db, mock)
    set_chain(db, "sms", ["gateway"])
    enqueue_many(db, 2)
    with cluster.connect(user="courier", autocommit=False) as conn:
        conn.execute("select mysmshook.worker_begin(0)")
        conn.execute("select mysmshook.worker_step()")  # claims, uncommitted
        with pytest.raises(psycopg.Error, match="must run in its own transaction"):
            conn.execute("select mysmshook.worker_step()")
        conn.rollback()
    with cluster.connect(user="courier") as conn:
        conn.execute("select mysmshook.worker_begin(0)")
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("select mysmshook.worker_step(), 1 / (random() * 0)::int")  # the claim rolls back
        warnings = []
        conn.add_notice_handler(lambda notice: warnings.append(notice.message_primary))
        conn.execute("select mysmshook.worker_step()")
        assert any("was rolled back" in w for w in warnings), warnings
        assert mock.requests == [] and status_counts(db) == {"pending": 2}
        run_worker(conn)
    assert status_counts(db) == {"completed": 2}
    assert sorted(otps(mock)) == ["000001", "000002"]


@pytest.mark.single_host("pg_cron runs the in-database worker")
def test_schedule_runs_as_the_worker_role_and_keeps_cron_history_short(cluster, db):
    role(db, "nobody_special", "login")
    with pytest.raises(psycopg.Error, match="may not run the worker") as refused:
        db.execute("select mysmshook.schedule(run_as => 'nobody_special')")
    assert "grant_worker_access" in refused.value.diag.message_hint
    role(db, "courier_nologin", "nologin")
    db.execute("select mysmshook.grant_worker_access('courier_nologin')")
    with pytest.raises(psycopg.Error, match="cannot log in"):
        db.execute("select mysmshook.schedule(run_as => 'courier_nologin')")

    role(db, "courier", "login")
    db.execute("select mysmshook.grant_worker_access('courier')")
    try:
        (job_id,) = db.execute("select mysmshook.schedule(run_as => 'courier')").fetchone()
        # Scheduling again (as another owner) replaces the job instead of adding one.
        (job_id,) = db.execute("select mysmshook.schedule(run_as => 'courier')").fetchone()
        owners = dict(db.execute("select jobname, username from cron.job").fetchall())
        assert owners == {"mysmshook-deliver": "courier", "mysmshook-housekeeping": "courier"}
        # Another job that merely mentions mysmshook is not mysmshook's: its history stays.
        (other,) = db.execute("select cron.schedule('someone-else', '0 0 1 1 *', "
                              "'select count(*) from mysmshook.metrics()')").fetchone()
        for jobid, username, age in [(job_id, "courier", "3 days"), (job_id, "courier", "1 hour"),
                                     (other, "postgres", "3 days")]:
            db.execute("""insert into cron.job_run_details (jobid, runid, job_pid, database, username, command,
                                                            status, start_time, end_time)
                          values (%s, nextval('cron.runid_seq'), 0, 'postgres', %s, 'x', 'succeeded',
                                  now() - %s::interval, now() - %s::interval)""", (jobid, username, age, age))
        with cluster.connect(user="courier") as conn:
            assert conn.execute("select mysmshook.prune_cron_history()").fetchone()[0] == 1
        left = db.execute("select jobid, end_time < now() - interval '1 day' from cron.job_run_details "
                          "where jobid in (%s, %s) order by 1, 2", (job_id, other)).fetchall()
        assert left == sorted([(job_id, False), (other, True)])
        db.execute("select cron.unschedule('someone-else')")
    finally:
        db.execute("select mysmshook.unschedule()")
        db.execute("delete from cron.job_run_details")
    assert db.execute("select count(*) from cron.job").fetchone()[0] == 0
