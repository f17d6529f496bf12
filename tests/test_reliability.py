"""Faults, hostile input and security, each produced for real against the test cluster.
RELIABILITY.md lists these cases with the figures they produced."""

import collections
import json
import os
import random
import ssl
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from conftest import (
    REMOTE_ROLE,
    REPO,
    BackgroundWorker,
    deliver_due,
    add_provider,
    enqueue_many,
    free_port,
    jobs,
    make_due,
    requests_per_job,
    run_worker,
    seed,
    set_chain,
    slow_ok,
    status_counts,
    unanswered_jobs,
    use_webhook,
    wait_for_leases_to_lapse,
)
from mock_provider import RESET, MockProvider, ok_json

pytestmark = pytest.mark.both_hosts

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SID = "AC0123456789abcdef0123456789abcdef"


def wait_until(predicate, timeout, step=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


# --- Crashes ------------------------------------------------------------------------------

def test_postgres_crash_mid_run_loses_nothing(cluster, db, mock):
    """pg_ctl stop -m immediate while a worker is mid-batch, then start again."""
    mock.responder = slow_ok(0.3)
    use_webhook(db, mock.url, SECRET)
    enqueue_many(db, 40)
    worker = BackgroundWorker(cluster, batch_size=10, concurrency=5, lease="2s")
    assert mock.wait_for(15)
    subprocess.run([REPO / "scripts" / "cluster.sh", "crash", cluster.dir], check=True)
    worker.join()
    assert isinstance(worker.error, psycopg.OperationalError)
    with cluster.connect() as conn:
        counts = status_counts(conn)
        in_flight = {str(j["job_id"]) for j in jobs(conn) if j["status"] == "running"}
        assert counts["completed"] >= 10 and len(in_flight) <= 10, counts
        wait_for_leases_to_lapse(conn)  # the lease of what was in flight
        mock.responder = lambda req: ok_json({"code": "ok"})
        deliver_due(conn)
        assert status_counts(conn) == {"completed": 40}
        unanswered = unanswered_jobs(conn)
    per_job = requests_per_job(mock)
    assert len(per_job) == 40
    repeated = {job for job, n in per_job.items() if n > 1}
    # Only the batch in flight can repeat, under the same idempotency key (webhook-id), or a
    # request that timed out on a loaded machine.
    assert repeated <= in_flight | unanswered, (repeated, in_flight)


# --- Misbehaving providers ----------------------------------------------------------------

def test_connection_reset_is_a_retry(db, mock):
    mock.responder = lambda req: RESET
    use_webhook(db, mock.url, SECRET)
    enqueue_many(db, 1)
    run_worker(db)
    [job] = jobs(db)
    assert job["status"] == "pending" and job["retry_count"] == 1
    assert "connection failed" in job["last_error"]


def test_provider_failing_forever_ends_failed_with_nothing_stuck(db, mock):
    mock.responder = lambda req: (500, {"content-type": "text/html"}, b"<html>Internal Server Error</html>")
    use_webhook(db, mock.url, SECRET)
    db.execute("set mysmshook.max_retries = 2")
    enqueue_many(db, 5)
    for _ in range(3):
        make_due(db)
        run_worker(db)
    assert status_counts(db) == {"failed": 5}
    assert mock.count() == 15


@pytest.mark.parametrize("kind", ["twilio", "resend"])
def test_garbage_2xx_counts_as_sent_without_a_message_id(db, mock, kind):
    """The provider accepted the request; sending again would deliver twice."""
    mock.responder = lambda req: (200, {"content-type": "application/json"}, b"{not json")
    if kind == "twilio":
        add_provider(db, "p", "twilio", {"account_sid": SID, "auth_token": "t", "from": "+15005550006", "base_url": mock.url})
        set_chain(db, "sms", ["p"])
        enqueue_many(db, 1)
    else:
        add_provider(db, "p", "resend", {"api_key": "re_1", "from": "a@b.io", "base_url": mock.url})
        set_chain(db, "email", ["p"])
        db.execute("select mysmshook.send_email(%s)", (Jsonb(seed("email_seed.json")),))
    run_worker(db)
    [job] = jobs(db)
    assert job["status"] == "completed" and job["provider_message_id"] is None


@pytest.mark.slow
def test_eight_workers_twenty_thousand_jobs_random_failures(cluster, db, mock):
    """Two pg_cron jobs and six external callers share 20,000 jobs while a fifth of all
    requests fail and a few are accepted only after the worker stopped waiting: every job ends
    once, completed or failed; a job is delivered twice only when its worker never saw the
    answer (a timeout: the provider may have sent it, so it is tried again, same webhook-id)."""
    rng = random.Random(20)
    lock = threading.Lock()
    delivered = []

    def flaky(req):
        with lock:
            draw = rng.random()
            if draw >= 0.2:
                delivered.append(req.headers["webhook-id"])
        if draw < 0.2:
            return 500, {}, b"flaky"
        if draw > 0.999:
            time.sleep(2)  # longer than http_timeout: accepted, but the worker has given up
        return ok_json({"code": "ok"})

    mock.responder = flaky
    use_webhook(db, mock.url, SECRET)
    cron_jobs = [db.execute("select mysmshook.schedule(job_name => %s)", (f"mysmshook-deliver-{n}",)).fetchone()[0]
                 for n in (1, 2)]
    try:
        # Both cron runs start at the next minute; enqueue once they poll.
        assert wait_until(lambda: db.execute(
            "select count(*) from cron.job_run_details where jobid = any(%s) and status = 'running'",
            (cron_jobs,)).fetchone()[0] == 2, 75, 0.5)
        started = time.monotonic()
        # The test is about ending every job once, not about speed: codes outlive a slow machine.
        db.execute("set mysmshook.sms_code_lifetime = '30min'")
        enqueue_many(db, 20000)
        workers = []

        errors = []

        def external():
            try:
                with cluster.connect() as conn:
                    conn.execute("set mysmshook.retry_base = '50ms'")
                    while conn.execute("select count(*) from mysmshook.job_queue where status in ('pending', 'running')").fetchone()[0]:
                        run_worker(conn, "1 second")
            except psycopg.Error as e:  # a run that failed rolled back outcomes: the test must say so
                errors.append(e)

        workers = [threading.Thread(target=external) for _ in range(6)]
        for t in workers:
            t.start()
        for t in workers:
            t.join(timeout=600)
        elapsed = time.monotonic() - started
    finally:
        for n in (1, 2):
            db.execute("select mysmshook.unschedule(%s)", (f"mysmshook-deliver-{n}",))
        db.execute("""select pg_terminate_backend(pid) from pg_stat_activity
                       where query like '%%run_worker(poll_for%%' and pid <> pg_backend_pid()""")
    counts = status_counts(db)
    print(f"\n20,000 jobs, 8 workers, 20% of requests failing: {elapsed:.1f}s, {counts}, {mock.count()} requests")
    assert errors == [], errors
    assert set(counts) <= {"completed", "failed"} and sum(counts.values()) == 20000
    completed = {str(r[0]) for r in db.execute("select job_id from mysmshook.job_queue where status = 'completed'")}
    # Jobs whose worker sent a request and never saw its answer: only these may repeat.
    unanswered = unanswered_jobs(db)
    repeated = {job for job, n in collections.Counter(delivered).items() if n > 1}
    print(f"{len(unanswered)} jobs had an unanswered request; {len(repeated)} were delivered twice")
    assert repeated and repeated <= unanswered, repeated - unanswered
    assert completed <= set(delivered) and set(delivered) - completed <= unanswered
    # A job fails only after max_retries + 1 failed attempts.
    assert db.execute("select count(*) from mysmshook.job_queue where status = 'failed' and retry_count <> max_retries").fetchone()[0] == 0
    (cron_deliveries,) = db.execute("select count(*) from cron.job_run_details where jobid = any(%s)", (cron_jobs,)).fetchone()
    assert cron_deliveries >= 2


@pytest.mark.single_host("no worker runs")
def test_schedule_without_pg_cron_preloaded_says_so(tmp_path):
    directory = tempfile.mkdtemp(prefix="mysmshook-nocron-")
    Path(directory).chmod(0o755)
    port = free_port()
    subprocess.run([REPO / "scripts" / "cluster.sh", "start", directory, str(port)], check=True, env=dict(os.environ, PRELOAD=""))
    try:
        with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute("create extension mysmshook")
            with pytest.raises(psycopg.errors.RaiseException, match="pg_cron is not preloaded"):
                conn.execute("select mysmshook.schedule()")
            # Delivery itself needs no pg_cron.
            conn.execute("set mysmshook.log_sink = on")
            conn.execute("select mysmshook.send_email(%s)", (Jsonb(seed("email_seed.json")),))
            conn.execute("call mysmshook.run_worker()")
            assert conn.execute("select status from mysmshook.job_queue").fetchone()[0] == "completed"
    finally:
        subprocess.run([REPO / "scripts" / "cluster.sh", "stop", directory], check=False)


def test_a_nul_in_a_providers_answer_loses_no_outcome(db, mock):
    """jsonb and text refuse U+0000. A message id or an error text carrying one used to fail the
    statement that records the whole group's outcomes: every answer of that step was lost and
    the sent codes went out again after the lease. Now each job is recorded once, the character
    replaced by U+FFFD."""
    answers = iter(range(1000))

    def respond(req):
        n = next(answers)
        if n == 0:
            return ok_json({"code": "ok", "message_id": "id\x00zero"})
        if n == 1:
            return ok_json({"code": "delivery_rejected", "description": "bad\x00number"}, status=400)
        return ok_json({"code": "ok", "message_id": f"id-{n}"})

    mock.responder = respond
    use_webhook(db, mock.url, SECRET)
    enqueue_many(db, 6)
    run_worker(db)
    assert status_counts(db) == {"completed": 5, "failed": 1}
    ids = {job["provider_message_id"] for job in jobs(db) if job["status"] == "completed"}
    assert "id\ufffdzero" in ids and len(ids) == 5
    [failed] = [job for job in jobs(db) if job["status"] == "failed"]
    assert "\x00" not in failed["last_error"] and "delivery_rejected: bad" in failed["last_error"]
    wait_for_leases_to_lapse(db)
    run_worker(db)
    assert mock.count() == 6  # nothing went out again


# --- Hostile input ------------------------------------------------------------------------

json_documents = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=50) | st.sampled_from(["12125550123", "+525512345678", "signup", "a@b.io", "<script>"]),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["user", "sms", "otp", "phone", "email", "email_data", "token",
                                       "token_hash", "email_action_type", "user_metadata", "site_url"])
                      | st.text(max_size=8), inner, max_size=5),
    max_leaves=20,
)

hostile_texts = st.one_of(
    json_documents.map(json.dumps),
    st.text(max_size=200),  # not JSON at all
    st.sampled_from([
        '{"user": {}, "sms": {"otp": "1\\u0000"}}',          # NUL: jsonb refuses it
        '{"user": {}, "sms": {"otp": "\\ud800"}}',           # lone surrogate
        '[' * 5000 + ']' * 5000,                             # deep nesting
        '{"user": {"phone": "1' + '2' * 100000 + '"}, "sms": {"otp": "123456"}}',  # huge
        '{"user": {"name": "<script>alert(1)</script>", "phone": "12125550123"}, "sms": {"otp": "123456"}}',
        '{"user": {"phone": 12125550123}, "sms": {"otp": "123456"}}',
    ]),
)


@pytest.mark.single_host("no worker runs")
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=hostile_texts, hook=st.sampled_from(["send_sms", "send_email"]))
def test_hooks_answer_hostile_input_cleanly(cluster, text, hook):
    """Whatever jsonb PostgreSQL accepts, the hook answers: `{}` with jobs queued, or a 400
    with nothing queued; never an exception (Auth turns one into a 500 at sign-in). Text that is
    not jsonb never reaches the hook: PostgreSQL refuses the cast first."""
    with cluster.connect(user="supabase_auth_admin") as conn, cluster.connect() as admin:
        try:
            admin.execute("select %s::jsonb", (text,))
        except psycopg.DataError:
            return  # not jsonb: the auth server could not have sent it
        (before,) = admin.execute("select count(*) from mysmshook.job_queue").fetchone()
        admin.execute("truncate mysmshook.limit_counters")
        (answer,) = conn.execute(f"select mysmshook.{hook}(%s::jsonb)", (text,)).fetchone()
        (after,) = admin.execute("select count(*) from mysmshook.job_queue").fetchone()
        if answer == {}:
            assert after > before
        else:
            assert after == before
            assert answer["error"]["http_code"] == 400 and answer["error"]["message"]
        admin.execute("delete from mysmshook.job_queue")


SMS_EVENT = {"user": {"id": "u", "phone": "12125550123"}, "sms": {"otp": "123456"}}
EMAIL_EVENT = {"user": {"id": "u", "email": "a@b.io", "new_email": "c@d.io"},
               "email_data": {"token": "123456", "token_hash": "abc", "email_action_type": "signup",
                              "site_url": "https://x.io", "redirect_to": "https://x.io/r"}}
MUTABLE_PATHS = [("user",), ("user", "phone"), ("user", "email"), ("user", "new_email"),
                 ("user", "user_metadata"), ("sms",), ("sms", "otp"), ("sms", "phone"), ("sms", "sms_type"),
                 ("email_data",), ("email_data", "token"), ("email_data", "token_hash"),
                 ("email_data", "email_action_type"), ("email_data", "site_url"),
                 ("email_data", "redirect_to"), ("metadata",)]


def _mutated(base, path, value):
    event = json.loads(json.dumps(base))
    target = event
    for key in path[:-1]:
        target = target.get(key) if isinstance(target, dict) else None
    if isinstance(target, dict):
        target[path[-1]] = value
    return event


@pytest.mark.single_host("no worker runs")
@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(hook=st.sampled_from(["send_sms", "send_email"]), path=st.sampled_from(MUTABLE_PATHS),
       value=json_documents.filter(lambda v: "\\u0000" not in json.dumps(v)))  # NUL: not jsonb
def test_a_valid_event_with_one_field_replaced_is_queued_well_formed_or_refused(cluster, hook, path, value):
    """One field of a valid event replaced by anything: the hook queues jobs whose recipient and
    code are well formed, or answers a 400 and queues nothing."""
    event = _mutated(SMS_EVENT if hook == "send_sms" else EMAIL_EVENT, path, value)
    with cluster.connect(user="supabase_auth_admin") as conn, cluster.connect() as admin:
        admin.execute("truncate mysmshook.job_queue, mysmshook.limit_counters")
        (answer,) = conn.execute(f"select mysmshook.{hook}(%s)", (Jsonb(event),)).fetchone()
        queued = admin.execute("select channel::text, job_data->>'to', job_data->>'code' "
                               "from mysmshook.job_queue").fetchall()
    if answer != {}:
        assert answer["error"]["http_code"] == 400 and answer["error"]["message"], answer
        assert queued == []
        return
    assert queued
    for channel, to, code in queued:
        if channel == "sms":
            assert to[0] == "+" and to[1:].isascii() and to[1:].isdigit(), to
        else:
            assert "@" in to and not any(ord(c) < 32 or c.isspace() for c in to), to
        assert code is None or (code.isascii() and code.isalnum()), code


def test_user_data_with_template_syntax_and_html_stays_data(db, mock):
    use_webhook(db, mock.url, SECRET)
    db.execute("""insert into mysmshook.templates (channel, action_type, subject, body, html)
                  values ('email', 'signup', 'Hi {{ .Data.name }}', 'Hi {{ .Data.name }}', '<p>Hi {{ .Data.name }}</p>')""")
    event = seed("email_seed.json")
    event["user"]["user_metadata"] = {"name": "{{ code }}{% raw %}<script>alert(1)</script>\r\nBcc: x@evil.io"}
    db.execute("select mysmshook.send_email(%s)", (Jsonb(event),))
    run_worker(db)
    body = mock.requests[0].json
    assert "305805" not in body["subject"] + body["html"]  # the user's {{ code }} was not evaluated
    assert "<script>" not in body["html"] and "&lt;script&gt;" in body["html"]
    assert "\r" not in body["subject"] and "\n" not in body["subject"]


@pytest.mark.single_host("no worker runs")
def test_line_breaks_in_provider_settings_are_refused(db):
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="control character"):
        add_provider(db, "evil", "resend", {"api_key": "re_1\r\nX-Injected: 1", "from": "a@b.io"})


# --- Security -----------------------------------------------------------------------------

def test_untrusted_tls_certificate_is_refused(db, tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-addext", "basicConstraints=critical,CA:FALSE"],
                   check=True, capture_output=True)
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        use_webhook(db, f"https://127.0.0.1:{server.server_port}/hook", SECRET)
        enqueue_many(db, 1)
        run_worker(db)
        [job] = jobs(db)
        assert job["status"] == "pending" and not received
        print(f"\nTLS refusal: {job['last_error']}")
        assert "connection failed" in job["last_error"] and "UnknownIssuer" in job["last_error"], job["last_error"]
    finally:
        server.shutdown()


ROLES = ["anon", "authenticated", "app_user", "supabase_auth_admin"]
ADMIN_STATEMENTS = [
    "select * from mysmshook.job_queue",
    "select * from mysmshook.providers",
    "select * from mysmshook.routes",
    "select * from mysmshook.templates",
    "select * from mysmshook.queue_status",
    "insert into mysmshook.providers (name, kind) values ('x', 'log')",
    "call mysmshook.run_worker()",
    "select mysmshook.dequeue_and_run_jobs()",
    "select mysmshook.worker_begin(0)",
    "select mysmshook.worker_step()",
    "select mysmshook.claim_jobs(1, '1s', gen_random_uuid())",
    "select mysmshook.renew_leases('{}', '1s')",
    "select mysmshook.release_jobs('{}', '{}')",
    "select mysmshook.rescue_expired_leases()",
    "select mysmshook.record_outcomes('[]')",
    "select mysmshook.prune_finished_jobs('1h')",
    "select mysmshook.config_fingerprint('{}')",
    "select mysmshook.schedule()",
    "select mysmshook.unschedule()",
    "select mysmshook.grant_hook_access('anon')",
    "select mysmshook.check_provider('log', '{}')",
    "select mysmshook.check_template('sms', 'sms', null, 'x', null)",
    "alter system set mysmshook.allow_http_loopback = on",
]


@pytest.mark.single_host("no worker runs")
@pytest.mark.parametrize("role", ROLES)
def test_no_other_role_reaches_data_admin_functions_or_settings(cluster, db, role):
    with cluster.connect(user="app_user" if role != "supabase_auth_admin" else role) as conn:
        if role in ("anon", "authenticated"):
            db.execute(f"grant {role} to app_user")
            conn.execute(f"set role {role}")
        try:
            for sql in ADMIN_STATEMENTS:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(sql)
        finally:
            if role in ("anon", "authenticated"):
                db.execute(f"revoke {role} from app_user")


def test_no_code_or_secret_in_query_statistics_or_logs(cluster, db, mock):
    mock.responder = lambda req: ok_json({"sid": "SM1", "status": "queued"}, status=201)
    add_provider(db, "twilio", "twilio", {"account_sid": SID, "auth_token": "tok_secret_4242", "from": "+15005550006",
                                          "base_url": mock.url})
    set_chain(db, "sms", ["twilio"])
    db.execute("select pg_stat_statements_reset()")
    event = seed("sms_auth.json")
    event["sms"]["otp"] = "937451"
    with cluster.connect(user="supabase_auth_admin") as conn:
        conn.execute('select "mysmshook"."send_sms"(%s)', (Jsonb(event),))
    run_worker(db)
    assert mock.count() == 1
    texts = " ".join(r[0] for r in db.execute("select query from pg_stat_statements"))
    assert "mysmshook.job_queue" in texts  # the extension's own statements are tracked...
    for secret in ["937451", "tok_secret_4242", "525512345678"]:
        assert secret not in texts  # ...with parameters, never values
    for secret in ["937451", "tok_secret_4242"]:
        assert secret not in cluster.log()
    [job] = jobs(db)
    assert "937451" not in json.dumps(job, default=str)


# --- Keeping the table healthy ------------------------------------------------------------

def test_retention_prunes_old_finished_jobs_only(db):
    enqueue_many(db, 6)
    run_worker(db)
    db.execute("update mysmshook.job_queue set finished_at = now() - interval '2 hours' "
               "where job_id in (select job_id from mysmshook.job_queue limit 4)")
    # A receipt goes with its pruned job; one of a kept job stays.
    db.execute("""insert into mysmshook.receipts (provider, message_id, event_id, status, outcome, job_id, applied_at)
                  select 'gateway', 'm-' || job_id, 'e-' || job_id, 'delivered', 'delivered', job_id, now()
                    from mysmshook.job_queue""")
    enqueue_many(db, 2)  # pending, untouched
    # The in-database worker reads its session's setting; mysmshook-worker's role, the database's.
    db.execute("set mysmshook.retention = '1h'")
    db.execute(f"alter role {REMOTE_ROLE} set mysmshook.retention = '1h'")
    try:
        run_worker(db)  # prunes first, then delivers the two
    finally:
        db.execute(f"alter role {REMOTE_ROLE} reset mysmshook.retention")
    assert status_counts(db) == {"completed": 4}
    (kept,) = db.execute("select count(*) from mysmshook.receipts r join mysmshook.job_queue j using (job_id)").fetchone()
    assert db.execute("select count(*) from mysmshook.receipts").fetchone() == (kept,) and kept == 2
    (old,) = db.execute("select count(*) from mysmshook.job_queue where finished_at < now() - interval '1 hour'").fetchone()
    assert old == 0


def test_a_code_past_its_lifetime_is_expired_not_sent(db, mock):
    use_webhook(db, mock.url, SECRET)
    db.execute("set mysmshook.sms_code_lifetime = '1s'")
    enqueue_many(db, 1)
    time.sleep(1.1)
    run_worker(db)
    [job] = jobs(db)
    assert job["status"] == "expired" and mock.count() == 0


@pytest.mark.single_host("no worker runs")
def test_hooks_cannot_be_redirected_through_search_path(cluster, db):
    """The hooks are SECURITY DEFINER without a SET search_path clause (for speed), so every name
    in their statement is qualified. A caller's search_path that puts a hostile schema first
    must change nothing."""
    db.execute("create schema evil")
    try:
        db.execute("""create function evil.hijack(timestamptz, interval) returns timestamptz
                      language plpgsql as $$ begin raise exception 'hijacked operator'; end $$""")
        db.execute("create operator evil.+ (leftarg = timestamptz, rightarg = interval, function = evil.hijack)")
        db.execute("create function evil.now() returns timestamptz language sql as $$ select 'infinity'::timestamptz $$")
        db.execute("create function evil.date_bin(interval, timestamptz, timestamptz) returns timestamptz "
                   "language plpgsql as $$ begin raise exception 'hijacked function'; end $$")
        db.execute("grant usage on schema evil to supabase_auth_admin")
        with cluster.connect(user="supabase_auth_admin") as conn:
            conn.execute("set search_path = evil, pg_catalog, auth")
            (answer,) = conn.execute("select mysmshook.send_sms(%s)", (Jsonb(seed("sms_auth.json")),)).fetchone()
        assert answer == {}
        (lifetime, due) = db.execute(
            "select expires_at - created_at, scheduled_at <= now() from mysmshook.job_queue").fetchone()
        assert round(lifetime.total_seconds()) == 60 and due
    finally:
        db.execute("drop schema evil cascade")
