"""ALTER EXTENSION mysmshook UPDATE from every released version: queued jobs and configuration
are kept, the queued jobs deliver, and the upgraded schema is the schema of a fresh install.

A released version is built from its git tag by scripts/install_release.sh, with its own
library, so that the jobs and configuration before the upgrade are made by the released code.
"""

import hashlib
import subprocess

import pytest
from psycopg.types.json import Jsonb

from conftest import PG_MAJOR, REPO, seed

# Released versions, per PostgreSQL major they were released for (0.1.0 built for 15 only).
RELEASES = {15: ["0.1.0", "0.2.0", "0.3.0", "0.4.0", "0.5.0"], 17: ["0.2.0", "0.3.0", "0.4.0", "0.5.0"]}[PG_MAJOR]
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
    # What pg_dump takes for the extension's own privileges (it dumps only the difference).
    "initial privileges": """
        select pg_catalog.pg_describe_object(classoid, objoid, objsubid), privtype, initprivs::text
          from pg_catalog.pg_init_privs
         where (classoid = 'pg_class'::regclass
                and objoid in (select oid from pg_catalog.pg_class where relnamespace = 'mysmshook'::regnamespace))
            or (classoid = 'pg_proc'::regclass
                and objoid in (select oid from pg_catalog.pg_proc where pronamespace = 'mysmshook'::regnamespace))
         order by 1""",
}

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
}


def test_released_upgrade_scripts_are_unchanged():
    for name, digest in RELEASED_SCRIPTS.items():
        assert hashlib.sha256((REPO / "sql" / name).read_bytes()).hexdigest() == digest, name


def catalog(conn):
    return {name: conn.execute(sql).fetchall() for name, sql in CATALOG.items()}


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
def test_update_keeps_jobs_and_configuration_and_equals_a_fresh_install(cluster, releases, mock, version):
    dbname = "upgrade_" + version.replace(".", "_")
    configuration, queued, codes = build_old_database(cluster, dbname, version, mock.url)

    # A new session: the released library is loaded in the one above, the new one loads here.
    with cluster.connect(dbname=dbname) as conn:
        table = "select pg_relation_filenode('mysmshook.job_queue')"
        before = conn.execute(table).fetchone()
        conn.execute("alter extension mysmshook update")
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
        assert conn.execute("select has_table_privilege('app_user', 'mysmshook.queue_status', 'select')"
                            ).fetchone() == (True,)
        conn.execute("revoke select on mysmshook.queue_status from app_user")  # a fresh install has none
        upgraded = catalog(conn)

    with cluster.connect() as admin:
        admin.execute("drop database if exists upgrade_fresh")
        admin.execute("create database upgrade_fresh")
    with cluster.connect(dbname="upgrade_fresh") as fresh_conn:
        fresh_conn.execute("create extension mysmshook")
        fresh = catalog(fresh_conn)
    for part in CATALOG:
        # Scripts before 0.5.0 ended with a REVOKE on all of the schema, which recorded the grants
        # an operator had made (app_user's on queue_status here) as the extension's own.
        if part != "initial privileges" or version in ("0.4.0", "0.5.0"):
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
