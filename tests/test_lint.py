"""Every PL/pgSQL function of the extension, and of the SQL-only edition's own files, passes
plpgsql_check (Debian's postgresql-NN-plpgsql-check): no error, and no warning that is not
explained below."""

import pytest

from conftest import PG_MAJOR

# (function, message): why the warning is right to leave.
EXPLAINED = {
    ("mysmshook.apply_receipts(uuid[])", "target type is different type than source type"):
        "a released function (0.4.0) declares a record from a typed literal; changing it needs "
        "an upgrade of its own for no behaviour",
    # The hooks queue by assignment, not PERFORM: an assignment of a plain function call runs
    # without starting an executor (about 3 µs of a call).
    ("mysmshook.send_sms(jsonb)", 'never read variable "job_id"'): "queued by assignment, not PERFORM",
    ("mysmshook.send_email(jsonb)", 'never read variable "job_id"'): "queued by assignment, not PERFORM",
}


def require_plpgsql_check(conn):
    if not conn.execute("select 1 from pg_available_extensions where name = 'plpgsql_check'").fetchone():
        pytest.skip(f"plpgsql_check is not installed for PostgreSQL {PG_MAJOR} (scripts/bootstrap.sh installs it for 15)")
    conn.execute("create extension if not exists plpgsql_check")


def findings(conn):
    """plpgsql_check's findings on every PL/pgSQL function in schema mysmshook, and how many
    functions it checked."""
    found = conn.execute("""
        select p.oid::regprocedure::text, r.level, r.message, r.lineno, r.statement
          from pg_proc p
          join pg_language l on l.oid = p.prolang
          left join lateral (select t.tgrelid from pg_trigger t where t.tgfoid = p.oid limit 1) trg on true
         cross join lateral plpgsql_check_function_tb(p.oid, coalesce(trg.tgrelid, 0),
                                                      extra_warnings => true, security_warnings => true) r
         where l.lanname = 'plpgsql' and p.pronamespace = 'mysmshook'::regnamespace
         order by 1, r.lineno""").fetchall()
    (checked,) = conn.execute("""select count(*) from pg_proc p join pg_language l on l.oid = p.prolang
                                  where l.lanname = 'plpgsql'
                                    and p.pronamespace = 'mysmshook'::regnamespace""").fetchone()
    return found, checked


def assert_clean(conn, minimum):
    """At least `minimum` PL/pgSQL functions in schema mysmshook, and no finding unexplained
    (conn: a superuser's)."""
    require_plpgsql_check(conn)
    # Supabase Vault's two relations, as the functions that name them read them.
    conn.execute("create schema if not exists vault")
    conn.execute("create table if not exists vault.secrets (id uuid, name text, secret text, updated_at timestamptz)")
    conn.execute("create or replace view vault.decrypted_secrets as "
                 "select id, name, secret, secret as decrypted_secret, updated_at from vault.secrets")
    try:
        found, checked = findings(conn)
    finally:
        conn.execute("drop schema vault cascade")
    assert checked >= minimum, checked
    unexplained = [f for f in found if (f[0], f[2]) not in EXPLAINED]
    assert unexplained == [], "\n".join(map(str, unexplained))
    # An explanation for a warning that no longer comes is stale: drop it.
    assert {(f[0], f[2]) for f in found} >= set(EXPLAINED)


def test_every_plpgsql_function_passes_plpgsql_check(cluster, db):
    db.execute("create extension if not exists pg_cron")
    assert_clean(db, 40)


def test_plpgsql_check_reports_what_it_should(db):
    """The check bites: a function with an error and a warning is reported."""
    require_plpgsql_check(db)
    probes = {"mysmshook.lint_error()": "perform mysmshook.no_such_function_x(); return 1;",
              "mysmshook.lint_warning()": "return 1;"}
    messages = []
    for probe, body in probes.items():
        db.execute(f"create function {probe} returns int language plpgsql as "
                   f"$$ declare unused int; begin {body} end $$")
        try:
            messages += [m for (m,) in db.execute(
                "select message from plpgsql_check_function_tb(%s::regprocedure, extra_warnings => true)", (probe,))]
        finally:
            db.execute(f"drop function {probe}")
    assert any("does not exist" in m for m in messages) and any("unused variable" in m for m in messages), messages
