"""The hooks and the pumping defence are one SQL core: installed by a database owner without
superuser, with the SQL-only edition's phone_info, setting and record_refusal in place of the
library's, they answer every event as the extension does, queue the same jobs, refuse by the
same rules, write refusals to the server log, and read settings that only the owner can change."""

import json
import re
import time
import uuid

import psycopg
import pytest

from conftest import REPO

SQL = REPO / "sql"
# The hook side in install order, the SQL-only edition's own functions where the extension's
# library has its own.
CORE_FILES = ["schema.sql", "sql_only/phone_metadata.sql", "sql_only/phone_info.sql", "sql_only/settings.sql",
              "sql_only/refusal_audit.sql", "validation.sql", "defence.sql", "hooks.sql"]
OWNER = "sql_only_owner"


def core_sql():
    """The core's files as one script. pg_extension_config_dump exists only inside CREATE
    EXTENSION; outside it pg_dump keeps every table anyway."""
    text = "\n".join((SQL / name).read_text() for name in CORE_FILES)
    return re.sub(r"(?m)^select pg_catalog\.pg_extension_config_dump\(.*\);$", "", text)


@pytest.fixture(scope="module")
def core(cluster):
    with cluster.connect() as conn:
        conn.execute("drop database if exists sql_only_core")
        conn.execute(f"drop role if exists {OWNER}")
        conn.execute(f"create role {OWNER} login nosuperuser nocreaterole")
        conn.execute(f"create database sql_only_core owner {OWNER}")
    with cluster.connect(user=OWNER, dbname="sql_only_core") as owner:
        assert owner.execute("select rolsuper from pg_roles where rolname = current_user").fetchone() == (False,)
        owner.execute("create schema mysmshook")
        owner.execute(core_sql())
        owner.execute("revoke all on all functions in schema mysmshook from public")
        owner.execute("grant usage on schema mysmshook to supabase_auth_admin")
        owner.execute("grant execute on function mysmshook.send_sms(jsonb), mysmshook.send_email(jsonb) "
                      "to supabase_auth_admin")
        yield owner
    with cluster.connect() as conn:
        conn.execute("drop database sql_only_core with (force)")
        conn.execute(f"drop owned by {OWNER}")
        conn.execute(f"drop role {OWNER}")


@pytest.fixture
def auth(cluster, core):
    """Supabase Auth's session on the SQL-only database: its role, its search_path = auth."""
    core.execute("truncate mysmshook.job_queue, mysmshook.limit_counters")
    core.execute("delete from mysmshook.geo_rules")
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
                        ("sms_code_lifetime", "soon"), ("no_such_setting", "1")]:
        with pytest.raises(psycopg.errors.InvalidParameterValue) as refused:
            core.execute("insert into mysmshook.settings values (%s, %s) "
                         "on conflict (name) do update set value = excluded.value", [name, value])
        assert name in str(refused.value)
    # The caller can neither read nor write them.
    for statement in ["select * from mysmshook.settings", "update mysmshook.settings set value = '0'",
                      "select mysmshook.setting('max_retries')"]:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            auth.execute(statement)


def test_accepted_prefixes_let_a_refused_number_through_in_both_places_it_is_read(core, auth):
    old_mexican_mobile = "+5215512345678"
    assert call(auth, "send_sms", sms(old_mexican_mobile))["error"]["http_code"] == 400
    core.execute("insert into mysmshook.settings values ('accepted_number_prefixes', '+521')")
    assert call(auth, "send_sms", sms(old_mexican_mobile)) == {}
    (region,) = core.execute("select job_data ->> 'region' from mysmshook.job_queue").fetchone()
    assert region == "MX"


def test_the_core_passes_plpgsql_check(cluster, core):
    from test_lint import findings, require_plpgsql_check
    with cluster.connect(dbname="sql_only_core") as superuser:  # plpgsql_check is superuser's to create
        require_plpgsql_check(superuser)
        found, checked = findings(superuser)
    assert checked >= 10, checked
    # Not yet in the SQL-only edition: the save-time checks of providers and templates, which
    # are the library's (the engine's renderer and provider code). Until they are, saving a
    # provider or template there fails; the hooks and the defence need neither.
    not_yet = {("mysmshook.providers_check()", "function mysmshook.check_provider(text, jsonb) does not exist"),
               ("mysmshook.templates_check()",
                "function mysmshook.check_template(text, text, text, text, text) does not exist")}
    assert {(f[0], f[2]) for f in found} == not_yet, found
