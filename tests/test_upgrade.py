"""ALTER EXTENSION mysmshook UPDATE from every released version: queued jobs, configuration and
operators' grants are kept (also through pg_dump and pg_restore afterwards), the queued jobs
deliver, operators' own objects on the queue keep working, and the upgraded schema is the schema
of a fresh install, initial privileges included.

A released version is built from its git tag by scripts/install_release.sh, with its own
library, so that the jobs and configuration before the upgrade are made by the released code.
"""

import hashlib
import subprocess

import psycopg
import pytest
from psycopg.types.json import Jsonb

from conftest import PG_MAJOR, REPO, seed
from test_dump_restore import dump_and_restore, grants, role

# Released versions, per PostgreSQL major they were released for (0.1.0 built for 15 only).
RELEASES = {15: ["0.1.0", "0.2.0", "0.3.0", "0.4.0", "0.5.0", "0.6.0"], 17: ["0.2.0", "0.3.0", "0.4.0", "0.5.0", "0.6.0"]}[PG_MAJOR]
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

# The schema as the catalogs describe it. Columns are compared by name: ALTER TABLE adds a
# column at the end of the table, a fresh install puts it where the CREATE TABLE has it.
CATALOG = {
    "columns": """
        select c.relname, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_catalog.pg_get_expr(d.adbin, d.adrelid), pg_catalog.col_description(c.oid, a.attnum)
          from pg_catalog.pg_attribute a
          join pg_catalog.pg_class c on c.oid = a.attrelid
          left join pg_catalog.pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
         where c.relnamespace = 'mysmshook'::regnamespace and c.relkind in ('r', 'v')
           and a.attnum > 0 and not a.attisdropped
         order by 1, 2""",
    "relations": """
        select relname, relkind, reloptions, relacl, pg_catalog.obj_description(oid, 'pg_class')
          from pg_catalog.pg_class where relnamespace = 'mysmshook'::regnamespace order by 1""",
    "constraints": """
        select conrelid::regclass::text, conname, pg_catalog.pg_get_constraintdef(oid)
          from pg_catalog.pg_constraint where connamespace = 'mysmshook'::regnamespace order by 1, 2""",
    "indexes": """
        select indexrelid::regclass::text, pg_catalog.pg_get_indexdef(indexrelid)
          from pg_catalog.pg_index i join pg_catalog.pg_class c on c.oid = i.indrelid
         where c.relnamespace = 'mysmshook'::regnamespace order by 1""",
    "functions": """
        select oid::regprocedure::text, prokind, prosecdef, provolatile, proisstrict, proparallel,
               proconfig, prorettype::regtype::text, prosrc, probin, proacl,
               pg_catalog.obj_description(oid, 'pg_proc')
          from pg_catalog.pg_proc where pronamespace = 'mysmshook'::regnamespace order by 1""",
    "views": "select viewname, definition from pg_catalog.pg_views where schemaname = 'mysmshook' order by 1",
    "triggers": """
        select tgname, pg_catalog.pg_get_triggerdef(t.oid), tgenabled
          from pg_catalog.pg_trigger t join pg_catalog.pg_class c on c.oid = t.tgrelid
         where c.relnamespace = 'mysmshook'::regnamespace and not tgisinternal order by 1""",
    "extension": """
        select pg_catalog.array_agg(pg_catalog.format('%s %s', x.table_name::regclass, x.condition)
                                    order by x.table_name::regclass::text)
          from pg_catalog.pg_extension e,
               unnest(e.extconfig, e.extcondition) as x(table_name, condition)
         where e.extname = 'mysmshook'""",
    "members": """
        select pg_catalog.pg_describe_object(classid, objid, objsubid)
          from pg_catalog.pg_depend
         where refclassid = 'pg_extension'::regclass and deptype = 'e'
           and refobjid = (select oid from pg_catalog.pg_extension where extname = 'mysmshook')
         order by 1""",
    "schema": "select nspacl from pg_catalog.pg_namespace where nspname = 'mysmshook'",
    "domains": """
        select typname, pg_catalog.format_type(typbasetype, typtypmod), typnotnull, typdefault, typacl,
               typowner::regrole::text, pg_catalog.obj_description(oid, 'pg_type')
          from pg_catalog.pg_type where typnamespace = 'mysmshook'::regnamespace and typtype = 'd' order by 1""",
    # What pg_dump takes for the extension's own privileges (it dumps only the difference): of
    # the schema, its tables, views, sequences, columns, functions, procedures and types.
    "initial privileges": """
        select pg_catalog.pg_describe_object(classoid, objoid, objsubid), privtype, initprivs::text
          from pg_catalog.pg_init_privs
         where (classoid, objoid) in (OBJECTS)
         order by 1""",
    # PostgreSQL 17 records the roles an initial privilege names in pg_shdepend (deptype 'i');
    # before 17 there are none.
    "initial privileges' roles": """
        select pg_catalog.pg_describe_object(classid, objid, objsubid), refobjid::regrole::text
          from pg_catalog.pg_shdepend
         where deptype = 'i'
           and dbid = (select oid from pg_catalog.pg_database where datname = pg_catalog.current_database())
           and (classid, objid) in (OBJECTS)
         order by 1, 2""",
}
# (catalog, oid) of the schema and of everything in it that can have privileges, columns (the
# objsubid of their table's entries) included.
OBJECTS = """
            select 'pg_namespace'::regclass::oid, 'mysmshook'::regnamespace::oid
            union all select 'pg_class'::regclass::oid, oid from pg_catalog.pg_class
                       where relnamespace = 'mysmshook'::regnamespace
            union all select 'pg_proc'::regclass::oid, oid from pg_catalog.pg_proc
                       where pronamespace = 'mysmshook'::regnamespace
            union all select 'pg_type'::regclass::oid, oid from pg_catalog.pg_type
                       where typnamespace = 'mysmshook'::regnamespace"""
CATALOG = {name: sql.replace("(OBJECTS)", f"({OBJECTS})") for name, sql in CATALOG.items()}

CONFIGURATION = {
    "providers": "select name, kind, settings, enabled from mysmshook.providers where name <> 'log' order by name",
    "routes": "select name, channel, position, calling_codes, regions, providers, app_hash, enabled "
              "from mysmshook.routes order by name",
    "templates": "select channel, action_type, language, subject, body, html from mysmshook.templates order by 1, 2, 3",
}


# Released upgrade scripts are never edited (a database that ran one must match a fresh
# install of the same version): a change to one fails here. Add a script when it is released.
RELEASED_SCRIPTS = {
    "mysmshook--0.1.0--0.2.0.sql": "080105160b11907d35c81d1e89237299f937e49db1041d3c2ea66528f08a8ee4",
    "mysmshook--0.2.0--0.3.0.sql": "62d40e5ee5540a3be4212c375cea570cecca7b601c39ecb91de43610b50bfdcc",
    "mysmshook--0.3.0--0.4.0.sql": "054eb6e3737da8343f324865bf41c10294fa3f0089f6065b0073acef157136de",
    "mysmshook--0.4.0--0.5.0.sql": "f6589f6c802b800a7e11e8da936751aee89c0c00fa8674c363db3b6e7ca238f8",
    "mysmshook--0.5.0--0.6.0.sql": "64835fd4f672968c18404d7cefbda82f8b00b5f2835db2ea857d707002ba3b7f",
}


def test_released_upgrade_scripts_are_unchanged():
    for name, digest in RELEASED_SCRIPTS.items():
        assert hashlib.sha256((REPO / "sql" / name).read_bytes()).hexdigest() == digest, name


def catalog(conn):
    return {name: conn.execute(sql).fetchall() for name, sql in CATALOG.items()}


def older_than(version, other):
    return tuple(map(int, version.split("."))) < tuple(map(int, other.split(".")))


# Roles an operator gave the hooks, the receipts endpoint and the metrics to (README), under the
# released version. The scripts to 0.2.0, 0.3.0 and 0.4.0 recorded such grants as the
# extension's initial privileges, which pg_dump leaves out: 0.6.0 puts pg_init_privs back as a
# fresh install has it. supabase_auth_admin has the hooks from the install.
OPERATOR_ROLES = ["upgrade_hooks", "upgrade_receipts", "upgrade_monitor", "app_user", "supabase_auth_admin"]


def grant_operator_roles(conn):
    """Grants as an operator made them under the installed version; returns what they give, as
    test_dump_restore.grants lists it."""
    def exists(signature):
        return conn.execute("select pg_catalog.to_regprocedure(%s) is not null", (signature,)).fetchone()[0]

    given = [("app_user", "table mysmshook.queue_status"),  # build_old_database's
             ("supabase_auth_admin", "schema mysmshook"),
             ("supabase_auth_admin", "function mysmshook.send_sms(jsonb)"),
             ("supabase_auth_admin", "function mysmshook.send_email(jsonb)")]
    if exists("mysmshook.grant_hook_access(regrole)"):
        conn.execute("select mysmshook.grant_hook_access('upgrade_hooks')")
    else:
        conn.execute("grant usage on schema mysmshook to upgrade_hooks")
        conn.execute("grant execute on function mysmshook.send_sms(jsonb), mysmshook.send_email(jsonb) to upgrade_hooks")
    given += [("upgrade_hooks", "schema mysmshook"),
              ("upgrade_hooks", "function mysmshook.send_sms(jsonb)"),
              ("upgrade_hooks", "function mysmshook.send_email(jsonb)")]
    if exists("mysmshook.receive_receipt(text, text, jsonb, text)"):
        conn.execute("grant usage on schema mysmshook to upgrade_receipts")
        conn.execute("grant execute on function mysmshook.receive_receipt(text, text, jsonb, text) to upgrade_receipts")
        given += [("upgrade_receipts", "schema mysmshook"),
                  ("upgrade_receipts", "function mysmshook.receive_receipt(text,text,jsonb,text)")]
    if exists("mysmshook.grant_monitor_access(regrole)"):
        conn.execute("select mysmshook.grant_monitor_access('upgrade_monitor')")
        given += [("upgrade_monitor", "schema mysmshook"),
                  ("upgrade_monitor", "function mysmshook.metrics(interval)"),
                  ("upgrade_monitor", "function mysmshook.metrics_prometheus(interval)")]
    return sorted(given)


def revoke_operator_grants(conn, given):
    """Takes back what grant_operator_roles gave (and build_old_database's grant to app_user):
    the privileges are then a fresh install's."""
    for grantee, granted in given:
        if grantee != "supabase_auth_admin":
            kind, name = granted.split(" ", 1)
            privilege = {"schema": "usage", "table": "select", "function": "execute"}[kind]
            conn.execute(f"revoke {privilege} on {kind} {name} from {grantee}")


# Operators' own objects on the queue: a view, a row-level security policy, a trigger and a
# publication with a row filter. No update needs them dropped, except this one: the released
# 0.4.0 -> 0.5.0 script changes the types of job_queue.status and .channel (to domains), which
# PostgreSQL refuses while a view, policy, trigger or publication filter names the column, and
# released scripts cannot change. From a version before 0.5.0, objects that name status or
# channel are dropped before the update and made again after it; those that name other columns
# stay. From 0.5.0 on, any of them stay (0.6.0 changes no column). A publication's row filter
# can never name status or channel from 0.5.0 on (domains are user-defined types, which row
# filters refuse).
USER_OBJECTS_SETUP = [
    "create table public.upgrade_status_log (job_id uuid, status text)",
    """create function public.upgrade_log_status() returns trigger language plpgsql as $$
       begin
           insert into public.upgrade_status_log (job_id, status) values (new.job_id, new.status::text);
           return null;
       end;
       $$""",
]
USER_OBJECTS_TEARDOWN = ["drop table public.upgrade_status_log", "drop function public.upgrade_log_status()"]


def user_objects(names_status):
    """kind -> statements making it. names_status: the view, policy and trigger name status (the
    publication's filter then does not: it cannot from 0.5.0 on, see above), else none names
    status or channel."""
    columns, rows, event = (("status, channel", "status = 'completed'", "update of status") if names_status
                            else ("priority, action_type", "action_type = 'mfa'", "update"))
    return {
        "view": [f"create view public.upgrade_jobs as select job_id, {columns} from mysmshook.job_queue"],
        "policy": ["alter table mysmshook.job_queue enable row level security",
                   "create policy upgrade_policy on mysmshook.job_queue for select to upgrade_auditor "
                   f"using ({rows})"],
        "trigger": [f"create trigger upgrade_trigger after {event} on mysmshook.job_queue "
                    "for each row execute function public.upgrade_log_status()"],
        # A publication of updates may filter only on columns of the replica identity: without
        # FULL, every UPDATE of the queue (the worker's too) fails.
        "publication": ["alter table mysmshook.job_queue replica identity full",
                        "create publication upgrade_publication for table mysmshook.job_queue "
                        "where (action_type = 'mfa')"],
    }


DROP_USER_OBJECT = {
    "view": ["drop view public.upgrade_jobs"],
    "policy": ["drop policy upgrade_policy on mysmshook.job_queue",
               "alter table mysmshook.job_queue disable row level security"],
    "trigger": ["drop trigger upgrade_trigger on mysmshook.job_queue"],
    "publication": ["drop publication upgrade_publication",
                    "alter table mysmshook.job_queue replica identity default"],
}

# Before 0.5.0: an object naming status, and the error the update then stops with.
BLOCKING_USER_OBJECTS = {
    "view": (user_objects(True)["view"], "cannot alter type of a column used by a view or rule"),
    "policy": (user_objects(True)["policy"], "cannot alter type of a column used in a policy definition"),
    "trigger": (user_objects(True)["trigger"], "cannot alter type of a column used in a trigger definition"),
    "publication": (["alter table mysmshook.job_queue replica identity full",
                     "create publication upgrade_publication for table mysmshook.job_queue "
                     "where (status = 'completed')"],
                    "cannot alter type of a column used by a publication WHERE clause"),
}

# The user objects as PostgreSQL describes them: the same before and after the update.
USER_OBJECT_DEFINITIONS = """
    select pg_catalog.pg_get_viewdef('public.upgrade_jobs'::regclass),
           (select relrowsecurity from pg_catalog.pg_class where oid = 'mysmshook.job_queue'::regclass),
           (select qual from pg_catalog.pg_policies where policyname = 'upgrade_policy'),
           (select pg_catalog.pg_get_triggerdef(oid) from pg_catalog.pg_trigger where tgname = 'upgrade_trigger'),
           (select rowfilter from pg_catalog.pg_publication_tables where pubname = 'upgrade_publication'),
           (select relreplident from pg_catalog.pg_class where oid = 'mysmshook.job_queue'::regclass)"""


def run(conn, statements):
    for statement in statements:
        conn.execute(statement)


def check_user_objects_work(conn):
    """After the update and the worker's run: the view reads the queue, the policy lets the
    auditor see its rows only, the trigger saw the worker's updates (the publication's filter
    let them through: USER_OBJECT_DEFINITIONS shows it is still there)."""
    (jobs,) = conn.execute("select count(*) from mysmshook.job_queue").fetchone()
    assert conn.execute("select count(*) from public.upgrade_jobs").fetchone() == (jobs,)
    (qual,) = conn.execute("select qual from pg_catalog.pg_policies where policyname = 'upgrade_policy'").fetchone()
    (allowed,) = conn.execute(f"select count(*) from mysmshook.job_queue where {qual}").fetchone()
    assert 0 < allowed < jobs
    conn.execute("grant usage on schema mysmshook to upgrade_auditor")
    conn.execute("grant select on mysmshook.job_queue to upgrade_auditor")
    conn.execute("set role upgrade_auditor")
    try:
        seen = conn.execute("select count(*) from mysmshook.job_queue").fetchone()
    finally:
        conn.execute("reset role")
    conn.execute("revoke select on mysmshook.job_queue from upgrade_auditor")
    conn.execute("revoke usage on schema mysmshook from upgrade_auditor")
    assert seen == (allowed,)
    logged = {status for (status,) in conn.execute("select status from public.upgrade_status_log")}
    assert "completed" in logged, logged


@pytest.fixture(scope="module")
def releases():
    for version in RELEASES:
        subprocess.run([REPO / "scripts" / "install_release.sh", version], check=True)


def sms_event(user, phone, otp):
    event = seed("sms_auth.json")
    event["user"]["id"] = user
    event["sms"]["phone"] = phone
    event["sms"]["otp"] = otp
    return event


def build_old_database(cluster, dbname, version, mock_url):
    """The released version, configured and with jobs in every state, made by its own code."""
    with cluster.connect() as admin:
        admin.execute(f"drop database if exists {dbname}")
        admin.execute(f"create database {dbname}")
    with cluster.connect(dbname=dbname) as old:
        old.execute(f"create extension mysmshook version '{version}'")
        (library,) = old.execute("select probin from pg_proc where proname = 'send_sms'").fetchone()
        assert library == "$libdir/mysmshook_release_" + version.replace(".", "_")  # its own code
        old.execute("insert into mysmshook.providers (name, kind, settings) values ('gateway', 'webhook', %s)",
                    (Jsonb({"url": mock_url, "secret": SECRET, "app_id": "upgrade"}),))
        if version == "0.1.0":  # made default routes to its log provider
            old.execute("update mysmshook.routes set providers = '{gateway}' where name = 'sms'")
        else:  # starts with no rows: the built-in log route takes what no route takes
            old.execute("insert into mysmshook.routes (name, channel, providers) values ('sms', 'sms', '{gateway}')")
        old.execute("insert into mysmshook.routes (name, channel, position, regions, providers) "
                    "values ('latam', 'sms', 10, '{MX,BR}', '{gateway,log}')")
        old.execute("insert into mysmshook.templates (channel, action_type, language, body) "
                    "values ('sms', 'mfa', 'en', 'Upgrade code {{ .Token }}')")
        for i, state in enumerate(["pending", "running", "retry", "completed", "failed", "expired"]):
            (answer,) = old.execute("select mysmshook.send_sms(%s)", (Jsonb(sms_event(
                f"00000000-0000-0000-0000-00000000000{i}", f"+5255123456{i:02d}", f"48291{i}")),)).fetchone()
            assert answer == {}
            job = "(select job_id from mysmshook.job_queue where job_data->>'code' = %s)"
            code = f"48291{i}"
            if state == "running":  # claimed by a worker that stopped (0.1.0 knew it by its pid)
                holder = "4242" if version == "0.1.0" else "gen_random_uuid()"
                old.execute(f"update mysmshook.job_queue set status = 'running', locked_by = {holder}, "
                            f"locked_until = now() - interval '1 second' where job_id = {job}", (code,))
            elif state == "retry":  # waiting for its next try
                old.execute(f"update mysmshook.job_queue set retry_count = 1, scheduled_at = now() + interval '1 hour' "
                            f"where job_id = {job}", (code,))
            elif state != "pending":
                old.execute(f"update mysmshook.job_queue set status = %s, finished_at = now() where job_id = {job}",
                            (state, code))
        # A role given the worker's one-transaction function (and table rights, as it needed),
        # before 0.4.0 (0.1.0 had no such function).
        if version in ("0.2.0", "0.3.0"):
            old.execute("grant execute on function mysmshook.dequeue_and_run_jobs() to app_user")
        # An operator's own grant on the view (0.5.0 re-creates it).
        old.execute("grant select on mysmshook.queue_status to app_user")
        (answer,) = old.execute("select mysmshook.send_email(%s)", (Jsonb(seed("email_seed.json")),)).fetchone()
        assert answer == {}
        codes = dict(old.execute("select job_id, job_data->>'code' from mysmshook.job_queue "
                                 "where channel = 'sms'").fetchall())
        return ({name: old.execute(sql).fetchall() for name, sql in CONFIGURATION.items()},
                old.execute("select job_id, status, job_data, retry_count, scheduled_at from mysmshook.job_queue "
                            "order by job_id").fetchall(), codes)


@pytest.mark.skipif(not RELEASES, reason=f"no release was made for PostgreSQL {PG_MAJOR} before this version")
@pytest.mark.parametrize("version", RELEASES)
def test_update_keeps_jobs_configuration_and_grants_and_equals_a_fresh_install(cluster, releases, mock, version,
                                                                               tmp_path):
    dbname = "upgrade_" + version.replace(".", "_")
    with cluster.connect() as admin:
        for name in ["upgrade_hooks", "upgrade_receipts", "upgrade_monitor", "upgrade_auditor"]:
            role(admin, name)
    configuration, queued, codes = build_old_database(cluster, dbname, version, mock.url)

    # A new session: the released library is loaded in the one above, the new one loads here.
    with cluster.connect(dbname=dbname) as conn:
        given = grant_operator_roles(conn)
        assert set(given) <= set(grants(conn, OPERATOR_ROLES))
        run(conn, USER_OBJECTS_SETUP)
        if older_than(version, "0.5.0"):
            # Each object that names status stops the update, which then changes nothing (see
            # BLOCKING_USER_OBJECTS); once it is dropped, the update goes through.
            for kind, (statements, error) in BLOCKING_USER_OBJECTS.items():
                run(conn, statements)
                with pytest.raises(psycopg.errors.FeatureNotSupported, match=error):
                    conn.execute("alter extension mysmshook update")
                run(conn, DROP_USER_OBJECT[kind])
            assert conn.execute("select extversion from pg_extension where extname = 'mysmshook'"
                                ).fetchone() == (version,)
            objects = user_objects(names_status=False)
        else:
            objects = user_objects(names_status=True)
        for statements in objects.values():
            run(conn, statements)
        definitions = conn.execute(USER_OBJECT_DEFINITIONS).fetchone()
        assert all(d is not None for d in definitions), definitions

        table = "select pg_relation_filenode('mysmshook.job_queue')"
        before = conn.execute(table).fetchone()
        if version == "0.6.0":
            # The new library installed over 0.6.0's files, the update not run yet: the old
            # schema's hooks name C functions the library no longer has as hooks. They answer a
            # clear error (no code is queued, nothing raises), and a configuration change,
            # whose trigger calls the old cache invalidation, goes through.
            conn.execute("update pg_proc set probin = '$libdir/mysmshook' "
                         "where pronamespace = 'mysmshook'::regnamespace and probin like '$libdir/mysmshook%'")
            with cluster.connect(dbname=dbname) as fresh_session:
                (answer,) = fresh_session.execute("select mysmshook.send_sms(%s)", (Jsonb(seed("sms_auth.json")),)).fetchone()
                assert answer["error"]["http_code"] == 503, answer
                (answer,) = fresh_session.execute("select mysmshook.send_email('{}')").fetchone()
                assert answer["error"]["http_code"] == 503, answer
                fresh_session.execute("insert into mysmshook.sms_prices values ('MX', 0.05)")
                fresh_session.execute("delete from mysmshook.sms_prices where region = 'MX'")
            assert "run ALTER EXTENSION mysmshook UPDATE" in cluster.log()
            # Default privileges that give new functions to Supabase's API roles, as a project may
            # have: the update takes them back from what it adds, as a fresh install does (checked
            # with the exposed functions below).
            conn.execute("alter default privileges grant execute on functions to anon, authenticated")
        conn.execute("alter extension mysmshook update")
        if version == "0.6.0":
            conn.execute("alter default privileges revoke execute on functions from anon, authenticated")
        if version in ("0.4.0", "0.5.0"):  # the queue is not rewritten (only its partial indexes are rebuilt)
            assert conn.execute(table).fetchone() == before
        (installed,) = conn.execute("select extversion from pg_extension where extname = 'mysmshook'").fetchone()
        (current,) = conn.execute("select default_version from pg_available_extensions where name = 'mysmshook'").fetchone()
        assert installed == current

        # Configuration and queue intact (the log provider's row went: it is built in now).
        assert {name: conn.execute(sql).fetchall() for name, sql in CONFIGURATION.items()} == configuration
        assert conn.execute("select job_id, status, job_data, retry_count, scheduled_at from mysmshook.job_queue "
                            "order by job_id").fetchall() == queued
        running = conn.execute("select locked_by, rescues, resend_key from mysmshook.job_queue "
                               "where status = 'running'").fetchone()
        assert running[0] is not None and running[1] == 0 and running[2].startswith("sms/mfa/mfa/")

        # The queued jobs deliver: the due one, the one a stopped worker held (rescued, not
        # charged a retry) and the email; the one waiting for its retry waits.
        conn.execute("call mysmshook.run_worker()")
        conn.execute("call mysmshook.run_worker()")
        states = {codes[job_id]: status for job_id, status in conn.execute(
            "select job_id, status from mysmshook.job_queue where channel <> 'email'").fetchall()}
        assert states == {"482910": "completed", "482911": "completed", "482912": "pending",
                          "482913": "completed", "482914": "failed", "482915": "expired"}, states
        (rescues,) = conn.execute("select rescues from mysmshook.job_queue where status = 'completed' "
                                  "and attempts::text like '%lease_expired%'").fetchone()
        assert rescues == 1
        bodies = sorted(r.json["body"] for r in mock.requests)
        assert bodies == ["Upgrade code 482910", "Upgrade code 482911"]
        (email,) = conn.execute("select status from mysmshook.job_queue where channel = 'email'").fetchone()
        assert email == "completed"  # through the log route (0.1.0's row, or the built-in one)
        # 0.4.0 runs the worker's steps as the owner: the old grant does not carry over.
        assert version not in ("0.2.0", "0.3.0") or conn.execute(
            "select has_function_privilege('app_user', 'mysmshook.dequeue_and_run_jobs()', 'execute')"
        ).fetchone() == (False,)

        # The operator's objects on the queue are as they were, and work.
        assert conn.execute(USER_OBJECT_DEFINITIONS).fetchone() == definitions
        check_user_objects_work(conn)
        for kind in objects:
            run(conn, DROP_USER_OBJECT[kind])
        run(conn, USER_OBJECTS_TEARDOWN)

        # Every role keeps what it was given, and nothing more.
        assert grants(conn, OPERATOR_ROLES) == given

    # ... also in a copy made by pg_dump and pg_restore (which creates the extension afresh and
    # then grants what pg_dump found beyond its initial privileges): the role given the hooks
    # signs users in there too.
    restored = dbname + "_restored"
    dump_and_restore(cluster, dbname, restored, tmp_path / "dump")
    with cluster.connect(dbname=restored) as conn:
        assert grants(conn, OPERATOR_ROLES) == given
        conn.execute("set role upgrade_hooks")
        try:
            (answer,) = conn.execute("select mysmshook.send_sms(%s)", (Jsonb(sms_event(
                "00000000-0000-0000-0000-000000000099", "+525512345699", "482999")),)).fetchone()
        finally:
            conn.execute("reset role")
        assert answer == {}
    with cluster.connect() as admin:
        admin.execute(f"drop database {restored}")

    with cluster.connect(dbname=dbname) as conn:
        revoke_operator_grants(conn, given)  # a fresh install has none of them
        upgraded = catalog(conn)

    with cluster.connect() as admin:
        admin.execute("drop database if exists upgrade_fresh")
        admin.execute("create database upgrade_fresh")
    with cluster.connect(dbname="upgrade_fresh") as fresh_conn:
        fresh_conn.execute("create extension mysmshook")
        fresh = catalog(fresh_conn)
    for part in CATALOG:
        # Initial privileges too: the scripts to 0.2.0, 0.3.0 and 0.4.0 recorded the operators'
        # grants there (a REVOKE on all of the schema records each object's whole ACL); 0.6.0
        # sets them back to a fresh install's.
        assert upgraded[part] == fresh[part], part

    # Nothing an upgrade added is executable by PUBLIC or Supabase's API roles.
    with cluster.connect(dbname=dbname) as conn:
        exposed = conn.execute("""
            select p.oid::regprocedure::text, r.rolname
              from pg_proc p, (values ('public'), ('anon'), ('authenticated')) r(rolname)
             where p.pronamespace = 'mysmshook'::regnamespace
               and (case when r.rolname = 'public'
                         then exists (select 1 from aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                                       where a.grantee = 0)
                         else has_function_privilege(r.rolname, p.oid, 'execute') end)""").fetchall()
        assert exposed == []
    with cluster.connect() as admin:
        admin.execute(f"drop database {dbname}")
        admin.execute("drop database upgrade_fresh")
