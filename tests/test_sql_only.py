"""The SQL-only install (dist/, generated from the same sql/ as the extension): applied by a
database owner without superuser, it answers every hook event as the extension does, queues
the same jobs, refuses by the same rules, writes refusals to the server log, reads settings
that only the owner can change, and mysmshook-worker delivers its queue."""

import datetime
import json
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import psycopg
import pytest
from standardwebhooks.webhooks import Webhook as StandardWebhook
from twilio.request_validator import RequestValidator

from conftest import (REMOTE_ROLE, REPO, SQL_ONLY_INSTALL, SQL_ONLY_OWNER, VERSION, WORKER_BINARY, add_provider,
                      apply_sql_only_install, external_environment, started_cluster,
                      free_port, pg_tool, pgbouncer_before, requests_per_job, reset, run_external, use_webhook)
from mock_provider import ok_json
from test_providers import SID, TOKEN, add_twilio, mocks  # noqa: F401 (fixture)
from test_receipts import created

WEBHOOK_SECRET = "whsec_" + "c2VjcmV0LWZvci10aGUtc3FsLW9ubHktdGVzdA=="


@pytest.fixture
def core(sql_only_owner):
    return sql_only_owner


@pytest.fixture
def auth(cluster, core):
    """Supabase Auth's session on the SQL-only database: its role, its search_path = auth."""
    reset(core)
    core.execute("delete from mysmshook.settings")
    with cluster.connect(user="supabase_auth_admin", dbname="sql_only_core") as conn:
        yield conn


def sms(phone, otp="482913", user=None, ip="203.0.113.7"):
    return {"user": {"id": user or str(uuid.uuid4()), "phone": phone}, "sms": {"otp": otp, "phone": phone},
            "metadata": {"ip_address": ip}}


def email(address, action="signup"):
    return {"user": {"id": str(uuid.uuid4()), "email": address},
            "email_data": {"token": "123456", "token_hash": "abc", "redirect_to": "https://example.com/welcome",
                           "email_action_type": action, "site_url": "https://example.com"}}


def call(conn, hook, event):
    (answer,) = conn.execute(f"select mysmshook.{hook}(%s::jsonb)", [json.dumps(event)]).fetchone()
    return answer


JOB_FIELDS = ("channel, action_type, job_data, max_retries, round(extract(epoch from expires_at - created_at)), "
              "priority, status")


def jobs(conn):
    return conn.execute(f"select {JOB_FIELDS} from mysmshook.job_queue order by job_data::text").fetchall()


def test_the_hooks_call_no_sql_function_the_planner_does_not_inline(cluster, auth):
    """A SQL-language function that is not inlined is parsed and planned again at every call
    (PL/pgSQL plans once per session): on the sign-in path of the SQL-only install that cost
    more than half of the SMS hook. A well-formed event of each hook calls none."""
    with cluster.connect(dbname="sql_only_core") as conn:
        conn.execute("set track_functions = 'all'")
        calls = [("send_sms", sms("+14155550123")), ("send_sms", sms("+18762345678")),
                 ("send_email", email("person@example.com"))]
        for hook, event in calls:  # plans made; what planning folded is not a call at run time
            assert call(conn, hook, event) == {}

        def counts():  # calls not yet flushed to the statistics, this transaction's among them
            return {(name, language): n for name, language, n in conn.execute(
                "select p.proname, l.lanname, pg_stat_get_xact_function_calls(p.oid) "
                "from pg_proc p join pg_language l on l.oid = p.prolang "
                "where p.pronamespace = 'mysmshook'::regnamespace")}

        with conn.transaction():
            before = counts()
            for hook, event in calls:
                assert call(conn, hook, event) == {}
            called = {function for function, n in counts().items() if (n or 0) > (before[function] or 0)}
    assert {"phone_info", "setting", "enqueue"} <= {name for name, _ in called}, called  # the count works
    assert [name for name, language in called if language == "sql"] == [], called


def test_the_core_installs_without_superuser_and_answers_as_the_extension(cluster, db, core, auth):
    """Every event, valid or not, gets the same answer from both editions, and the same jobs."""
    events = [("send_sms", sms("+14155550123")), ("send_sms", sms("+525512345678")),
              ("send_sms", sms("+447400123456", otp="A1b2C3")), ("send_sms", sms("+1333363128")),
              ("send_sms", sms("12025550123")), ("send_sms", sms("+999123456")), ("send_sms", sms("+12")),
              ("send_sms", {"user": {}, "sms": {"otp": "1"}}), ("send_sms", {"sms": "x"}),
              ("send_email", email("person@example.com")), ("send_email", email("person@example.com", "recovery")),
              ("send_email", email("not an address")), ("send_email", email("a@b.c", "password_changed_notification"))]
    answers = {"{}": 0, "error": 0}
    with cluster.connect(user="supabase_auth_admin") as extension:
        for hook, event in events:
            answer = call(auth, hook, event)
            assert answer == call(extension, hook, event), (hook, event)
            answers["error" if "error" in answer else "{}"] += 1
    assert answers["{}"] >= 6 and answers["error"] >= 5, answers
    assert jobs(core) == jobs(db) and len(jobs(db)) == answers["{}"]


def test_a_geo_refusal_is_logged_with_a_fixed_prefix_and_outlives_the_rollback(cluster, core, auth):
    core.execute("insert into mysmshook.geo_rules (region, allow) values ('MX', false)")
    auth.execute("begin")
    answer = call(auth, "send_sms", sms("+525512345678", ip="198.51.100.9"))
    auth.execute("rollback")  # what Auth does with an error answer
    assert answer == {"error": {"http_code": 400, "message": "Codes cannot be sent to this phone number."}}
    assert jobs(core) == []
    deadline = time.time() + 5
    expected = '{"rule" : "geo", "to" : "+52******5678", "ip" : "198.51.100.9", "region" : "MX"}'
    while f"mysmshook refusal: {expected}" not in cluster.log() and time.time() < deadline:
        time.sleep(0.1)
    lines = [line for line in cluster.log().splitlines() if "mysmshook refusal: " in line]
    assert any(line.endswith(f"mysmshook refusal: {expected}") for line in lines), lines[-3:]
    assert not any("482913" in line for line in lines)  # never the code


def test_the_velocity_limit_refuses_the_sixth_code_to_one_number(core, auth):
    number = "+447400123999"
    answers = [call(auth, "send_sms", sms(number)) for _ in range(6)]
    assert answers[:5] == [{}] * 5
    assert answers[5]["error"]["http_code"] == 429
    assert len(jobs(core)) == 5


def test_settings_are_the_owners_rows_and_never_the_callers_session(core, auth):
    auth.execute("set mysmshook.max_retries = 50")  # a placeholder any session may set: ignored
    assert call(auth, "send_sms", sms("+14155550100")) == {}
    core.execute("insert into mysmshook.settings values ('max_retries', '7'), ('sms_code_lifetime', '5min')")
    assert call(auth, "send_sms", sms("+14155550101")) == {}
    rows = core.execute("select job_data ->> 'to', max_retries, round(extract(epoch from expires_at - created_at)) "
                        "from mysmshook.job_queue order by 1").fetchall()
    assert rows == [("+14155550100", 3, 60), ("+14155550101", 7, 300)]
    # Refused when written, with what would do.
    for name, value in [("max_retries", "101"), ("max_retries", "many"), ("schedule_window", "0"),
                        ("sms_code_lifetime", "soon"), ("email_code_lifetime", "99999999999 days"),
                        ("notification_lifetime", "-1 min"), ("no_such_setting", "1")]:
        with pytest.raises(psycopg.errors.InvalidParameterValue) as refused:
            core.execute("insert into mysmshook.settings values (%s, %s) "
                         "on conflict (name) do update set value = excluded.value", [name, value])
        assert name in str(refused.value)
    # The caller can neither read nor write them.
    for statement in ["select * from mysmshook.settings", "update mysmshook.settings set value = '0'",
                      "select mysmshook.setting('max_retries')"]:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            auth.execute(statement)


def test_accepted_prefixes_let_a_refused_number_through_in_both_places_it_is_read(core, auth, mock):
    """The hook and mysmshook-worker both read the owner's row (the worker refuses a number its
    own list does not accept, before any request)."""
    use_webhook(core, mock.url, WEBHOOK_SECRET)
    old_mexican_mobile = "+5215512345678"
    assert call(auth, "send_sms", sms(old_mexican_mobile))["error"]["http_code"] == 400
    core.execute("insert into mysmshook.settings values ('accepted_number_prefixes', '+521')")
    assert call(auth, "send_sms", sms(old_mexican_mobile)) == {}
    (region,) = core.execute("select job_data ->> 'region' from mysmshook.job_queue").fetchone()
    assert region == "MX"
    run_external(core, "1 second")
    assert core.execute("select status, last_error from mysmshook.job_queue").fetchall() == [("completed", None)]
    assert len(mock.requests) == 1


def test_the_install_passes_plpgsql_check(cron_cluster):
    """Where pg_cron is, as on hosted Supabase: its housekeeping functions name pg_cron's tables."""
    from test_lint import assert_clean
    with cron_cluster.connect() as superuser:  # plpgsql_check is superuser's to create
        assert_clean(superuser, 40)


def test_mysmshook_worker_delivers_the_sql_only_queue_each_job_once(core, auth, mock):
    use_webhook(core, mock.url, WEBHOOK_SECRET)
    for i in range(20):
        assert call(auth, "send_sms", sms(f"+1415555{i:04d}")) == {}
    assert call(auth, "send_email", email("person@example.com")) == {}
    log = run_external(core, "2 seconds")
    assert core.execute("select status, count(*) from mysmshook.job_queue group by 1").fetchall() == [("completed", 21)]
    per_job = requests_per_job(mock)
    assert len(per_job) == 21 and set(per_job.values()) == {1}
    assert "482913" not in log


def test_operations_and_metrics_work_in_the_sql_only_install(core, auth):
    core.execute("select mysmshook.pause('channel', 'sms', 'provider outage')")
    assert call(auth, "send_sms", sms("+14155550177")) == {}
    (job_id,) = core.execute("select job_id from mysmshook.job_queue").fetchone()
    assert core.execute("select mysmshook.cancel_job(%s, 'test')", [job_id]).fetchone() == ("cancelled",)
    (data,) = core.execute("select job_data from mysmshook.job_queue").fetchone()
    assert data["to"] == "+14*****0177" and data["scrubbed"] and "code" not in data
    core.execute("select mysmshook.resume('channel', 'sms')")
    assert core.execute("select sum(cancelled) from mysmshook.metrics()").fetchone() == (1,)
    (text,) = core.execute("select mysmshook.metrics_prometheus()").fetchone()
    assert re.search(r'mysmshook_jobs_finished\{[^}]*status="cancelled"\} 1', text), text


def test_saving_a_provider_of_an_unknown_kind_is_refused(core):
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="unknown kind"):
        core.execute("insert into mysmshook.providers (name, kind, settings) values ('x', 'carrier_pigeon', '{}')")


def test_mysmshook_worker_checks_what_the_extension_checks_when_rows_are_saved(core, db):
    """Without the library, a provider's settings and a template are checked for shape when
    saved; `mysmshook-worker --check` builds them as the extension's triggers do and names
    each one that is wrong."""
    add_provider(core, "half", "twilio", {"auth_token": "t", "from": "+15005550006"})
    core.execute("""insert into mysmshook.templates (channel, action_type, language, body)
                    values ('sms', 'sms', 'es', 'Código {{ codigo }}')""")

    def check():
        done = subprocess.run([WORKER_BINARY, "--check"], env=external_environment(core),
                              capture_output=True, text=True, timeout=60)
        return done.returncode, done.stdout.splitlines()

    code, lines = check()
    assert code == 1 and len(lines) == 2, lines
    assert lines[0].startswith("provider half: ") and "account_sid" in lines[0]
    assert lines[1].startswith("sms/sms template (es): ") and "codigo" in lines[1]
    core.execute("delete from mysmshook.providers where name = 'half'")
    core.execute("update mysmshook.templates set body = 'Código {{ code }}'")
    assert check() == (0, ["the providers and templates are valid"])
    unchecked = subprocess.run([WORKER_BINARY, "--check", "--database-url", "postgres://nobody@127.0.0.1:1/none"],
                               env=external_environment(core), capture_output=True, text=True, timeout=60)
    assert unchecked.returncode == 2 and unchecked.stdout == "", unchecked
    # The extension refuses the same rows as they are saved, with the same reasons.
    with pytest.raises(psycopg.errors.InvalidParameterValue) as refused:
        add_provider(db, "half", "twilio", {"auth_token": "t", "from": "+15005550006"})
    assert lines[0].removeprefix("provider half: ") in str(refused.value)
    with pytest.raises(psycopg.errors.InvalidParameterValue) as refused:
        db.execute("""insert into mysmshook.templates (channel, action_type, language, body)
                      values ('sms', 'sms', 'es', 'Código {{ codigo }}')""")
    assert lines[1].removeprefix("sms/sms template (es): ") in str(refused.value)


def test_applying_the_install_again_changes_nothing_and_says_what_is_there(cluster, core, db):
    def apply(dsn):
        done = subprocess.run(pg_tool("psql") + ["-X", "--single-transaction", "-v", "ON_ERROR_STOP=1", "-q",
                                                 "-d", dsn, "-f", str(SQL_ONLY_INSTALL)], capture_output=True, text=True)
        assert done.returncode != 0
        return done.stderr

    core.execute("insert into mysmshook.settings (name, value) values ('sms_code_lifetime', '5min')")
    refused = apply(cluster.dsn(user=SQL_ONLY_OWNER, dbname="sql_only_core"))
    assert f"mysmshook is installed here already (mysmshook {VERSION} (SQL-only install))" in refused
    assert core.execute("select value from mysmshook.settings").fetchall() == [("5min",)]
    # Over the extension: refused, naming it.
    refused = apply(cluster.dsn())
    assert f"mysmshook is installed here already (extension mysmshook {VERSION})" in refused
    assert db.execute("select count(*) from pg_namespace where nspname = 'mysmshook'").fetchone() == (1,)


def test_the_sql_only_kinds_are_the_engines(core):
    engine = (REPO / "engine" / "src" / "providers" / "mod.rs").read_text()
    kinds = re.findall(r'"([a-z_0-9]+)"', re.search(r"pub const KINDS: &\[&str\] = &\[(.*?)\];", engine, re.S).group(1))
    (source,) = core.execute("select prosrc from pg_proc where proname = 'check_provider'").fetchone()
    listed = re.findall(r"'([a-z_0-9]+)'", re.search(r"array\[(.*?)\]", source, re.S).group(1))
    assert sorted(listed) == sorted(kinds)


def test_no_role_but_the_owner_has_anything_but_what_was_granted(core):
    """Default privileges granted everything new to anon, authenticated and service_role (and
    the owner is their member, as on Supabase): the install takes it all back. Auth's role may
    call the two hooks and nothing else; the worker's role, what grant_worker_access gave."""
    checks = """
        select r.rolname, k.kind || ' ' || k.name
          from pg_roles r cross join lateral (
                select 'table' as kind, c.oid::regclass::text as name from pg_class c
                 where c.relnamespace = 'mysmshook'::regnamespace and c.relkind in ('r', 'v', 'p', 'u')
                   and has_table_privilege(r.oid, c.oid, 'select, insert, update, delete, truncate, references, trigger')
                union all
                select 'sequence', c.oid::regclass::text from pg_class c
                 where c.relnamespace = 'mysmshook'::regnamespace
                   and case when c.relkind = 'S' then has_sequence_privilege(r.oid, c.oid, 'usage, select, update') end
                union all
                select 'function', p.oid::regprocedure::text from pg_proc p
                 where p.pronamespace = 'mysmshook'::regnamespace and has_function_privilege(r.oid, p.oid, 'execute')
                union all
                select 'schema', 'mysmshook' where has_schema_privilege(r.oid, 'mysmshook', 'usage, create')) k
         where r.rolname = any (%s)
         order by 1, 2"""
    roles = ["anon", "authenticated", "service_role", "supabase_auth_admin", REMOTE_ROLE]
    found = {}
    for role, what in core.execute(checks, [roles]).fetchall():
        found.setdefault(role, set()).add(what)
    assert set(found) == {"supabase_auth_admin", REMOTE_ROLE}, found
    assert found["supabase_auth_admin"] == {"schema mysmshook", "function mysmshook.send_sms(jsonb)",
                                            "function mysmshook.send_email(jsonb)"}
    assert {w for w in found[REMOTE_ROLE] if not w.startswith("function ")} == {"schema mysmshook"}
    assert "function mysmshook.worker_number_prefixes()" in found[REMOTE_ROLE]


def test_an_in_database_worker_role_is_refused_with_the_way_to_the_remote_one(core):
    with pytest.raises(psycopg.errors.RaiseException, match="no in-database worker") as refused:
        core.execute("select mysmshook.grant_worker_access('app_user')")
    assert "remote => true" in refused.value.diag.message_hint


def test_a_refusal_logs_neither_the_callers_statement_nor_the_code(cluster, core, auth):
    """Auth may send the event inside the statement's text: the refusal line must not bring the
    statement (and its code) into the log, as a LOG line would."""
    core.execute("insert into mysmshook.geo_rules (region, allow) values ('BR', false)")
    event = json.dumps(sms("+5511987654321", otp="731902"))
    answer = auth.execute("select mysmshook.send_sms('" + event.replace("'", "''") + "'::jsonb)").fetchone()[0]
    assert answer["error"]["http_code"] == 400
    deadline = time.time() + 5
    while '"to" : "+55*******4321"' not in cluster.log() and time.time() < deadline:
        time.sleep(0.1)
    assert '"to" : "+55*******4321"' in cluster.log()
    assert "731902" not in cluster.log() and "5511987654321" not in cluster.log()


def test_the_settings_defaults_are_the_extensions(core, db):
    defaults = core.execute("select name, value from mysmshook.setting_defaults order by name").fetchall()
    assert len(defaults) == 6
    for name, value in defaults:
        assert db.execute("select mysmshook.setting(%s)", [name]).fetchone() == (value,), name


def test_two_workers_through_pgbouncer_in_transaction_mode_send_each_job_once(cluster, core, auth, mock):
    use_webhook(core, mock.url, WEBHOOK_SECRET)
    for i in range(60):
        assert call(auth, "send_sms", sms(f"+1415556{i:04d}")) == {}
    env = external_environment(core)
    with pgbouncer_before(cluster, "sql_only_core", REMOTE_ROLE) as pooled:
        env["MYSMSHOOK_DATABASE_URL"] = pooled
        workers = [subprocess.Popen([WORKER_BINARY, "--run-for", "4s", "--concurrency", "4"], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        logs = [w.communicate(timeout=120)[1] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], logs
    assert core.execute("select status, count(*) from mysmshook.job_queue group by 1").fetchall() == [("completed", 60)]
    per_job = requests_per_job(mock)
    assert len(per_job) == 60 and set(per_job.values()) == {1}


def test_a_dump_restores_as_the_owner_into_a_database_that_works(cluster, core, auth, mock):
    """pg_dump and psql as the owner, no superuser: configuration, settings, the defence and the
    queue come back, and the restored database answers Auth and is delivered."""
    use_webhook(core, mock.url, WEBHOOK_SECRET)
    core.execute("insert into mysmshook.settings values ('max_retries', '6')")
    core.execute("insert into mysmshook.geo_rules (region, allow) values ('MX', false)")
    assert call(auth, "send_sms", sms("+14155550188")) == {}
    dump = subprocess.run(pg_tool("pg_dump") + ["-d", cluster.dsn(user=SQL_ONLY_OWNER, dbname="sql_only_core"),
                                                "--schema", "mysmshook"],
                          capture_output=True, text=True, check=True).stdout
    with cluster.connect() as admin:
        admin.execute("drop database if exists sql_only_restored")
        admin.execute(f"create database sql_only_restored owner {SQL_ONLY_OWNER}")
    try:
        restore = subprocess.run(pg_tool("psql") + ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d",
                                                    cluster.dsn(user=SQL_ONLY_OWNER, dbname="sql_only_restored"),
                                                    "-f", "-"], input=dump, capture_output=True, text=True)
        assert restore.returncode == 0, restore.stderr
        with cluster.connect(user=SQL_ONLY_OWNER, dbname="sql_only_restored") as restored, \
                cluster.connect(user="supabase_auth_admin", dbname="sql_only_restored") as auth_restored:
            assert call(auth_restored, "send_sms", sms("+525512345678"))["error"]["http_code"] == 400
            assert call(auth_restored, "send_sms", sms("+14155550189")) == {}
            assert restored.execute("select job_data ->> 'to', max_retries from mysmshook.job_queue order by 1"
                                    ).fetchall() == [("+14155550188", 6), ("+14155550189", 6)]
            run_external(restored, "1 second")
            assert restored.execute("select status, count(*) from mysmshook.job_queue group by 1"
                                    ).fetchall() == [("completed", 2)]
        assert len(requests_per_job(mock)) == 2
    finally:
        with cluster.connect() as admin:
            admin.execute("drop database sql_only_restored with (force)")


TWILIO_SID = "SM00000000000000000000000000000r01"
PUBLIC_URL = "https://hooks.acme.test"


@pytest.fixture
def receipts_worker(core, tmp_path):
    """Starts mysmshook-worker (once the test has configured its providers), delivering the
    SQL-only queue and taking receipts on a port of its own, as providers reach it through a
    proxy at PUBLIC_URL. start(database_url) gives (post, log): post(path, body, headers, method) gives
    (status, body); log() the process's log so far."""
    log_path = tmp_path / "worker.log"
    processes = []
    port = None

    def post(path, body, headers=None, method="POST"):
        data = body.encode() if isinstance(body, str) else body
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                         headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return None, ""

    def start(database_url=None):
        nonlocal port
        # A free port may be taken again before the worker binds it (a mock's): another one then.
        for _ in range(5):
            port = free_port()
            env = external_environment(core, receipts_addr=f"127.0.0.1:{port}", receipts_url=PUBLIC_URL,
                                       poll_interval="50ms")
            if database_url:
                env["MYSMSHOOK_DATABASE_URL"] = database_url
            with open(log_path, "w") as log_file:
                process = subprocess.Popen([WORKER_BINARY], env=env, stdout=subprocess.DEVNULL, stderr=log_file)
            processes.append(process)
            if wait_for(lambda: process.poll() is not None or post("/", None, method="GET") == (404, "not found\n")):
                if process.poll() is None:
                    return post, log_path.read_text
                if "Address already in use" not in log_path.read_text():
                    break
        pytest.fail(f"mysmshook-worker did not start: {log_path.read_text()}")

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=30)


def twilio_form(sid, status, token, url, error_code=None):
    """A Twilio status callback for `sid`, signed by Twilio's own library for `url`."""
    params = {"MessageSid": sid, "MessageStatus": status, "AccountSid": SID, "To": "+12125550123"}
    if error_code:
        params["ErrorCode"] = error_code
    headers = {"X-Twilio-Signature": RequestValidator(token).compute_signature(url, params),
               "Content-Type": "application/x-www-form-urlencoded"}
    return urllib.parse.urlencode(params), headers


def wait_for(predicate, timeout=20):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)
    return predicate()


def test_mysmshook_worker_takes_the_providers_receipts_for_the_sql_only_install(core, auth, mocks, receipts_worker):
    """The endpoint verifies Twilio's signature over the public URL, records each receipt once
    on its job, and refuses forged, misdirected, unknown and oversized callbacks, recording
    nothing for them."""
    twilio = mocks(lambda req: created(TWILIO_SID))
    callback = f"{PUBLIC_URL}/receipts/twilio?source=status"
    add_twilio(core, "twilio", twilio, status_callback=callback)
    core.execute("update mysmshook.routes set providers = '{twilio}' where name = 'sms'")
    post, log = receipts_worker()
    assert call(auth, "send_sms", sms("+12125550123")) == {}
    assert wait_for(lambda: core.execute("select status from mysmshook.job_queue").fetchone() == ("completed",))
    assert dict(urllib.parse.parse_qsl(twilio.requests[0].body.decode()))["StatusCallback"] == callback

    def receipts():
        return core.execute("select status, job_id is not null from mysmshook.receipts order by receipt_id").fetchall()

    # Forged (another token), signed for another URL (the one a proxy forwards to), a provider
    # nobody configured, the wrong method or path, a body past the limit: nothing recorded.
    body, headers = twilio_form(TWILIO_SID, "undelivered", "not the token", callback, "30003")
    assert post("/receipts/twilio?source=status", body, headers) == (403, "refused\n")
    body, headers = twilio_form(TWILIO_SID, "undelivered", TOKEN, "http://127.0.0.1/receipts/twilio?source=status")
    assert post("/receipts/twilio?source=status", body, headers)[0] == 403
    body, headers = twilio_form(TWILIO_SID, "delivered", TOKEN, f"{PUBLIC_URL}/receipts/nobody")
    assert post("/receipts/nobody", body, headers)[0] == 400
    assert post("/receipts/twilio", None, method="GET")[0] == 405
    assert post("/elsewhere", "x")[0] == 404
    assert post("/receipts/twilio", "x" * 300_000)[0] == 413
    assert post("/receipts/twilio", b"\xff\xfe")[0] == 400  # not UTF-8
    # Our own misconfiguration (a Vault secret that cannot be read): the provider is asked to
    # come back, and the endpoint goes on.
    add_provider(core, "vaulted", "webhook", {"url": "http://127.0.0.1:9/", "secret": {"vault": "missing"},
                                              "app_id": "demo"})
    assert post("/receipts/vaulted", "{}", {"Content-Type": "application/json"})[0] == 503
    assert receipts() == []
    assert core.execute("select status, delivered_at from mysmshook.job_queue").fetchone() == ("completed", None)

    body, headers = twilio_form(TWILIO_SID, "delivered", TOKEN, callback)
    status, answer = post("/receipts/twilio?source=status", body, headers)
    (job_id, delivered_at) = core.execute("select job_id, delivered_at from mysmshook.job_queue").fetchone()
    assert status == 200 and json.loads(answer)["job_id"] == str(job_id) and delivered_at is not None
    # Twilio repeats a status now and then: recorded once.
    status, answer = post("/receipts/twilio?source=status", body, headers)
    assert status == 200 and json.loads(answer) == {"duplicate": True}
    assert receipts() == [("delivered", True)]
    # The reasons are in the worker's log, never in the answers.
    assert "X-Twilio-Signature" in log() and "no provider is named" in log() and "vault" in log()


def test_an_undelivered_receipt_sends_the_code_on_and_the_endpoint_outlives_its_connection(
        cluster, core, auth, mocks, receipts_worker):
    """A gateway's signed "failed" callback sends the live code through the rest of the chain;
    the endpoint's connection, killed, is opened again for the next callback."""
    gateway = mocks(lambda req: ok_json({"code": "ok", "message_id": "gw-77"}))
    second = mocks(lambda req: ok_json({"code": "ok", "message_id": "gw-78"}))
    add_provider(core, "gateway", "webhook", {"url": gateway.url, "secret": WEBHOOK_SECRET, "app_id": "demo"})
    add_provider(core, "second", "webhook", {"url": second.url, "secret": WEBHOOK_SECRET, "app_id": "demo"})
    core.execute("update mysmshook.routes set providers = '{gateway,second}' where name = 'sms'")
    post, log = receipts_worker()
    assert call(auth, "send_sms", sms("+12125550123")) == {}
    assert wait_for(lambda: core.execute("select provider from mysmshook.job_queue").fetchone() == ("gateway",))

    def gateway_says(event_id, status):
        event = json.dumps({"type": "message.status",
                            "data": {"message_id": "gw-77", "status": status, "error": "carrier rejected"}})
        at = datetime.datetime.now(tz=datetime.timezone.utc)
        headers = {"webhook-id": event_id, "webhook-timestamp": str(int(at.timestamp())),
                   "webhook-signature": StandardWebhook(WEBHOOK_SECRET).sign(event_id, at, event),
                   "Content-Type": "application/json"}
        return post("/receipts/gateway", event, headers)

    assert gateway_says("evt_1", "sent")[0] == 200
    with cluster.connect(dbname="sql_only_core") as superuser:
        (killed,) = superuser.execute("select count(pg_terminate_backend(pid)) from pg_stat_activity "
                                      "where usename = %s", [REMOTE_ROLE]).fetchone()
    assert killed == 2  # the delivery loop's connection and the endpoint's
    status, answer = gateway_says("evt_2", "failed")
    assert status == 200, (answer, log())
    assert wait_for(lambda: core.execute("select status, provider from mysmshook.job_queue").fetchone()
                    == ("completed", "second"))
    assert len(gateway.requests) == 1 and len(second.requests) == 1
    (attempts,) = core.execute("select attempts from mysmshook.job_queue").fetchone()
    assert [(a.get("provider"), a["result"], a.get("status")) for a in attempts] == [
        ("gateway", "sent", None), ("gateway", "receipt", "sent"), ("gateway", "receipt", "failed"),
        ("second", "sent", None)], attempts


def test_the_receipts_endpoint_records_through_pgbouncer_in_transaction_mode(cluster, core, auth, mocks,
                                                                             receipts_worker):
    twilio = mocks(lambda req: created(TWILIO_SID))
    callback = f"{PUBLIC_URL}/receipts/twilio"
    add_twilio(core, "twilio", twilio, status_callback=callback)
    core.execute("update mysmshook.routes set providers = '{twilio}' where name = 'sms'")
    with pgbouncer_before(cluster, "sql_only_core", REMOTE_ROLE) as pooled:
        post, log = receipts_worker(database_url=pooled)
        assert call(auth, "send_sms", sms("+12125550123")) == {}
        assert wait_for(lambda: core.execute("select status from mysmshook.job_queue").fetchone() == ("completed",))
        for status in ("sent", "delivered"):
            body, headers = twilio_form(TWILIO_SID, status, TOKEN, callback)
            assert post("/receipts/twilio", body, headers)[0] == 200, log()
    (delivered_at, attempts) = core.execute("select delivered_at, attempts from mysmshook.job_queue").fetchone()
    assert delivered_at is not None
    assert [a["status"] for a in attempts if a["result"] == "receipt"] == ["sent", "delivered"]


# --- housekeeping with pg_cron ---------------------------------------------------------------

HOUSEKEEPING = "select mysmshook.worker_housekeeping(), mysmshook.prune_cron_history()"


@pytest.fixture(scope="module")
def cron_cluster():
    """As on hosted Supabase: the install in pg_cron's own database (`postgres`), applied by an
    owner that is not a superuser; pg_cron created by a superuser (the dashboard does it) and
    USAGE on its schema granted to the owner (as Supabase grants it to `postgres`)."""
    with started_cluster("mysmshook-cron-") as c:
        with c.connect() as conn:
            conn.execute(f"create role {SQL_ONLY_OWNER} login nosuperuser nocreaterole nocreatedb")
            conn.execute(f"grant create on database postgres to {SQL_ONLY_OWNER}")
            conn.execute("create extension pg_cron")
            conn.execute(f"grant usage on schema cron to {SQL_ONLY_OWNER}")
        apply_sql_only_install(c, SQL_ONLY_OWNER, "postgres")
        yield c


def finished_and_expired_jobs(owner):
    """A job finished past the retention, and a sent code whose fallback copy outlived it."""
    (old,) = owner.execute(
        "insert into mysmshook.job_queue (job_data, channel, action_type, status, finished_at) "
        "values ('{}', 'sms', 'sms', 'completed', now() - interval '8 days') returning job_id").fetchone()
    (expired,) = owner.execute(
        "insert into mysmshook.job_queue (job_data, channel, action_type, status, finished_at, expires_at, "
        "fallback_data) values ('{}', 'sms', 'sms', 'completed', now() - interval '10 minutes', "
        "now() - interval '1 minute', '{\"code\": \"482913\"}') returning job_id").fetchone()
    return old, expired


def housekeeping_done(owner, old, expired):
    return (owner.execute("select count(*) from mysmshook.job_queue where job_id = %s", [old]).fetchone() == (0,)
            and owner.execute("select fallback_data from mysmshook.job_queue where job_id = %s",
                              [expired]).fetchone() == (None,))


def housekeeping_jobs(owner):
    return owner.execute("select schedule, command, username, database from cron.job "
                         "where jobname = 'mysmshook-housekeeping'").fetchall()


def test_housekeeping_is_scheduled_with_cron_schedule_as_the_owner(cron_cluster):
    with cron_cluster.connect(user=SQL_ONLY_OWNER) as owner:
        (job,) = owner.execute("select mysmshook.schedule_housekeeping()").fetchone()
        # Again: the same job, rescheduled.
        assert owner.execute("select mysmshook.schedule_housekeeping('*/15 * * * *')").fetchone() == (job,)
        assert housekeeping_jobs(owner) == [("*/15 * * * *", HOUSEKEEPING, SQL_ONLY_OWNER, "postgres")]
        # What pg_cron runs, run as the owner: the housekeeping is done.
        old, expired = finished_and_expired_jobs(owner)
        assert not housekeeping_done(owner, old, expired)
        owner.execute(housekeeping_jobs(owner)[0][1])
        assert housekeeping_done(owner, old, expired)
        assert owner.execute("select mysmshook.unschedule_housekeeping()").fetchone() == (True,)
        assert housekeeping_jobs(owner) == []
        assert owner.execute("select mysmshook.unschedule_housekeeping()").fetchone() == (False,)


def test_housekeeping_by_pg_cron_never_waits_for_a_workers(cron_cluster):
    """pg_cron's run and a worker's run of the housekeeping at the same moment: the second skips
    what the first holds instead of waiting for its transaction, and nothing is done twice."""
    with cron_cluster.connect(user=SQL_ONLY_OWNER) as owner:
        old, expired = finished_and_expired_jobs(owner)
        with cron_cluster.connect(user=SQL_ONLY_OWNER, autocommit=False) as worker:
            worker.execute("select mysmshook.worker_housekeeping()")  # holds what it pruned
            owner.execute("set statement_timeout = '3s'")
            owner.execute(HOUSEKEEPING)
            worker.commit()
        assert housekeeping_done(owner, old, expired)


def test_housekeeping_is_turned_on_again_and_leaves_another_databases_job_alone(cron_cluster):
    with cron_cluster.connect() as superuser, cron_cluster.connect(user=SQL_ONLY_OWNER) as owner:
        (job,) = owner.execute("select mysmshook.schedule_housekeeping()").fetchone()
        # Turned off (Supabase's Cron screen): scheduling again turns it on.
        superuser.execute("update cron.job set active = false where jobid = %s", [job])
        owner.execute("select mysmshook.schedule_housekeeping()")
        assert owner.execute("select active from cron.job where jobname = 'mysmshook-housekeeping'").fetchall() == [(True,)]
        assert owner.execute("select mysmshook.unschedule_housekeeping()").fetchone() == (True,)
        # pg_cron names a job by name and role in the whole cluster: the same role's job of
        # that name for another database is that database's.
        superuser.execute("create database other_app")
        try:
            superuser.execute("select cron.schedule_in_database('mysmshook-housekeeping', '0 * * * *', 'select 1', "
                              "'other_app', %s)", [SQL_ONLY_OWNER])
            with pytest.raises(psycopg.errors.RaiseException, match="in database other_app already"):
                owner.execute("select mysmshook.schedule_housekeeping()")
            assert owner.execute("select mysmshook.unschedule_housekeeping()").fetchone() == (False,)
            assert housekeeping_jobs(owner) == [("0 * * * *", "select 1", SQL_ONLY_OWNER, "other_app")]
        finally:
            superuser.execute("delete from cron.job where jobname = 'mysmshook-housekeeping'")
            superuser.execute("drop database other_app")


def test_housekeeping_without_pg_cron_says_what_is_missing(cron_cluster, sql_only_owner):
    with pytest.raises(psycopg.errors.RaiseException, match="pg_cron is not installed in database sql_only_core") as e:
        sql_only_owner.execute("select mysmshook.schedule_housekeeping()")
    assert "Database, Extensions" in e.value.diag.message_hint
    assert sql_only_owner.execute("select mysmshook.unschedule_housekeeping()").fetchone() == (False,)
    with cron_cluster.connect() as superuser:
        superuser.execute(f"revoke usage on schema cron from {SQL_ONLY_OWNER}")
        try:
            with cron_cluster.connect(user=SQL_ONLY_OWNER) as owner:
                with pytest.raises(psycopg.errors.RaiseException, match=f"role {SQL_ONLY_OWNER} may not use pg_cron") as e:
                    owner.execute("select mysmshook.schedule_housekeeping()")
                assert e.value.diag.message_hint == f"As a superuser: grant usage on schema cron to {SQL_ONLY_OWNER}"
                # A job scheduled before still does the housekeeping: the history is not its to prune.
                old, expired = finished_and_expired_jobs(owner)
                assert owner.execute(HOUSEKEEPING).fetchone()[1] == 0
                assert housekeeping_done(owner, old, expired)
        finally:
            superuser.execute(f"grant usage on schema cron to {SQL_ONLY_OWNER}")
        # pg_cron starts its jobs as a session of the role: one that cannot log in is refused.
        superuser.execute("create role nologin_owner nologin")
        try:
            superuser.execute("grant usage on schema cron to nologin_owner")
            superuser.execute("grant usage on schema mysmshook to nologin_owner")
            superuser.execute("grant execute on function mysmshook.schedule_housekeeping(text) to nologin_owner")
            superuser.execute("set role nologin_owner")
            with pytest.raises(psycopg.errors.RaiseException, match="role nologin_owner cannot log in"):
                superuser.execute("select mysmshook.schedule_housekeeping()")
        finally:
            superuser.execute("reset role")
            superuser.execute("drop owned by nologin_owner")
            superuser.execute("drop role nologin_owner")


@pytest.mark.slow
def test_pg_cron_runs_the_housekeeping_while_no_worker_does(cron_cluster):
    """pg_cron itself, at its next tick (a minute with pg_cron 1.4, a second from 1.5 on)."""
    with cron_cluster.connect(user=SQL_ONLY_OWNER) as owner:
        old, expired = finished_and_expired_jobs(owner)
        (version,) = owner.execute("select extversion from pg_extension where extname = 'pg_cron'").fetchone()
        every = "1 seconds" if tuple(map(int, re.findall(r"\d+", version)[:2])) >= (1, 5) else "* * * * *"
        (job,) = owner.execute("select mysmshook.schedule_housekeeping(%s)", [every]).fetchone()
        try:
            deadline = time.monotonic() + 90
            while not housekeeping_done(owner, old, expired) and time.monotonic() < deadline:
                time.sleep(0.5)
            assert housekeeping_done(owner, old, expired)
            while not owner.execute("select from cron.job_run_details where jobid = %s and status = 'succeeded'",
                                    [job]).fetchall() and time.monotonic() < deadline:
                time.sleep(0.5)
            runs = owner.execute("select status, return_message from cron.job_run_details where jobid = %s",
                                 [job]).fetchall()
            assert "succeeded" in [r[0] for r in runs] and "failed" not in [r[0] for r in runs], runs
            # Its run history is the owner's to prune, under pg_cron's row security.
            with cron_cluster.connect() as superuser:
                superuser.execute("update cron.job_run_details set end_time = now() - interval '2 days' "
                                  "where jobid = %s and end_time is not null", [job])
            (pruned,) = owner.execute("select mysmshook.prune_cron_history()").fetchone()
            assert pruned >= 1
            assert owner.execute("select count(*) from cron.job_run_details where jobid = %s "
                                 "and end_time < now() - interval '1 hour'", [job]).fetchone() == (0,)
        finally:
            owner.execute("select mysmshook.unschedule_housekeeping()")
