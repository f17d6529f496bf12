"""SMS pumping defence at the hook: geo rules, velocity limits, spend caps, the audit log, the
limits under concurrency, and a pumping attack simulated against ordinary traffic."""

import threading
import time
from pathlib import Path

import psycopg
import pytest
from psycopg.types.json import Jsonb

from conftest import jobs, seed

TOO_MANY = {"error": {"http_code": 429, "message": "Too many codes were requested. Please wait and try again later."}}
NOT_SERVED = {"error": {"http_code": 400, "message": "Codes cannot be sent to this phone number."}}


def event(phone, otp="482913", ip="198.51.100.7", user="6481a5c1-3d37-4a56-9f6a-bee08c554965"):
    e = seed("sms_seed.json")
    e["user"]["id"] = user
    e["sms"]["phone"] = phone.lstrip("+")
    e["sms"]["otp"] = otp
    e.setdefault("metadata", {})["ip_address"] = ip
    return e


def send(conn, phone, **kwargs):
    (answer,) = conn.execute("select mysmshook.send_sms(%s)", (Jsonb(event(phone, **kwargs)),)).fetchone()
    return answer


def refusals(conn, since):
    return conn.execute("select rule, destination, ip, region from mysmshook.refusals() where refused_at >= %s "
                        "order by refused_at", (since,)).fetchall()


def now(conn):
    return conn.execute("select clock_timestamp()").fetchone()[0]


def queued(conn, phone):
    (n,) = conn.execute("select count(*) from mysmshook.job_queue where job_data->>'to' = %s", (phone,)).fetchone()
    return n


def test_five_codes_to_one_number_in_ten_minutes_by_default(db, cluster):
    start = now(db)
    answers = [send(db, "+12125550123", otp=f"10000{i}", user=f"u{i}") for i in range(7)]
    assert answers == [{}] * 5 + [TOO_MANY] * 2
    assert queued(db, "+12125550123") == 5
    assert refusals(db, start) == [("codes_per_number", "+12*****0123", "198.51.100.7", "US")] * 2
    # Other numbers are not affected; the audit log never holds a code.
    assert send(db, "+12125550124") == {}
    log = (Path(cluster.dir) / "data" / "mysmshook" / "refusals.jsonl").read_text()
    assert "100005" not in log and "100006" not in log and "2125550123" not in log


def test_a_refusal_is_recorded_even_when_the_auth_transaction_rolls_back(db):
    """Supabase Auth rolls its transaction back when the hook refuses: the counters go with it,
    the audit line stays."""
    class AuthRollsBack(Exception):
        pass

    start = now(db)
    with pytest.raises(AuthRollsBack):
        with db.transaction():
            answers = [send(db, "+12125550125", user=f"u{i}") for i in range(6)]
            assert answers[-1] == TOO_MANY
            raise AuthRollsBack
    assert queued(db, "+12125550125") == 0
    (counted,) = db.execute("select count(*) from mysmshook.limit_counters where key = '+12125550125'").fetchone()
    assert counted == 0
    assert [r[0] for r in refusals(db, start)] == ["codes_per_number"]


def test_geo_rules_deny_allow_and_calling_codes(db):
    mexico, us, puerto_rico = "+525512345678", "+12125550126", "+17875550123"
    db.execute("insert into mysmshook.geo_rules (region, allow) values ('MX', false)")
    assert send(db, mexico) == NOT_SERVED and send(db, us) == {}
    db.execute("delete from mysmshook.geo_rules")
    db.execute("insert into mysmshook.geo_rules (region, allow) values ('+1', true), ('PR', false)")
    assert send(db, us) == {} and send(db, puerto_rico) == NOT_SERVED and send(db, mexico) == NOT_SERVED
    assert queued(db, mexico) == 0 and queued(db, puerto_rico) == 0
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute("insert into mysmshook.geo_rules (region, allow) values ('Mexico', false)")


def test_a_hook_backend_sees_another_sessions_change_at_its_next_call(cluster, db):
    """A change to the rules applies to a hook connection's next call once it commits, never
    before (the hook reads the rules at every call)."""
    with cluster.connect() as hook:
        assert send(hook, "+12125550131") == {}
        db.execute("insert into mysmshook.geo_rules (region, allow) values ('US', false)")
        assert send(hook, "+12125550132") == NOT_SERVED
        db.execute("delete from mysmshook.geo_rules")
        assert send(hook, "+12125550133") == {}
        with cluster.connect(autocommit=False) as admin:
            admin.execute("insert into mysmshook.limits (name, scope, per, maximum) values ('all', 'global', '1 hour', 0)")
            assert send(hook, "+12125550134") == {}  # not committed yet
            admin.commit()
        assert send(hook, "+12125550135") == TOO_MANY
        db.execute("truncate mysmshook.limits")
        assert send(hook, "+12125550136") == {}
    assert queued(db, "+12125550132") == 0 and queued(db, "+12125550135") == 0


def test_velocity_limits_by_prefix_ip_country_and_globally(db):
    db.execute("""insert into mysmshook.limits (name, scope, prefix_digits, per, maximum) values
        ('range', 'prefix', 9, '1 hour', 3), ('client', 'ip', null, '1 hour', 4),
        ('uk', 'country', null, '1 hour', 100), ('everything', 'global', null, '1 hour', 100)""")
    # Sequential numbers of one range: the fourth is refused.
    answers = [send(db, f"+4474001230{i:02d}", ip=f"203.0.113.{i}") for i in range(5)]
    assert answers == [{}] * 3 + [TOO_MANY] * 2
    # One client, numbers all over: the fifth is refused.
    answers = [send(db, f"+1{area}5550123", ip="192.0.2.1") for area in (212, 213, 310, 415, 646, 718)]
    assert answers == [{}] * 4 + [TOO_MANY] * 2
    db.execute("update mysmshook.limits set maximum = 3 where name = 'uk'")
    assert send(db, "+447400999999", ip="192.0.2.99") == TOO_MANY


def test_spend_caps_per_country(db):
    db.execute("insert into mysmshook.sms_prices values ('GB', 0.05), ('*', 0.01)")
    db.execute("insert into mysmshook.limits (name, scope, per, maximum) values ('uk_hourly_spend', 'country_spend', '1 hour', 0.12)")
    answers = [send(db, f"+4474001240{i:02d}", ip=f"203.0.113.{i}") for i in range(4)]
    assert answers == [{}, {}, TOO_MANY, TOO_MANY]  # 0.05 + 0.05 + 0.05 > 0.12
    assert send(db, "+12125550127") == {}  # the cap is per country


def test_a_limit_holds_under_concurrency(cluster, db):
    """16 connections hammer one number at once: exactly the limit gets through (the counter's
    row lock orders them)."""
    barrier = threading.Barrier(16)
    results = []

    def hammer(i):
        with cluster.connect() as conn:
            barrier.wait()
            for j in range(5):
                results.append(send(conn, "+12125550128", user=f"u{i}-{j}"))

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 80 and results.count({}) == 5
    assert queued(db, "+12125550128") == 5


def test_limits_lock_their_counters_in_name_order(cluster, db):
    """Each counter row stays locked until the auth transaction ends: two sign-ins that locked
    them in different orders would deadlock (a 500 for one of them). The order is the limits'
    names, not where an update left their rows: here 'b' is stored before 'a'. While 'b's
    counter is held elsewhere, the hook waits on it holding 'a's."""
    db.execute("""insert into mysmshook.limits (name, scope, per, maximum) values
        ('a', 'destination', '1 hour', 100), ('b', 'destination', '1 hour', 100)""")
    db.execute("update mysmshook.limits set maximum = 99 where name = 'a'")
    assert [n for (n,) in db.execute("select name from mysmshook.limits")] == ["b", "a"]
    assert send(db, "+12125550140") == {}  # both counters exist
    counter = "select 1 from mysmshook.limit_counters where limit_name = %s and key = '+12125550140' for update"
    with cluster.connect(autocommit=False) as holder, cluster.connect(autocommit=False) as hook:
        holder.execute(counter + " nowait", ("b",))
        (pid,) = hook.execute("select pg_backend_pid()").fetchone()
        answers = []
        waiting = threading.Thread(target=lambda: answers.append(send(hook, "+12125550140", user="u2")))
        waiting.start()
        try:
            deadline = time.time() + 10
            while db.execute("select wait_event_type from pg_stat_activity where pid = %s",
                             (pid,)).fetchone() != ("Lock",):
                assert time.time() < deadline, "the hook never waited for b's counter"
                time.sleep(0.02)
            with pytest.raises(psycopg.errors.LockNotAvailable):
                db.execute(counter + " nowait", ("a",))
        finally:
            holder.rollback()
            waiting.join(10)
        assert not waiting.is_alive() and answers == [{}]
        hook.rollback()


def test_pruning_counters_never_waits_for_a_sign_in(cluster, db):
    """A sign-in holds its counters until the auth transaction ends. The prune (every worker
    run) passes over them rather than wait: it would take them in the table's order, the hook
    in the limits' names, and waiting could deadlock and fail the sign-in."""
    db.execute("""insert into mysmshook.limit_counters values
        ('codes_per_number', '+12125550150', 0, now() - interval '1 hour', 1, 0),
        ('codes_per_number', '+12125550151', 0, now() - interval '1 hour', 1, 0)""")
    with cluster.connect(autocommit=False) as signin:
        signin.execute("select from mysmshook.limit_counters where key = '+12125550150' for update")
        db.execute("set statement_timeout = '3s'")
        try:
            assert db.execute("select mysmshook.prune_limit_counters()").fetchone() == (1,)
        finally:
            db.execute("reset statement_timeout")
    assert db.execute("select key from mysmshook.limit_counters").fetchall() == [("+12125550150",)]
    assert db.execute("select mysmshook.prune_limit_counters()").fetchone() == (1,)


def test_the_built_in_limit_can_be_replaced_or_turned_off(db):
    db.execute("insert into mysmshook.limits (name, scope, per, maximum) values ('codes_per_number', 'destination', '1 hour', 2)")
    assert [send(db, "+12125550129", user=f"u{i}") for i in range(3)] == [{}, {}, TOO_MANY]
    db.execute("update mysmshook.limits set enabled = false")
    assert [send(db, "+12125550130", user=f"u{i}") for i in range(8)] == [{}] * 8


def test_suggested_allowlist_from_delivered_codes(db):
    for i in range(3):
        send(db, f"+1212555{i + 200:04d}")
    send(db, "+525512345678")
    db.execute("call mysmshook.run_worker()")
    rows = db.execute("select region, delivered from mysmshook.suggested_geo_allowlist(min_jobs => 1)").fetchall()
    assert rows == [("US", 3), ("MX", 1)]


def test_a_pumping_attack_is_cut_off_and_ordinary_users_are_not(db):
    """10,000 requests to sequential numbers of one range from three addresses, mixed with 500
    ordinary sign-ins from as many numbers and addresses."""
    db.execute("""insert into mysmshook.limits (name, scope, prefix_digits, per, maximum) values
        ('range', 'prefix', 8, '1 hour', 30), ('client', 'ip', null, '1 hour', 20)""")
    attack = {"sent": 0, "refused": 0}
    ordinary = {"sent": 0, "refused": 0}
    started = time.monotonic()
    for i in range(10_000):
        answer = send(db, f"+447911{i:06d}", ip=f"203.0.113.{i % 3}", user=f"bot{i}")
        attack["sent" if answer == {} else "refused"] += 1
        if i % 20 == 0:
            j = i // 20
            answer = send(db, f"+1212{2000000 + j * 7919:07d}", ip=f"10.{j // 250}.{j % 250}.1", user=f"person{j}")
            ordinary["sent" if answer == {} else "refused"] += 1
    elapsed = time.monotonic() - started
    # Each address may send 20 an hour: the three together get at most 60, the range 30.
    assert attack["sent"] <= 30, attack
    assert ordinary == {"sent": 500, "refused": 0}, ordinary
    summary = db.execute("select rule, refusals, destinations, ips from mysmshook.refusal_summary "
                         "where hour >= date_trunc('hour', now() - interval '1 hour') order by refusals desc").fetchall()
    print(f"\npumping simulation: attack {attack}, ordinary {ordinary}, {elapsed:.1f} s; summary {summary}")
    assert summary[0][0] in ("client", "range") and sum(r[1] for r in summary) >= attack["refused"]
