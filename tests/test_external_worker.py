"""mysmshook-worker, the delivery engine outside PostgreSQL: it connects as a role given
grant_worker_access(role, remote => true), delivers with the in-database worker's guarantees,
shares a queue with it, stops cleanly on SIGTERM, and refuses clearly what it cannot use."""

import collections
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from psycopg.types.json import Jsonb

from conftest import (REPO, enqueue_many, free_port, jobs, pgbouncer_before, requests_per_job, seed, slow_ok,
                      status_counts, unanswered_jobs, use_webhook)
from mock_provider import ok_json

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BINARY = REPO / "target" / "release" / "mysmshook-worker"
ROLE = "courier_remote"


@pytest.fixture(scope="module")
def remote_role(cluster):
    with cluster.connect() as admin:
        admin.execute(f"create role {ROLE} login")
        admin.execute(f"select mysmshook.grant_worker_access('{ROLE}', remote => true)")
    yield ROLE
    with cluster.connect() as admin:
        admin.execute(f"drop owned by {ROLE}")
        admin.execute(f"drop role {ROLE}")


def url(cluster, user=ROLE, dbname="postgres"):
    return f"postgres://{user}@127.0.0.1:{cluster.port}/{dbname}?sslmode=disable"


class External:
    """A mysmshook-worker process; its log lines are kept."""

    def __init__(self, cluster, *flags, user=ROLE, dbname="postgres", database_url=None):
        self.proc = subprocess.Popen(
            [BINARY, "--database-url", database_url or url(cluster, user, dbname), "--allow-http-loopback",
             "--retry-base", "50ms", *flags],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def stop(self, timeout=30):
        """SIGTERM, then the exit status and the log."""
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out

    def kill(self):
        self.proc.kill()
        self.proc.communicate(timeout=10)


def run_once(cluster, *flags):
    """One run of one batch (--run-for 0); it must exit 0."""
    worker = External(cluster, "--run-for", "0", *flags)
    out, _ = worker.proc.communicate(timeout=30)
    assert worker.proc.returncode == 0, out


def wait_until(predicate, timeout, interval=0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def test_an_external_worker_delivers_each_job_once_and_stops_on_sigterm(cluster, db, mock, remote_role):
    use_webhook(db, mock.url, SECRET)
    worker = External(cluster, "--concurrency", "8")
    try:
        enqueue_many(db, 300)
        assert wait_until(lambda: status_counts(db) == {"completed": 300}, 60), status_counts(db)
    finally:
        code, log = worker.stop()
    assert code == 0, log
    assert "stopped" in log
    per_job = requests_per_job(mock)
    assert len(per_job) == 300 and set(per_job.values()) == {1}
    # Attempts name the worker process, as the in-database worker names its backend.
    (workers,) = db.execute("select count(distinct a->>'worker') from mysmshook.job_queue, "
                            "jsonb_array_elements(attempts) a").fetchone()
    assert workers == 1
    # A code reaches no log line; recipients are masked.
    assert "12125000001" not in log and "000001" not in log.replace("12125", "")


@pytest.mark.slow
def test_sigterm_mid_batch_finishes_what_is_in_flight_and_gives_back_the_rest(cluster, db, mock, remote_role):
    """Nothing lost, nothing sent twice, exit 0 within the lease; what it had not started waits
    uncharged for the next worker."""
    use_webhook(db, mock.url, SECRET)
    mock.responder = slow_ok(0.5)
    enqueue_many(db, 60)
    worker = External(cluster, "--concurrency", "4", "--lease", "10s")
    assert wait_until(lambda: mock.count() >= 4, 20)
    started = time.monotonic()
    code, log = worker.stop()
    assert code == 0, log
    assert time.monotonic() - started < 10
    counts = status_counts(db)
    assert set(counts) <= {"completed", "pending"}, counts
    # Given back uncharged: no retry, no rescue, no attempt.
    (charged,) = db.execute("""select count(*) from mysmshook.job_queue where status = 'pending'
                                and (retry_count > 0 or rescues > 0 or attempts <> '[]')""").fetchone()
    assert charged == 0
    assert set(requests_per_job(mock).values()) == {1}
    assert len(requests_per_job(mock)) == counts["completed"]
    # The next worker sends the rest, once each.
    mock.responder = lambda req: ok_json({"code": "ok"})
    worker = External(cluster, "--concurrency", "8")
    try:
        assert wait_until(lambda: status_counts(db) == {"completed": 60}, 60), status_counts(db)
    finally:
        worker.stop()
    per_job = requests_per_job(mock)
    assert len(per_job) == 60 and set(per_job.values()) == {1}


@pytest.mark.slow
def test_external_and_in_database_workers_share_a_queue(cluster, db, mock, remote_role):
    """Four external workers and two in-database runs on one queue: every job claimed and sent
    once, by workers of both kinds."""
    use_webhook(db, mock.url, SECRET)
    externals = [External(cluster, "--concurrency", "4") for _ in range(4)]
    internal = [subprocess.Popen(["psql", cluster.dsn(), "-qc", "call mysmshook.run_worker('20 seconds')"])
                for _ in range(2)]
    try:
        time.sleep(1)
        enqueue_many(db, 2000)
        assert wait_until(lambda: status_counts(db) == {"completed": 2000}, 120), status_counts(db)
    finally:
        results = [w.stop() for w in externals]
        for p in internal:
            p.wait(timeout=60)
    assert all(code == 0 for code, _ in results), results
    per_job = requests_per_job(mock)
    assert len(per_job) == 2000
    assert {job for job, n in per_job.items() if n > 1} <= unanswered_jobs(db)
    external_pids = {w.proc.pid for w in externals}
    senders = collections.Counter(
        int(r[0]) in external_pids
        for r in db.execute("""select a->>'worker' from mysmshook.job_queue, jsonb_array_elements(attempts) a
                                where a->>'worker' is not null"""))
    assert senders[True] > 0 and senders[False] > 0, senders  # both kinds sent


@pytest.mark.slow
def test_kill_9_mid_batch_loses_nothing(cluster, db, mock, remote_role):
    """A worker killed mid-batch: its jobs are rescued when the lease passes and sent by the
    next; only a job whose request had gone out may go out twice."""
    use_webhook(db, mock.url, SECRET)
    mock.responder = slow_ok(0.3)
    enqueue_many(db, 40)
    worker = External(cluster, "--concurrency", "4", "--lease", "3s")
    assert wait_until(lambda: mock.count() >= 6, 20)
    worker.kill()
    mock.responder = lambda req: ok_json({"code": "ok"})
    worker = External(cluster, "--concurrency", "8", "--lease", "3s")
    try:
        assert wait_until(lambda: status_counts(db) == {"completed": 40}, 60), status_counts(db)
    finally:
        worker.stop()
    per_job = requests_per_job(mock)
    assert len(per_job) == 40
    assert {job for job, n in per_job.items() if n > 1} <= unanswered_jobs(db)


@pytest.mark.parametrize("case", ["wrong password", "unknown role", "unreachable host", "no extension", "no grant"])
def test_what_it_cannot_use_is_a_clear_error_and_a_nonzero_exit(cluster, db, remote_role, case):
    hba = Path(cluster.dir) / "data" / "pg_hba.conf"
    trusting = hba.read_text()
    if case == "wrong password":
        # The suite's cluster trusts 127.0.0.1: this one role must give its password.
        db.execute("drop role if exists courier_pw")
        db.execute("create role courier_pw login password 'right'")
        db.execute("select mysmshook.grant_worker_access('courier_pw', remote => true)")
        hba.write_text("host all courier_pw 127.0.0.1/32 scram-sha-256\n" + trusting)
        db.execute("select pg_reload_conf()")
    if case == "no extension":
        db.execute("drop database if exists worker_empty")
        db.execute("create database worker_empty")
    if case == "no grant":
        db.execute("drop role if exists courier_plain")
        db.execute("create role courier_plain login")
        db.execute("select mysmshook.grant_worker_access('courier_plain')")  # not remote
    target = {"wrong password": (f"postgres://courier_pw:wrong@127.0.0.1:{cluster.port}/postgres?sslmode=disable",
                                 'password authentication failed for user "courier_pw"'),
              "unknown role": (url(cluster, user="nobody_here"), 'role "nobody_here" does not exist'),
              "unreachable host": (f"postgres://{ROLE}@127.0.0.1:1/postgres?sslmode=disable", "could not connect"),
              "no extension": (url(cluster, dbname="worker_empty"), "no mysmshook schema"),
              "no grant": (url(cluster, user="courier_plain"), "grant_worker_access")}[case]
    try:
        started = time.monotonic()
        done = subprocess.run([BINARY, "--database-url", target[0]], capture_output=True, text=True, timeout=30)
        assert done.returncode != 0
        assert target[1] in done.stderr, done.stderr
        assert time.monotonic() - started < 10  # no busy loop, no endless retry
    finally:
        if case == "wrong password":
            hba.write_text(trusting)
            db.execute("select pg_reload_conf()")
            db.execute("drop owned by courier_pw")
            db.execute("drop role courier_pw")
    if case == "no grant":
        db.execute("drop owned by courier_plain")
        db.execute("drop role courier_plain")
    if case == "no extension":
        db.execute("drop database worker_empty")


def test_a_remote_role_cannot_prune_history_it_may_not_choose(cluster, db, remote_role):
    """The retention is the database's (mysmshook.retention), never the caller's: a worker role
    that lowers it in its own session prunes nothing younger than an hour."""
    enqueue_many(db, 2)
    db.execute("update mysmshook.job_queue set status = 'completed', finished_at = now() - interval '10 minutes'")
    with cluster.connect(user=ROLE) as remote:
        with pytest.raises(Exception):  # no parameter to pass
            remote.execute("select mysmshook.worker_housekeeping('0 seconds'::interval)")
    with cluster.connect(user=ROLE) as remote:
        remote.execute("set mysmshook.retention = '0'")
        remote.execute("select mysmshook.worker_housekeeping()")
    assert status_counts(db) == {"completed": 2}


@pytest.mark.slow
def test_postgres_restarted_under_running_workers(cluster, db, mock, remote_role):
    """pg_ctl stop -m immediate and start again while two external workers are mid-batch: they
    connect again and finish; nothing is lost, and only a request whose answer was never seen
    goes out twice."""
    use_webhook(db, mock.url, SECRET)
    mock.responder = slow_ok(0.2)
    enqueue_many(db, 80)
    workers = [External(cluster, "--concurrency", "4", "--lease", "3s") for _ in range(2)]
    try:
        assert wait_until(lambda: mock.count() >= 10, 20)
        subprocess.run([REPO / "scripts" / "cluster.sh", "crash", cluster.dir], check=True)
        with cluster.connect() as conn:
            assert wait_until(lambda: status_counts(conn) == {"completed": 80}, 90), status_counts(conn)
            unanswered = unanswered_jobs(conn)
    finally:
        results = [w.stop() for w in workers]
    assert all(code == 0 for code, _ in results), results
    assert any("connecting again" in log for _, log in results)
    per_job = requests_per_job(mock)
    assert len(per_job) == 80
    assert {job for job, n in per_job.items() if n > 1} <= unanswered


def test_a_terminated_connection_is_opened_again(cluster, db, mock, remote_role):
    """pg_terminate_backend of the worker's session: it connects again and delivers."""
    use_webhook(db, mock.url, SECRET)
    worker = External(cluster, "--concurrency", "2")
    try:
        enqueue_many(db, 5)
        assert wait_until(lambda: status_counts(db) == {"completed": 5}, 20)
        (terminated,) = db.execute("select count(pg_terminate_backend(pid)) from pg_stat_activity "
                                   "where usename = %s", (ROLE,)).fetchone()
        assert terminated == 1
        enqueue_many(db, 5, first=100)
        assert wait_until(lambda: status_counts(db) == {"completed": 10}, 20), status_counts(db)
    finally:
        code, log = worker.stop()
    assert code == 0, log
    assert "connecting again" in log
    assert set(requests_per_job(mock).values()) == {1}


@pytest.fixture
def pgbouncer(cluster, remote_role):
    with pgbouncer_before(cluster, "postgres", ROLE) as database_url:
        yield database_url


def test_the_databases_accepted_number_prefixes_hold_unless_it_is_given_its_own(cluster, db, mock, remote_role):
    """mysmshook.accepted_number_prefixes set for the database, where the hook reads it, is the
    worker's too, as for a worker inside the database; --accepted-number-prefixes replaces it."""
    use_webhook(db, mock.url, SECRET)
    event = seed("sms_seed.json")  # +1333363128: +1 and only nine digits, valid only by prefix
    db.execute("alter database postgres set mysmshook.accepted_number_prefixes = '+1333'")
    try:
        db.execute("set mysmshook.accepted_number_prefixes = '+1333'")  # this session predates it
        db.execute("select mysmshook.send_sms(%s)", (Jsonb(event),))
        run_once(cluster)
        assert [(j["status"], j["last_error"]) for j in jobs(db)] == [("completed", None)]
        assert mock.count() == 1

        db.execute("truncate mysmshook.job_queue")
        event["user"]["id"] = "another-user"
        db.execute("select mysmshook.send_sms(%s)", (Jsonb(event),))
        run_once(cluster, "--accepted-number-prefixes", "+44")
        [job] = jobs(db)
        assert job["status"] == "failed" and "not a valid number" in job["last_error"], job["last_error"]
        assert mock.count() == 1
    finally:
        db.execute("alter database postgres reset mysmshook.accepted_number_prefixes")
        db.execute("reset mysmshook.accepted_number_prefixes")


@pytest.mark.slow
def test_through_pgbouncer_in_transaction_mode(cluster, db, mock, pgbouncer):
    """Three workers share two server connections through PgBouncer (transaction pooling, no
    prepared statements): every job claimed and sent once, and they stop cleanly."""
    use_webhook(db, mock.url, SECRET)
    workers = [External(cluster, "--concurrency", "4", database_url=pgbouncer) for _ in range(3)]
    try:
        enqueue_many(db, 500)
        assert wait_until(lambda: status_counts(db) == {"completed": 500}, 90), status_counts(db)
    finally:
        results = [w.stop() for w in workers]
    assert all(code == 0 for code, _ in results), results
    assert not any("error" in log for _, log in results), results
    per_job = requests_per_job(mock)
    assert len(per_job) == 500 and set(per_job.values()) == {1}
    (backends,) = db.execute("select count(*) from pg_stat_activity where usename = %s", (ROLE,)).fetchone()
    assert backends <= 2  # the workers' sessions really were pooled


@pytest.fixture
def tls(cluster, tmp_path):
    """The cluster serves TLS with a certificate for 127.0.0.1 (not localhost), signed by a CA of
    the test's own; yields that CA's file and another CA's (which signed nothing here)."""
    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=tmp_path, check=True, capture_output=True)

    for ca in ("ca", "other_ca"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
                "-days", "2", "-subj", f"/CN=mysmshook test {ca}")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (tmp_path / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.crt", "-days", "2", "-extfile", "san.ext")
    data = Path(cluster.dir) / "data"
    owner = data.stat()
    for name in ("server.crt", "server.key"):
        shutil.copy(tmp_path / name, data / f"test_{name}")
        os.chown(data / f"test_{name}", owner.st_uid, owner.st_gid)
        (data / f"test_{name}").chmod(0o600)
    with cluster.connect() as admin:
        admin.execute("alter system set ssl_cert_file = 'test_server.crt'")
        admin.execute("alter system set ssl_key_file = 'test_server.key'")
        admin.execute("alter system set ssl = on")
        admin.execute("select pg_reload_conf()")
        assert wait_until(lambda: admin.execute("show ssl").fetchone()[0] == "on", 10)
    try:
        yield tmp_path / "ca.pem", tmp_path / "other_ca.pem"
    finally:
        with cluster.connect() as admin:
            for name in ("ssl", "ssl_cert_file", "ssl_key_file"):
                admin.execute(f"alter system reset {name}")
            admin.execute("select pg_reload_conf()")


def test_tls_as_libpq_spells_sslmode(cluster, db, mock, remote_role, tls):
    """verify-full with the right CA delivers over TLS; with another CA, or for a name the
    certificate does not carry, it is refused (exit 1, the reason); verify-ca accepts that name
    (the chain is what it checks); require encrypts whatever the certificate."""
    ca, other_ca = tls
    use_webhook(db, mock.url, SECRET)
    base = f"postgres://{ROLE}@127.0.0.1:{cluster.port}/postgres"
    worker = External(cluster, database_url=f"{base}?sslmode=verify-full&sslrootcert={ca}")
    try:
        enqueue_many(db, 3)
        assert wait_until(lambda: status_counts(db) == {"completed": 3}, 20), status_counts(db)
        (encrypted,) = db.execute("""select bool_and(s.ssl) from pg_stat_ssl s join pg_stat_activity a using (pid)
                                      where a.usename = %s""", (ROLE,)).fetchone()
        assert encrypted is True
    finally:
        code, log = worker.stop()
    assert code == 0, log

    def refused(database_url):
        done = subprocess.run([BINARY, "--database-url", database_url], capture_output=True, text=True, timeout=30)
        return done.returncode, done.stderr

    code, err = refused(f"{base}?sslmode=verify-full&sslrootcert={other_ca}")
    assert code == 1 and "could not connect" in err and "certificate" in err.lower(), err
    # The certificate names 127.0.0.1, not localhost: verify-full refuses the name, verify-ca
    # checks only the chain.
    other_name = f"postgres://{ROLE}@localhost:{cluster.port}/postgres"
    code, err = refused(f"{other_name}?sslmode=verify-full&sslrootcert={ca}")
    assert code == 1 and "not valid for name" in err.lower(), err
    worker = External(cluster, database_url=f"{other_name}?sslmode=verify-ca&sslrootcert={ca}")
    try:
        enqueue_many(db, 1, first=50)
        assert wait_until(lambda: status_counts(db) == {"completed": 4}, 20), status_counts(db)
    finally:
        assert worker.stop()[0] == 0
    # require: encrypted, any certificate.
    worker = External(cluster, database_url=f"{base}?sslmode=require")
    try:
        enqueue_many(db, 1, first=60)
        assert wait_until(lambda: status_counts(db) == {"completed": 5}, 20), status_counts(db)
    finally:
        assert worker.stop()[0] == 0


def test_metrics_and_health_endpoints(cluster, db, mock, remote_role):
    """--metrics-addr: /healthz answers 200 while the worker is connected and stepping, 503
    once it has lost the database; /metrics has the queue's figures and the process's own."""
    import urllib.error
    import urllib.request

    def get(path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return None, ""

    use_webhook(db, mock.url, SECRET)
    port = free_port()
    worker = External(cluster, "--metrics-addr", f"127.0.0.1:{port}")
    try:
        enqueue_many(db, 4)
        assert wait_until(lambda: status_counts(db) == {"completed": 4}, 20)
        assert wait_until(lambda: get("/healthz")[0] == 200, 10)
        # The process counts a delivery once its step has committed (just after the jobs show).
        assert wait_until(lambda: "mysmshook_worker_delivered_total 4" in get("/metrics")[1], 10)
        code, text = get("/metrics")
        assert code == 200
        assert 'mysmshook_jobs_finished{channel="sms",route="sms",provider="gateway",status="completed"} 4' in text, text
        assert "mysmshook_worker_delivered_total 4" in text
        assert "mysmshook_worker_connected 1" in text
        assert get("/nothing")[0] == 404
        # The database goes away: not healthy (the worker keeps trying to connect).
        db.execute("alter role courier_remote nologin")
        db.execute("select pg_terminate_backend(pid) from pg_stat_activity where usename = 'courier_remote'")
        assert wait_until(lambda: get("/healthz")[0] == 503, 20)
        assert "mysmshook_worker_reconnects_total" in get("/metrics")[1]
    finally:
        db.execute("alter role courier_remote login")
        code, log = worker.stop()
    assert code == 0 or "stopping" in log, log
