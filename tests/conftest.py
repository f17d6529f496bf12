"""Fixtures: one throwaway PostgreSQL 15 cluster with pg_cron and mysmshook for the session,
a clean queue and configuration for every test, and mock providers on 127.0.0.1."""

import collections
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import zlib
from pathlib import Path

import psycopg
import pytest
from psycopg.types.json import Jsonb

from mock_provider import MockProvider, ok_json

REPO = Path(__file__).resolve().parent.parent
SEEDS = REPO / "examples" / "events"
# The PostgreSQL major the suite runs against: 15 on the host, 17 in scripts/pg17-root.sh's root.
PG_MAJOR = int(os.environ.get("PG_MAJOR", "15"))


def pg_tool(tool):
    """The command line of a PostgreSQL client program of the major under test."""
    path = f"/usr/lib/postgresql/{PG_MAJOR}/bin/{tool}"
    return [path] if PG_MAJOR == 15 else [str(REPO / "scripts" / "pg17-root.sh"), "run", path]

# Settings the suite runs with: fast retries and timeouts so that faults resolve in seconds.
SUITE_SETTINGS = {
    "mysmshook.allow_http_loopback": "on",
    "mysmshook.log_sink": "on",
    "mysmshook.http_timeout": "1500ms",
    "mysmshook.retry_base": "1s",
    "mysmshook.poll_interval": "100ms",
    # A worker's lease lapses soon after it dies (raised to 4 s: twice a 1.5 s request, plus 1 s).
    "mysmshook.lease": "3s",
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, directory, port):
        self.dir, self.port = directory, port

    def dsn(self, user="postgres", dbname="postgres"):
        return f"host=127.0.0.1 port={self.port} user={user} dbname={dbname}"

    def connect(self, user="postgres", dbname="postgres", autocommit=True):
        return psycopg.connect(self.dsn(user, dbname), autocommit=autocommit)

    def log(self):
        return (Path(self.dir) / "postgres.log").read_text(errors="replace")


@contextlib.contextmanager
def started_cluster(prefix, preload=None):
    """A throwaway cluster as scripts/cluster.sh makes one (pg_cron preloaded, or the
    shared_preload_libraries given, nothing installed), stopped on the way out."""
    directory = tempfile.mkdtemp(prefix=prefix)
    os.chmod(directory, 0o755)
    port = free_port()
    env = os.environ if preload is None else dict(os.environ, PRELOAD=preload)
    subprocess.run([REPO / "scripts" / "cluster.sh", "start", directory, str(port)], check=True, env=env)
    try:
        yield Cluster(directory, port)
    finally:
        subprocess.run([REPO / "scripts" / "cluster.sh", "stop", directory], check=False)


@contextlib.contextmanager
def pgbouncer_before(cluster, dbname, role):
    """Debian's PgBouncer in transaction mode before the cluster's `dbname`, two server
    connections for any number of clients of `role`; yields the URL to give mysmshook-worker."""
    if not shutil.which("pgbouncer"):
        pytest.fail("pgbouncer is not installed (scripts/bootstrap.sh installs it)")
    port = free_port()
    # Not under pytest's own directory, which the postgres user cannot enter.
    tmp_path = Path(tempfile.mkdtemp(prefix="mysmshook-pgbouncer-"))
    tmp_path.chmod(0o777)
    (tmp_path / "users.txt").write_text(f'"{role}" ""\n')
    (tmp_path / "pgbouncer.ini").write_text(f"""[databases]
{dbname} = host=127.0.0.1 port={cluster.port} dbname={dbname}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {tmp_path}/users.txt
pool_mode = transaction
default_pool_size = 2
max_client_conn = 100
logfile = {tmp_path}/pgbouncer.log
pidfile = {tmp_path}/pgbouncer.pid
""")
    for name in ("users.txt", "pgbouncer.ini"):
        (tmp_path / name).chmod(0o644)
    user = ["-u", "postgres"] if os.geteuid() == 0 else []  # it refuses to run as root
    proc = subprocess.Popen(["pgbouncer", *user, str(tmp_path / "pgbouncer.ini")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 15
        while subprocess.run(["psql", f"host=127.0.0.1 port={port} user={role} dbname={dbname}", "-qAtc", "select 1"],
                             capture_output=True).returncode != 0:
            assert proc.poll() is None and time.monotonic() < deadline, \
                proc.stdout.read() if proc.poll() is not None else "pgbouncer did not answer"
            time.sleep(0.1)
        yield f"postgres://{role}@127.0.0.1:{port}/{dbname}?sslmode=disable"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(tmp_path)


@pytest.fixture(scope="session")
def cluster():
    with started_cluster("mysmshook-test-") as c:
        yield from _prepared(c)


def _prepared(c):
    with c.connect() as conn:
        (version,) = conn.execute("show server_version_num").fetchone()
        assert int(version) // 10000 == PG_MAJOR, f"PG_MAJOR={PG_MAJOR} but the server is {version}"
        # The roles a Supabase project has, created before the extension as on Supabase.
        conn.execute("create role supabase_auth_admin login noinherit")
        conn.execute("create role anon nologin")
        conn.execute("create role authenticated nologin")
        conn.execute("create role app_user login")
        conn.execute("create schema auth authorization supabase_auth_admin")
        conn.execute("alter role supabase_auth_admin set search_path = auth")
        conn.execute("create extension pg_cron")
        conn.execute("create extension pg_stat_statements")
        conn.execute("create extension mysmshook")
        conn.execute(f"create role {REMOTE_ROLE} login")
        conn.execute(f"select mysmshook.grant_worker_access('{REMOTE_ROLE}', remote => true)")
        for name, value in SUITE_SETTINGS.items():
            conn.execute(f"alter system set {name} = '{value}'")
        conn.execute("select pg_reload_conf()")
    time.sleep(0.2)
    yield c


@pytest.fixture
def db(cluster):
    """A superuser connection on a clean queue with the default (log) configuration."""
    with cluster.connect() as conn:
        reset(conn)
        yield conn


def reset(conn):
    """An empty queue and the default (log) configuration, in either install."""
    conn.execute("truncate mysmshook.job_queue, mysmshook.receipts, mysmshook.limit_counters")
    for table in ("limits", "geo_rules", "sms_prices", "pauses", "routes", "templates", "providers"):
        conn.execute(f"delete from mysmshook.{table}")
    conn.execute("""insert into mysmshook.routes (name, channel, position, providers)
                    values ('sms', 'sms', 1000, '{log}'), ('email', 'email', 1000, '{log}')""")


SQL_ONLY_OWNER = "sql_only_owner"
VERSION = re.search(r'(?m)^version = "(.*)"$', (REPO / "Cargo.toml").read_text()).group(1)
SQL_ONLY_INSTALL = REPO / "dist" / f"mysmshook--{VERSION}.sql"


def apply_sql_only_install(cluster, owner, dbname):
    """dist/'s install applied as README says: psql, one transaction, stopping at an error."""
    install = subprocess.run(pg_tool("psql") + ["-X", "--single-transaction", "-v", "ON_ERROR_STOP=1", "-q", "-d",
                                                cluster.dsn(user=owner, dbname=dbname), "-f", "-"],
                             input=SQL_ONLY_INSTALL.read_text(), capture_output=True, text=True)
    assert install.returncode == 0, install.stderr


@pytest.fixture(scope="session")
def sql_only_install(cluster):
    """The SQL-only install (dist/), applied with psql as README says, by a database owner
    that is not a superuser, next to the suite's extension, in a database whose default
    privileges grant everything new to Supabase's API roles and to PUBLIC. Made once; tests
    connect to it with sql_only_owner (the suite restarts the server now and then)."""
    with cluster.connect() as conn:
        conn.execute("drop database if exists sql_only_core")
        conn.execute(f"drop role if exists {SQL_ONLY_OWNER}")
        conn.execute(f"create role {SQL_ONLY_OWNER} login nosuperuser nocreaterole nocreatedb")
        conn.execute(f"create database sql_only_core owner {SQL_ONLY_OWNER}")
        # As on Supabase: the owner is a member of the API roles, and new objects are granted to
        # them by default (a platform's or a migration's ALTER DEFAULT PRIVILEGES).
        if not conn.execute("select from pg_roles where rolname = 'service_role'").fetchone():
            conn.execute("create role service_role nologin")
        conn.execute(f"grant anon, authenticated, service_role to {SQL_ONLY_OWNER}")
    with cluster.connect(dbname="sql_only_core") as conn:
        for kind in ("tables", "sequences", "functions", "schemas"):
            conn.execute(f"alter default privileges for role {SQL_ONLY_OWNER} grant all on {kind} "
                         "to anon, authenticated, service_role, public")
    apply_sql_only_install(cluster, SQL_ONLY_OWNER, "sql_only_core")
    with cluster.connect(user=SQL_ONLY_OWNER, dbname="sql_only_core") as owner:
        assert owner.execute("select rolsuper from pg_roles where rolname = current_user").fetchone() == (False,)
        owner.execute("select mysmshook.grant_worker_access(%s, remote => true)", [REMOTE_ROLE])
    yield "sql_only_core"
    with cluster.connect() as conn:
        conn.execute("drop database sql_only_core with (force)")
        conn.execute(f"drop owned by {SQL_ONLY_OWNER}")
        conn.execute(f"drop role {SQL_ONLY_OWNER}")


@pytest.fixture
def sql_only_owner(cluster, sql_only_install):
    """The SQL-only install's owner, connected for one test."""
    with cluster.connect(user=SQL_ONLY_OWNER, dbname=sql_only_install) as owner:
        yield owner


@pytest.fixture
def mock():
    m = MockProvider()
    yield m
    m.close()


def seed(name):
    return json.loads((SEEDS / name).read_text())


def add_provider(conn, name, kind, settings):
    conn.execute("insert into mysmshook.providers (name, kind, settings) values (%s, %s, %s)", (name, kind, Jsonb(settings)))


def set_chain(conn, channel, providers):
    """The channel's catch-all route tries `providers` in order."""
    conn.execute("update mysmshook.routes set providers = %s where name = %s", (list(providers), channel))


def use_webhook(conn, url, secret, name="gateway", channels=("sms", "email"), position=1, app_id="demo"):
    """Put a webhook provider at `url` at `position` of the channels' catch-all routes."""
    add_provider(conn, name, "webhook", {"url": url, "secret": secret, "app_id": app_id})
    for channel in channels:
        (chain,) = conn.execute("select providers from mysmshook.routes where name = %s", (channel,)).fetchone()
        chain = [p for p in chain if p != "log"][: position - 1] + [name]
        set_chain(conn, channel, chain)


# The hosts a delivery test runs on: the worker inside PostgreSQL (`call mysmshook.run_worker`)
# and mysmshook-worker, one run of it per run_worker call, as a role granted remote access.
HOSTS = ("in-database", "external")
WORKER_BINARY = REPO / "target" / "release" / "mysmshook-worker"
REMOTE_ROLE = "suite_remote_worker"
# The GUCs mysmshook-worker takes as MYSMSHOOK_<NAME> variables.
WORKER_SETTINGS = ("batch_size", "concurrency", "provider_share", "http_timeout", "lease", "retry_base",
                   "retry_max", "poll_interval", "allow_http_loopback", "log_sink", "accepted_number_prefixes",
                   "app_name")
# MYSMSHOOK_TEST_HOSTS: "both" (each test on each host), "alternate" (each test on one host, the
# two alternating through the suite: the quick path), or one host's name.
HOST_CHOICE = os.environ.get("MYSMSHOOK_TEST_HOSTS", "both")


class WorkerHost:
    """The host run_worker, deliver_due and BackgroundWorker use in the current test, and how
    many runs of mysmshook-worker it made."""
    current = "in-database"
    external_runs = 0


def pytest_generate_tests(metafunc):
    """Tests in a module marked both_hosts run on each host (HOST_CHOICE), unless marked
    single_host: they deliver nothing, or observe what only a backend has (its pid, its
    session, pg_cron's runs)."""
    if "worker_host" not in metafunc.fixturenames:
        return
    if metafunc.definition.get_closest_marker("both_hosts") is None or \
            metafunc.definition.get_closest_marker("single_host") is not None:
        return
    if HOST_CHOICE == "both":
        hosts = list(HOSTS)
    elif HOST_CHOICE == "alternate":
        hosts = [HOSTS[zlib.crc32(metafunc.definition.nodeid.encode()) % 2]]
    else:
        assert HOST_CHOICE in HOSTS, f"MYSMSHOOK_TEST_HOSTS={HOST_CHOICE}: both, alternate or one of {HOSTS}"
        hosts = [HOST_CHOICE]
    metafunc.parametrize("worker_host", hosts, indirect=True)


@pytest.fixture(autouse=True)
def worker_host(request):
    WorkerHost.current, WorkerHost.external_runs = getattr(request, "param", "in-database"), 0
    yield WorkerHost.current
    host, ran = WorkerHost.current, WorkerHost.external_runs
    WorkerHost.current = "in-database"
    if host == "external" and not ran:
        pytest.fail("ran no mysmshook-worker on the external host: mark it single_host")


def external_environment(conn, **settings):
    """mysmshook-worker's environment for the settings `conn`'s session would give a worker
    (ALTER SYSTEM and SET alike), as MYSMSHOOK_<NAME> variables; `settings` override them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYSMSHOOK_")}
    for name in WORKER_SETTINGS:
        # current_setting also reads a setting the session has not loaded the library for.
        (value,) = conn.execute("select current_setting(%s, true)", (f"mysmshook.{name}",)).fetchone()
        if value:
            env["MYSMSHOOK_" + name.upper()] = value
    for name, value in settings.items():
        env["MYSMSHOOK_" + name.upper()] = str(value)
    # The session's statement_timeout (SET, or the role's) holds for the worker's session too.
    (timeout,) = conn.execute("select current_setting('statement_timeout')").fetchone()
    options = "" if timeout == "0" else f"&options=-c%20statement_timeout%3D{timeout}"
    env["MYSMSHOOK_DATABASE_URL"] = (
        f"postgres://{REMOTE_ROLE}@{conn.info.host}:{conn.info.port}/{conn.info.dbname}?sslmode=disable{options}")
    return env


def run_external(conn, poll_for, env=None, started=lambda process: None):
    """One run of mysmshook-worker (`started` is given its process); its log. An AssertionError
    with the log if it exits non-zero."""
    WorkerHost.external_runs += 1
    (seconds,) = conn.execute("select extract(epoch from %s::interval)::float8", (poll_for,)).fetchone()
    with subprocess.Popen([WORKER_BINARY, "--run-for", f"{seconds}s"], env=env or external_environment(conn),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as process:
        started(process)
        _, log = process.communicate(timeout=seconds + 120)
    assert process.returncode == 0, f"mysmshook-worker exited {process.returncode}: {log}"
    return log


def run_worker(conn, poll_for="0 seconds"):
    """One run of the committing worker (at most one batch when poll_for is 0), on this test's
    host."""
    if WorkerHost.current == "external":
        run_external(conn, poll_for)
    else:
        conn.execute("call mysmshook.run_worker(%s::interval)", (poll_for,))


def due_jobs(conn):
    (due,) = conn.execute(
        "select count(*) from mysmshook.job_queue where status = 'pending' and scheduled_at <= now()").fetchone()
    return due


def deliver_due(conn):
    """Runs the worker until no job is due: everything queued now gets its attempt."""
    while True:
        run_worker(conn)
        if not due_jobs(conn):
            return


def jobs(conn, order="created_at"):
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    return cur.execute(f"select * from mysmshook.job_queue order by {order}").fetchall()


def wait_for_leases_to_lapse(conn):
    """Sleeps until every lease in the queue has run out (the worker may lengthen a short
    mysmshook.lease so that its slowest request always fits)."""
    (wait,) = conn.execute(
        "select extract(epoch from max(locked_until) - clock_timestamp()) from mysmshook.job_queue").fetchone()
    time.sleep(max(0.0, float(wait or 0)) + 0.2)


def make_due(conn):
    """Skip the backoff wait of pending retries."""
    conn.execute("update mysmshook.job_queue set scheduled_at = now() where status = 'pending'")


class BackgroundWorker:
    """The worker (deliver_due) on its own connection and thread, with session settings, so a test
    can terminate or cancel it mid-run. `error` holds what ended it, `ended_at` when, `ids` the
    worker ids its attempts carry. On the external host it runs mysmshook-worker with those
    settings, and `pid` (its backend's) is None."""

    def __init__(self, cluster, poll_for=None, **settings):
        """poll_for: one run_worker call with it; without, deliver_due."""
        self.poll_for, self.cluster = poll_for, cluster
        self.conn = cluster.connect()
        for name, value in settings.items():
            self.conn.execute(f"set mysmshook.{name} = '{value}'")
        self.conn.execute("load 'mysmshook'")
        for name, value in settings.items():  # refused values only warn: make sure they took
            assert self.conn.execute(f"show mysmshook.{name}").fetchone()[0] == str(value), name
        self.external = external_environment(self.conn) if WorkerHost.current == "external" else None
        self.pid = None if self.external else self.conn.execute("select pg_backend_pid()").fetchone()[0]
        self.ids = set() if self.external else {self.pid}
        self.logs, self.process, self.stopped = [], None, False
        self.error, self.ended_at = None, None
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self):
        try:
            if self.external:
                while True:
                    self.logs.append(run_external(self.conn, self.poll_for or "0 seconds", self.external,
                                                  started=self._started))
                    if self.poll_for is not None or self.stopped or not due_jobs(self.conn):
                        break
            elif self.poll_for is None:
                deliver_due(self.conn)
            else:
                self.conn.execute("call mysmshook.run_worker(%s::interval)", (self.poll_for,))
        except (psycopg.Error, AssertionError) as e:
            self.error = e
        self.ended_at = time.monotonic()

    def _started(self, process):
        self.process = process
        self.ids.add(process.pid)
        if self.stopped:
            process.terminate()

    def stop(self, db):
        """Ends the worker now: its backend terminated, or SIGTERM to mysmshook-worker."""
        if self.external:
            self.stopped = True
            if self.process:
                self.process.terminate()
        else:
            db.execute("select pg_terminate_backend(%s)", (self.pid,))

    def log(self):
        """What the worker logged: the server's log, or mysmshook-worker's."""
        return "".join(self.logs) if self.external else self.cluster.log()

    def join(self, timeout=10):
        self.thread.join(timeout=timeout)
        self.conn.close()


def slow_ok(seconds):
    def respond(req):
        time.sleep(seconds)
        return ok_json({"code": "ok"})

    return respond


def enqueue_many(conn, n, first=1):
    """n SMS jobs with distinct numbers (first, first + 1, ...), through the hook. Numbers are
    limited to 5 codes in 10 minutes by default: callers that enqueue again move `first`."""
    conn.execute(
        """select mysmshook.send_sms(jsonb_build_object(
               'user', jsonb_build_object('id', 'u' || i, 'phone', '12125' || lpad(i::text, 6, '0')),
               'sms', jsonb_build_object('otp', lpad((i %% 1000000)::text, 6, '0'))))
             from generate_series(%s::int, %s::int) i""",
        (first, first + n - 1),
    )


def unanswered_jobs(conn):
    """Jobs with a request whose answer the worker never saw (it timed out, the connection was
    cut) or whose lease lapsed: the provider may have sent them, so only these may go out twice."""
    return {str(r[0]) for r in conn.execute(
        """select job_id from mysmshook.job_queue
            where exists (select 1 from jsonb_array_elements(attempts) a
                           where a->>'error' = 'timed out' or a->>'error' like 'connection failed%'
                              or a->>'result' = 'lease_expired')""")}


def status_counts(conn):
    return dict(conn.execute("select status, count(*) from mysmshook.job_queue group by status").fetchall())


def requests_per_job(mock):
    return collections.Counter(r.headers["webhook-id"] for r in mock.requests)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds (scripts/test.sh -m 'not slow' skips them)")
    config.addinivalue_line("markers", "every_major: runs on every PostgreSQL major even where scripts/test.sh "
                                       "runs only the quick path (the majors after the first)")
    config.addinivalue_line("markers", "both_hosts: runs on the in-database worker and on mysmshook-worker")
    config.addinivalue_line("markers", "single_host(why): delivers nothing, or observes what only the in-database worker has")
