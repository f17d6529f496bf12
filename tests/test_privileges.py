"""Nothing a caller plants on its search_path runs inside the extension's functions.

A role that owns a schema (on Supabase, supabase_auth_admin owns `auth` and has
`search_path = auth`) can create functions, operators, aggregates and domains there, and any
session can create types and tables in pg_temp. If a function the caller may execute resolved
an unqualified name through the caller's search_path, the caller's object would run inside it:
as the extension's owner, a superuser, when the function is SECURITY DEFINER.

The shadows here record the role they run as (a WARNING the test collects) and otherwise
answer exactly as pg_catalog's originals, so the test can tell both things apart: whether a
shadow ran as another role, and whether an answer changed.
"""

import datetime
import json
import uuid

import psycopg
import pytest
from psycopg.types.json import Jsonb
from standardwebhooks.webhooks import Webhook as StandardWebhook

from conftest import add_provider, set_chain, seed
from mock_provider import ok_json

MARK = "mysmshook-shadow"
GATEWAY_SECRET = "whsec_bm90IHRoZSByZXNlbmQgc2VjcmV0IGF0IGFsbA=="

# Every polymorphic argument is also shadowed with each of these concrete types: an exact-type
# function in the caller's schema beats pg_catalog's polymorphic one whatever the order.
INSTANCES = ["text", "oid", "int4", "int8", "float8", "numeric", "bool", "jsonb", "uuid",
             "timestamptz", "interval"]

# Plants the shadows in schema `shadows`, run by the (non-superuser) role that owns it.
PLANT = r"""
do $plant$
declare
    f record;
    poly constant text[] := array['anyelement', 'anynonarray', 'anycompatible',
                                  'anycompatiblenonarray', 'any'];
    polyarr constant text[] := array['anyarray', 'anycompatiblearray'];
    inst text;
    args text[];
    ret text;
    n int := 0;
    made int := 0;
begin
    -- The functions of pg_catalog whose arguments are plain types (base types, their arrays),
    -- with polymorphic ones instantiated.
    for f in
        select p.proname, p.prokind, p.proretset,
               pg_catalog.array_agg(t.typname::text order by a.ord) filter (where a.ord is not null) as argnames,
               rt.typname::text as retname, rt.typtype as rettype
          from pg_catalog.pg_proc p
          join pg_catalog.pg_type rt on rt.oid = p.prorettype
          left join lateral pg_catalog.unnest(p.proargtypes::oid[]) with ordinality a(typ, ord) on true
          left join pg_catalog.pg_type t on t.oid = a.typ
         where p.pronamespace = 'pg_catalog'::regnamespace and p.prokind in ('f', 'a')
           and p.proallargtypes is null and p.pronargs <= 4 and p.provariadic = 0
           and p.proname not like '%\_in' and p.proname not like '%\_out'
           and p.proname not like '%\_recv' and p.proname not like '%\_send'
         group by p.oid, p.proname, p.prokind, p.proretset, rt.typname, rt.typtype
    loop
        foreach inst in array (case
                when f.argnames is null or not (f.argnames && (poly || polyarr)) then array[null]
                else $$INSTANCES$$::text[] end) loop
            args := array(select case when x = any(poly) then inst
                                      when x = any(polyarr) then '_' || inst
                                      else x end from pg_catalog.unnest(coalesce(f.argnames, '{}')) x);
            ret := case when f.retname = any(poly) then inst
                        when f.retname = any(polyarr) then '_' || inst
                        else f.retname end;
            -- Plain types only: no pseudo-type left (internal, record, trigger, cstring, ...).
            continue when exists (select from pg_catalog.unnest(args || ret) x
                                   where not exists (select from pg_catalog.pg_type t
                                                      where t.typname = x and t.typtype = 'b'
                                                        and t.typnamespace = 'pg_catalog'::regnamespace))
                          and ret <> 'void';
            n := n + 1;
            begin
                if f.prokind = 'f' then
                    execute pg_catalog.format(
                        'create function shadows.%I(%s) returns %s%s language plpgsql '
                        'set search_path = pg_catalog as $f$ begin perform shadows.mark(%L); '
                        '%s pg_catalog.%I(%s); end $f$',
                        f.proname,
                        (select pg_catalog.string_agg(pg_catalog.format('pg_catalog.%I', x), ', ') from pg_catalog.unnest(args) x),
                        case when f.proretset then 'setof ' else '' end,
                        pg_catalog.format('pg_catalog.%I', ret),
                        f.proname || '(' || pg_catalog.array_to_string(args, ',') || ')',
                        case when f.proretset then 'return query select * from'
                             when ret = 'void' then 'perform' else 'return' end,
                        f.proname,
                        (select pg_catalog.string_agg('$' || i, ', ') from pg_catalog.generate_series(1, pg_catalog.cardinality(args)) i));
                elsif pg_catalog.cardinality(args) = 1 and args[1] not like '\_%' then
                    -- An aggregate of one argument: collect the values, then let the original
                    -- aggregate them.
                    execute pg_catalog.format(
                        'create function shadows.%I(s pg_catalog.%I, v pg_catalog.%I) returns pg_catalog.%I '
                        'language plpgsql set search_path = pg_catalog as $f$ begin perform shadows.mark(%L); '
                        'return pg_catalog.array_append(s, v); end $f$',
                        'agg_step_' || n, '_' || args[1], args[1], '_' || args[1], f.proname || '(' || args[1] || ')');
                    execute pg_catalog.format(
                        'create function shadows.%I(s pg_catalog.%I) returns pg_catalog.%I '
                        'language plpgsql set search_path = pg_catalog as $f$ begin '
                        'return (select pg_catalog.%I(x) from pg_catalog.unnest(s) x); end $f$',
                        'agg_final_' || n, '_' || args[1], ret, f.proname);
                    execute pg_catalog.format(
                        'create aggregate shadows.%I(pg_catalog.%I) (sfunc = shadows.%I, stype = pg_catalog.%I, '
                        'finalfunc = shadows.%I)',
                        f.proname, args[1], 'agg_step_' || n, '_' || args[1], 'agg_final_' || n);
                else
                    continue;
                end if;
                made := made + 1;
            exception when others then
                null;  -- an instance PostgreSQL will not take (a return type it cannot have...)
            end;
        end loop;
    end loop;
    raise notice 'functions and aggregates: %', made;

    -- Operators of plain types, polymorphic ones instantiated.
    made := 0;
    for f in
        select o.oprname, o.oprcode::regproc::text as code,
               l.typname::text as lname, r.typname::text as rname, res.typname::text as resname
          from pg_catalog.pg_operator o
          left join pg_catalog.pg_type l on l.oid = o.oprleft
          join pg_catalog.pg_type r on r.oid = o.oprright
          join pg_catalog.pg_type res on res.oid = o.oprresult
         where o.oprnamespace = 'pg_catalog'::regnamespace
    loop
        foreach inst in array (case
                when not (array[f.lname, f.rname, f.resname] && (poly || polyarr)) then array[null]
                else $$INSTANCES$$::text[] end) loop
            args := array(select case when x = any(poly) then inst
                                      when x = any(polyarr) then '_' || inst
                                      else x end from pg_catalog.unnest(array[f.lname, f.rname, f.resname]) x);
            continue when exists (select from pg_catalog.unnest(args) x
                                   where x is not null and not exists (
                                         select from pg_catalog.pg_type t where t.typname = x and t.typtype = 'b'
                                            and t.typnamespace = 'pg_catalog'::regnamespace));
            n := n + 1;
            begin
                if args[1] is null then  -- prefix
                    execute pg_catalog.format(
                        'create function shadows.%I(pg_catalog.%I) returns pg_catalog.%I language plpgsql '
                        'set search_path = pg_catalog as $f$ begin perform shadows.mark(%L); '
                        'return %s($1); end $f$', 'op_' || n, args[2], args[3], 'operator ' || f.oprname, f.code);
                    execute pg_catalog.format('create operator shadows.%s (rightarg = pg_catalog.%I, function = shadows.%I)',
                                              f.oprname, args[2], 'op_' || n);
                else
                    execute pg_catalog.format(
                        'create function shadows.%I(pg_catalog.%I, pg_catalog.%I) returns pg_catalog.%I language plpgsql '
                        'set search_path = pg_catalog as $f$ begin perform shadows.mark(%L); '
                        'return %s($1, $2); end $f$',
                        'op_' || n, args[1], args[2], args[3],
                        'operator ' || args[1] || ' ' || f.oprname || ' ' || args[2], f.code);
                    execute pg_catalog.format(
                        'create operator shadows.%s (leftarg = pg_catalog.%I, rightarg = pg_catalog.%I, function = shadows.%I)',
                        f.oprname, args[1], args[2], 'op_' || n);
                end if;
                made := made + 1;
            exception when others then
                null;
            end;
        end loop;
    end loop;
    raise notice 'operators: %', made;

    -- The variadic builders, with the argument lists the extension's statements could use.
    create function shadows.jsonb_build_object(text, text) returns jsonb language plpgsql
        set search_path = pg_catalog as $f$ begin perform shadows.mark('jsonb_build_object(text,text)');
        return pg_catalog.jsonb_build_object($1, $2); end $f$;
    create function shadows.jsonb_build_object(text, text, text, bool) returns jsonb language plpgsql
        set search_path = pg_catalog as $f$ begin perform shadows.mark('jsonb_build_object(text,text,text,bool)');
        return pg_catalog.jsonb_build_object($1, $2, $3, $4); end $f$;
    create function shadows.jsonb_build_array(text, float8) returns jsonb language plpgsql
        set search_path = pg_catalog as $f$ begin perform shadows.mark('jsonb_build_array(text,float8)');
        return pg_catalog.jsonb_build_array($1, $2); end $f$;
    create function shadows.format(text, text) returns text language plpgsql
        set search_path = pg_catalog as $f$ begin perform shadows.mark('format(text,text)');
        return pg_catalog.format($1, $2); end $f$;
    create function shadows.concat(text, text) returns text language plpgsql
        set search_path = pg_catalog as $f$ begin perform shadows.mark('concat(text,text)');
        return pg_catalog.concat($1, $2); end $f$;

    -- Domains named like the built-in types (last: the statements above name pg_catalog's).
    made := 0;
    for f in select typname::text from pg_catalog.pg_type
              where typnamespace = 'pg_catalog'::regnamespace and typtype = 'b' and typcategory <> 'A' loop
        begin
            execute pg_catalog.format('create domain shadows.%I as pg_catalog.%I check (shadows.mark(%L))',
                                      f.typname, f.typname, 'domain ' || f.typname);
            made := made + 1;
        exception when others then
            null;
        end;
    end loop;
    raise notice 'domains: %', made;
end
$plant$
""".replace("$$INSTANCES$$", "'{" + ",".join(INSTANCES) + "}'")

# The extension's tables, as a session could plant them in pg_temp.
TABLES = ["job_queue", "providers", "routes", "templates", "limits", "geo_rules", "sms_prices",
          "config_version", "pauses", "receipts", "limit_counters", "hash_key", "receipt_probe",
          "queue_status"]


ROLES = ("priv_worker", "priv_remote", "priv_monitor", "priv_receipts")


@pytest.fixture(scope="module")
def shadows(cluster):
    """Schema `shadows`, owned by a role that is no superuser, full of shadows; and the roles
    the extension's grant functions make."""
    with cluster.connect() as admin:
        admin.execute("create role shadower login")
        admin.execute("create schema shadows authorization shadower")
        admin.execute("grant usage on schema shadows to public")
        for role in ROLES:
            admin.execute(f"create role {role} login")
        admin.execute("select mysmshook.grant_worker_access('priv_worker')")
        admin.execute("select mysmshook.grant_worker_access('priv_remote', remote => true)")
        admin.execute("select mysmshook.grant_monitor_access('priv_monitor')")
        admin.execute("grant usage on schema mysmshook to priv_receipts")
        admin.execute("grant execute on function mysmshook.receive_receipt(text, text, jsonb, text) to priv_receipts")
    with cluster.connect(user="shadower") as owner:
        owner.execute("""create function shadows.mark(what text) returns boolean language plpgsql
                         set search_path = pg_catalog as $$
                         begin raise warning '% % ran as %', 'mysmshook-shadow', what, current_user; return true; end $$""")
        notices = []
        owner.add_notice_handler(lambda d: notices.append(d.message_primary))
        owner.execute(PLANT)
        counts = dict(m.split(": ") for m in notices)
        # Enough of each to mean something (PostgreSQL 15 plants 2,734 functions and aggregates,
        # 865 operators and 68 domains).
        assert int(counts["functions and aggregates"]) > 1500
        assert int(counts["operators"]) > 300
        assert int(counts["domains"]) > 50
        owner.execute("grant execute on all functions in schema shadows to public")
    yield
    with cluster.connect() as admin:
        admin.execute("drop schema shadows cascade")
        for role in ROLES:
            admin.execute(f"drop owned by {role}")
            admin.execute(f"drop role {role}")
        admin.execute("drop role shadower")


class Session:
    """A connection as `role`, with `search_path` and this session's own temp shadows, that
    collects what the shadows report."""

    def __init__(self, cluster, role, search_path):
        self.role = role
        self.ran = []
        self.conn = cluster.connect(user=role)
        self.conn.add_notice_handler(self._notice)
        if search_path is not None:
            for table in TABLES:  # pg_temp is searched first for relations and types
                self.conn.execute(f"create temp table {table} (like pg_catalog.pg_class)")
            for name in ("text", "jsonb", "uuid", "int4", "int8", "float8", "numeric", "bool", "bytea",
                         "timestamptz", "interval", "oid", "xid8"):
                self.conn.execute(f"create domain pg_temp.{name} as pg_catalog.{name} "
                                  f"check (shadows.mark('temp domain {name}'))")
            self.conn.execute(f"set search_path = {search_path}")

    def _notice(self, diagnostic):
        message = diagnostic.message_primary or ""
        if message.startswith(MARK):
            self.ran.append(message)

    def others(self):
        """The shadows that ran as another role than this session's."""
        return sorted({m for m in self.ran if not m.endswith(" ran as " + self.role)})

    def one(self, sql, params=()):
        return self.conn.execute(sql, params).fetchone()[0]

    def close(self):
        self.conn.close()


def sms_event(user, phone):
    event = seed("sms_auth.json")
    event["user"]["id"] = user
    event["sms"]["phone"] = phone
    event["sms"]["otp"] = "561166"
    return event


def latest_job(db):
    """What a hook call made, without what differs from call to call."""
    row = db.execute("""select channel, action_type, status, priority, max_retries,
                               round(extract(epoch from expires_at - created_at)), scheduled_at <= now(),
                               job_data->>'code', job_data ? 'to'
                          from mysmshook.job_queue order by created_at desc, job_id limit 1""").fetchone()
    return row


def change_configuration(db):
    """A change the SMS hook's cached policy must notice (a limit no call here reaches)."""
    db.execute("insert into mysmshook.limits (name, scope, per, maximum) values "
               "(%s, 'ip', '1 hour', 1000) on conflict do nothing", (f"probe_{id(db)}",))
    db.execute("update mysmshook.limits set maximum = maximum + 1")


def hook_calls(db, session, round_):
    """Both hooks and a refusal, as the auth server calls them; their answers and jobs."""
    results = []
    phone = f"121255501{round_:02d}"
    for hook, event in [
        ("send_sms", sms_event(f"00000000-0000-0000-0000-{round_:012d}", phone)),
        ("send_email", seed("email_seed.json")),
        ("send_sms", sms_event("00000000-0000-0000-0000-000000000999", "33612345678")),  # geo: refused
    ]:
        answer = session.one(f'select "mysmshook"."{hook}"(%s)', (Jsonb(event),))
        results.append((hook, answer, latest_job(db) if answer == {} else None))
    return results


def worker_calls(db, session, round_):
    phone = f"+121255502{round_:02d}"
    db.execute("select mysmshook.send_sms(%s)", (Jsonb(sms_event(f"00000000-0000-0000-0000-1{round_:011d}", phone)),))
    session.conn.execute("call mysmshook.run_worker()")
    job = db.execute("select status, provider, retry_count, last_error from mysmshook.job_queue "
                     "order by created_at desc limit 1").fetchall()
    pruned = session.one("select mysmshook.prune_cron_history('1 day')")
    return [job, pruned is not None]


def remote_calls(db, session, round_):
    """mysmshook-worker's calls, as it makes them: the configuration, housekeeping, a claim, a
    renewal, a release, a claim again, its outcome, the metrics, the accepted prefixes, and its
    receipts endpoint's two calls."""
    phone = f"+121255504{round_:02d}"
    db.execute("select mysmshook.send_sms(%s)", (Jsonb(sms_event(f"00000000-0000-0000-0000-3{round_:011d}", phone)),))
    one = session.one
    config = one("select mysmshook.worker_config()")
    fingerprint = one("select mysmshook.config_fingerprint(%s)", ([],))
    one("select mysmshook.worker_housekeeping()")
    one("select mysmshook.rescue_expired_leases()")
    token = str(uuid.uuid4())
    claim = ("select job_id, channel, action_type, priority, retry_count, max_retries, rescues, superseded "
             "from mysmshook.claim_jobs(10, '30 seconds', %s)")
    claimed = session.conn.execute(claim, (token,)).fetchall()
    renewed = one("select mysmshook.renew_leases(%s::pg_catalog.uuid[], '30 seconds')", ([token],))
    released = one("select mysmshook.release_jobs(%s::pg_catalog.uuid[], %s::pg_catalog.uuid[])",
                   ([str(j[0]) for j in claimed], [token] * len(claimed)))
    claimed = session.conn.execute(claim, (token,)).fetchall()
    outcomes = [{"job_id": str(j[0]), "token": token, "status": "completed", "retry_charged": False,
                 "provider": "gateway", "channel": "sms", "attempts": []} for j in claimed]
    recorded = session.conn.execute("select recorded from mysmshook.record_outcomes(%s)", (Jsonb(outcomes),)).fetchall()
    metrics = one("select mysmshook.metrics_prometheus()")
    prefixes = one("select mysmshook.worker_number_prefixes()")
    # Its receipts endpoint: the provider's settings, then a verified receipt.
    kind = one("select kind from mysmshook.provider_settings('gateway')")
    receipt = one("select mysmshook.record_receipt('gateway', %s, %s, 'delivered', 'delivered', null)",
                  (f"gw-remote-{round_}", f"evt-remote-{round_}"))
    return [sorted(config), [p["name"] for p in config["providers"]], fingerprint.split("/")[1],
            [j[1:] for j in claimed], renewed, released, recorded, bool(metrics), prefixes, kind,
            sorted(receipt)]


def monitor_calls(db, session, round_):
    rows = session.conn.execute("select * from mysmshook.metrics('15 minutes')").fetchall()
    text = session.one("select mysmshook.metrics_prometheus()")
    # (not oldest_due_seconds and the latencies: they move with the clock)
    return [[r[:7] + r[8:18] for r in rows], sorted(line.split(" ")[0] for line in text.splitlines())]


def receipt_calls(db, session, round_):
    body = json.dumps({"type": "message.status", "data": {"message_id": f"gw-{round_}", "status": "delivered"}})
    webhook = StandardWebhook(GATEWAY_SECRET)
    at = datetime.datetime.now(tz=datetime.timezone.utc)
    headers = {"webhook-id": f"evt_{round_}", "webhook-timestamp": str(int(at.timestamp())),
               "webhook-signature": webhook.sign(f"evt_{round_}", at, body)}
    answer = session.one("select mysmshook.receive_receipt(%s, %s, %s, %s)",
                         ("gateway", "https://acme.test/receipts", Jsonb(headers), body))
    try:
        session.one("select mysmshook.receive_receipt(%s, %s, %s, %s)",
                    ("gateway", "https://acme.test/receipts", Jsonb(headers), body + " "))
        forged = "accepted"
    except psycopg.errors.InvalidAuthorizationSpecification as e:
        forged = str(e).split("\n")[0]
    return [sorted(answer), answer["duplicate"], forged]


# Every function a role other than the owner may execute, and how this test calls it.
CALLERS = {
    "supabase_auth_admin": (hook_calls, {"send_sms(jsonb)", "send_email(jsonb)"}),
    "priv_worker": (worker_calls, {"run_worker(interval)", "worker_begin(double precision)",
                                   "worker_step()", "prune_cron_history(interval)"}),
    "priv_remote": (remote_calls, {"run_worker(interval)", "worker_begin(double precision)",
                                   "worker_step()", "prune_cron_history(interval)",
                                   "claim_jobs(integer,interval,uuid)", "renew_leases(uuid[],interval)",
                                   "release_jobs(uuid[],uuid[])", "record_outcomes(jsonb)",
                                   "rescue_expired_leases()", "config_fingerprint(text[])", "worker_config()",
                                   "worker_housekeeping()", "metrics_prometheus(interval)", "worker_number_prefixes()",
                                   "provider_settings(text)", "record_receipt(text,text,text,text,text,text)"}),
    "priv_monitor": (monitor_calls, {"metrics(interval)", "metrics_prometheus(interval)"}),
    "priv_receipts": (receipt_calls, {"receive_receipt(text,text,jsonb,text)"}),
}


def test_only_the_functions_this_file_calls_are_executable_by_others(cluster, db, shadows):
    """A function newly granted to a role must be added to CALLERS (and so to the test below);
    and no table, view or sequence of the extension is granted to any of these roles."""
    for role in ["anon", "authenticated", "app_user", "shadower", *CALLERS]:
        executable = {r[0] for r in db.execute("""
            select pg_catalog.regexp_replace(p.oid::regprocedure::text, '^mysmshook\\.', '')
              from pg_catalog.pg_proc p
             where p.pronamespace = 'mysmshook'::regnamespace
               and pg_catalog.has_function_privilege(%s, p.oid, 'execute')""", (role,)).fetchall()}
        expected = CALLERS[role][1] if role in CALLERS else set()
        assert executable == expected, role
        readable = db.execute("""
            select c.relname from pg_catalog.pg_class c
             where c.relnamespace = 'mysmshook'::regnamespace and c.relkind in ('r', 'v', 'S', 'm', 'p')
               and pg_catalog.has_table_privilege(%s, c.oid, 'select, insert, update, delete, truncate, references, trigger')
            """, (role,)).fetchall()
        assert readable == [], role


def test_an_unpinned_security_definer_function_is_caught(cluster, db, shadows):
    """The harness itself: a SECURITY DEFINER function with an unqualified call, as the hooks'
    policy load had, runs the caller's shadow as its owner, and the test sees it."""
    db.execute("""create function public.probe_unpinned() returns int language plpgsql security definer as $$
                  begin return pg_catalog.cardinality(array_remove(array[1, 2]::oid[], 1::oid)); end $$""")
    try:
        db.execute("grant execute on function public.probe_unpinned() to supabase_auth_admin")
        session = Session(cluster, "supabase_auth_admin", "shadows, pg_catalog")
        assert session.one("select public.probe_unpinned()") == 1
        assert f"{MARK} array_remove(_oid,oid) ran as postgres" in session.others()
        assert f"{MARK} temp domain oid ran as postgres" in session.others()
        session.close()
    finally:
        db.execute("drop function public.probe_unpinned()")


@pytest.mark.parametrize("search_path", ["shadows", "shadows, pg_catalog"])
@pytest.mark.parametrize("role", list(CALLERS))
def test_shadows_on_the_callers_search_path_never_run_inside(cluster, db, mock, shadows, role, search_path):
    """Every function the role may execute, in a new session (the SMS hook loads its policy)
    and after a configuration change (it loads it again), answers as it does for a caller
    without shadows, and no shadow runs as anyone but the caller."""
    add_provider(db, "gateway", "webhook", {"url": mock.url, "secret": GATEWAY_SECRET, "app_id": "demo"})
    set_chain(db, "sms", ["gateway"])
    db.execute("insert into mysmshook.geo_rules (region, allow) values ('FR', false)")
    calls = CALLERS[role][0]
    if role in ("priv_receipts", "priv_monitor"):  # jobs to count, and whose receipts to hand in
        for round_ in range(4):
            db.execute("select mysmshook.send_sms(%s)", (Jsonb(sms_event(
                f"00000000-0000-0000-0000-2{round_:011d}", f"121255503{round_:02d}")),))
        ids = iter(f"gw-{i}" for i in range(4))
        mock.responder = lambda req: ok_json({"code": "ok", "message_id": next(ids)})
        db.execute("call mysmshook.run_worker()")

    answers = {}
    for shadowed, first_round in [(False, 0), (True, 2)]:
        session = Session(cluster, role, search_path if shadowed else None)
        try:
            cold = calls(db, session, first_round)
            change_configuration(db)
            warm = calls(db, session, first_round + 1)
            answers[shadowed] = (cold, warm)
            if shadowed:  # not even as the caller: the functions name nothing it can shadow
                assert session.ran == [], "shadows ran inside the extension's functions"
        finally:
            session.close()
    assert answers[True] == answers[False]
