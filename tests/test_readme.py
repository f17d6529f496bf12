"""The README's SQL examples, run as written: a reader pastes them, so they must work.

Every ```sql block of README.md is a test case (its id names the README line) that runs the
block's statements one by one, as psql sends them when the block is pasted, and fails on the
first error, naming the statement's README line. A statement that calls a hook (send_sms,
send_email) must also answer '{}': a 400 or 429 means the example queues nothing.

Each block runs on its own, against a fresh install's configuration (no providers, routes,
templates, limits or geo rules; an empty queue), not after the blocks before it: a reader
pastes one example at a time, so each must stand alone. What the prose assumes the reader
already has (their own role, the provider of a section's story) is stated right before the
block with a marker, an HTML comment that GitHub does not show:

    <!-- readme-test: given SQL -->        SQL this test runs first (the reader's prerequisite)
    <!-- readme-test: skip (why) -->       not run; the reason is the skip's message

so that an intentional skip is told apart from a forgotten block: a ```sql block with no skip
marker is run, and fails if it does not work. A block that creates an extension (the install)
runs on a cluster of its own, new and empty, as cluster.sh makes one (with the libraries the
README's postgresql.conf preloads): the suite's cluster already has the extensions. A block that
polls for more than a few seconds is marked slow.

What a block leaves outside the tables the db fixture resets is undone after it: the roles it
created, the pg_cron jobs it scheduled (and their runs), the settings it changed with ALTER
SYSTEM. A role a block creates that exists already is dropped first, as the reader's cluster
would not have it.

test_readme_blocks_are_accounted_for fails on SQL the cases above would not see: a fence
labelled with another SQL dialect name (psql, pgsql, postgresql, ...), an unlabelled block that
starts with SQL and has no skip marker, a marker not attached to a block or not understood.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from conftest import REPO, started_cluster

README = REPO / "README.md"

MARKER = re.compile(r"^\s*<!--\s*readme-test:\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([^\s`]*)")
SQL_DIALECTS = {"psql", "pgsql", "postgres", "postgresql", "plpgsql", "sql"}
SQL_START = re.compile(
    r"^\s*(select|insert|update|delete|create|alter|drop|grant|revoke|call|with|load|set|"
    r"begin|truncate|comment|do)\b", re.I)
HOOK_CALL = re.compile(r"\bmysmshook\s*\.\s*send_(sms|email)\s*\(", re.I)
SLOW_POLL_SECONDS = 10


@dataclass
class Block:
    line: int                 # the opening fence's line (1-based)
    info: str                 # the fence's info string ("sql", "" ...)
    code: str
    section: str
    markers: list = field(default_factory=list)  # (line, text)

    @property
    def skip(self):
        for _, text in self.markers:
            m = re.fullmatch(r"skip\s*\((.+)\)", text)
            if m:
                return m.group(1)
        return None

    @property
    def givens(self):
        """(line, SQL) of each given, the SQL ending with its semicolon."""
        return [(line, text[len("given"):].strip().rstrip(";") + ";")
                for line, text in self.markers if re.match(r"given\s", text)]


def parse_readme(text):
    """(blocks, stray markers): every fenced block with the markers on the lines right above its
    opening fence, and the markers that are not attached to a block."""
    lines = text.splitlines()
    blocks, stray, pending, section = [], [], [], ""
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = MARKER.match(line)
        fence = FENCE.match(line)
        if marker:
            pending.append((i + 1, marker.group(1)))
        elif fence:
            indent, ticks, info = fence.groups()
            body, j = [], i + 1
            while j < len(lines) and not re.match(rf"^\s*{re.escape(ticks[0])}{{{len(ticks)},}}\s*$", lines[j]):
                body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j])
                j += 1
            if j == len(lines):
                raise ValueError(f"README.md:{i + 1}: the fence is never closed")
            blocks.append(Block(i + 1, info, "\n".join(body) + "\n", section, pending))
            pending = []
            i = j
        else:
            if line.startswith("#"):
                section = line.lstrip("#").strip()
            if "readme-test" in line:
                stray.append((i + 1, line.strip()))
            stray.extend(pending)
            pending = []
        i += 1
    stray.extend(pending)
    return blocks, stray


def split_statements(text):
    """(offset, statement) of each statement of `text`, split at semicolons as psql splits what
    is pasted into it: not inside quotes, identifiers, dollar quotes or comments. Pieces that are
    only comments are dropped; a last statement without its semicolon is returned without one
    (pasted into psql, it would never be sent). The offset is the statement's first character."""
    out, i, n, first = [], 0, len(text), None
    while i < n:
        c = text[i]
        if text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            continue
        if first is None and not c.isspace() and c != ";":
            first = i
        if c in "'\"":
            backslashes = c == "'" and i > 0 and text[i - 1] in "eE" and (i < 2 or not (text[i - 2].isalnum() or text[i - 2] == "_"))
            i += 1
            while i < n:
                if backslashes and text[i] == "\\":
                    i += 2
                    continue
                if text[i] == c:
                    if text.startswith(c * 2, i):
                        i += 2
                        continue
                    break
                i += 1
            i += 1
            continue
        if c == "$" and not (i > 0 and (text[i - 1].isalnum() or text[i - 1] in "_$")):
            tag = re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$", text[i:])
            if tag:
                end = text.find(tag.group(0), i + len(tag.group(0)))
                i = n if end < 0 else end + len(tag.group(0))
                continue
        if c == ";":
            if first is not None:
                out.append((first, text[first:i + 1]))
            first = None
        i += 1
    if first is not None:
        out.append((first, text[first:].rstrip()))
    return out


BLOCKS, STRAY_MARKERS = parse_readme(README.read_text())
SQL_BLOCKS = [b for b in BLOCKS if b.info == "sql"]


def slow_poll(block):
    seconds = [int(s) for s in re.findall(r"poll_for\s*=>\s*'(\d+)\s*seconds?'", block.code)]
    return max(seconds, default=0) > SLOW_POLL_SECONDS


def creates_extension(block):
    return any(re.match(r"create\s+extension\b", s, re.I) for _, s in split_statements(block.code))


def created_roles(texts):
    return {m.group(2) for t in texts for m in re.finditer(r"\bcreate\s+(role|user)\s+\"?(\w+)", t, re.I)}


@pytest.fixture(scope="module")
def new_cluster():
    """A cluster of its own, as cluster.sh makes one, with the shared_preload_libraries of the
    README's postgresql.conf; nothing installed."""
    preload = re.search(r"(?m)^shared_preload_libraries = '([^']*)'", README.read_text()).group(1)
    with started_cluster("mysmshook-readme-", preload=preload) as c:
        yield c


def run_statements(conn, text, first_line, what):
    """Runs each statement of `text` (whose first line is README line `first_line`) on `conn`."""
    for offset, statement in split_statements(text):
        line = first_line + text.count("\n", 0, offset)
        assert statement.endswith(";"), (
            f"README.md:{line}: {what} ends without a semicolon: pasted into psql it is never sent\n{statement}")
        try:
            cur = conn.execute(statement)
            rows = cur.fetchall() if cur.description else None
        except psycopg.Error as e:
            pytest.fail(f"README.md:{line}: {what} fails as written:\n{statement}\n"
                        f"{type(e).__name__}: {e}", pytrace=False)
        if HOOK_CALL.search(statement):
            answers = [value for row in rows or [] for value in row]
            assert answers and all(a == {} for a in answers), (
                f"README.md:{line}: the hook did not queue the example's message (answers {answers!r}):\n{statement}")


def cron_jobs(conn):
    return {jobid: (username, command) for jobid, username, command in
            conn.execute("select jobid, username, command from cron.job")}


def auto_conf(conn, name):
    row = conn.execute("""select setting from pg_file_settings
                           where name = %s and sourcefile like '%%postgresql.auto.conf'
                           order by seqno desc limit 1""", (name,)).fetchone()
    return row[0] if row else None


def drop_role(conn, role):
    conn.execute(sql.SQL("drop owned by {}").format(sql.Identifier(role)))
    conn.execute(sql.SQL("drop role {}").format(sql.Identifier(role)))


def case(block):
    marks = [pytest.mark.slow] if slow_poll(block) else []
    return pytest.param(block, id=f"line{block.line}", marks=marks)


@pytest.mark.parametrize("block", [case(b) for b in SQL_BLOCKS])
def test_readme_sql_block(block, request):
    if block.skip:
        pytest.skip(f"README.md:{block.line}: {block.skip}")
    what = f"the example of section {block.section!r}"
    if creates_extension(block):
        with request.getfixturevalue("new_cluster").connect() as conn:
            for line, given in block.givens:
                run_statements(conn, given, line, "its given")
            run_statements(conn, block.code, block.line + 1, what)
        return

    db = request.getfixturevalue("db")
    db.execute("delete from mysmshook.routes")  # a fresh install's configuration: no routes either
    for role in created_roles([given for _, given in block.givens] + [block.code]):
        if db.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone():
            drop_role(db, role)
    roles_before = {r for (r,) in db.execute("select rolname from pg_roles")}
    jobs_before = cron_jobs(db)
    settings = sorted(set(re.findall(r"alter\s+system\s+set\s+([\w.]+)", block.code, re.I)))
    settings_before = {name: auto_conf(db, name) for name in settings}
    try:
        for line, given in block.givens:
            run_statements(db, given, line, "its given")
        run_statements(db, block.code, block.line + 1, what)
    finally:
        new_jobs = {jobid: job for jobid, job in cron_jobs(db).items() if jobid not in jobs_before}
        for jobid in new_jobs:
            db.execute("select cron.unschedule(%s::bigint)", (jobid,))
        if new_jobs:  # a run pg_cron started meanwhile
            db.execute("select pg_terminate_backend(pid) from pg_stat_activity where pid <> pg_backend_pid() "
                       "and query = any(%s)", ([command for _, command in new_jobs.values()],))
        for (role,) in db.execute("select rolname from pg_roles").fetchall():
            if role not in roles_before:
                drop_role(db, role)
        for name, value in settings_before.items():
            if value is None:
                db.execute(f"alter system reset {name}")
            else:
                db.execute(sql.SQL("alter system set {} = {}").format(sql.SQL(name), sql.Literal(value)))
        if settings:
            db.execute("select pg_reload_conf()")


def test_readme_blocks_are_accounted_for():
    problems = []
    for line, text in STRAY_MARKERS:
        problems.append(f"README.md:{line}: a readme-test marker not right above a code block: {text}")
    for block in BLOCKS:
        where = f"README.md:{block.line}"
        for line, text in block.markers:
            if not (re.fullmatch(r"skip\s*\(.+\)", text) or re.match(r"given\s+\S", text)):
                problems.append(f"README.md:{line}: not understood: readme-test: {text} "
                                f"(say 'skip (why)' or 'given SQL')")
        if block.info.lower() in SQL_DIALECTS and block.info != "sql":
            problems.append(f"{where}: label the block ```sql so that it is run ({block.info!r} is not)")
        if block.info == "" and not block.skip and SQL_START.match(block.code.lstrip().split("\n", 1)[0]):
            problems.append(f"{where}: an unlabelled block of SQL: label it ```sql (it is then run) "
                            f"or mark it <!-- readme-test: skip (why) -->")
        if block.info != "sql" and block.givens:
            problems.append(f"{where}: a given on a block that is not run")
        if block.skip and block.givens:
            problems.append(f"{where}: a given on a skipped block")
    assert SQL_BLOCKS, "no ```sql block found in README.md"
    assert not problems, "\n".join(problems)


def test_statement_splitting_follows_psql():
    """The splitter the cases rely on: semicolons in quotes, dollar quotes and comments do not
    end a statement; comment-only pieces are not statements."""
    text = ("-- a; comment\nselect 'a;b', \"c;d\" from t; /* x; /* nested; */ */\n"
            "select cron.schedule('n', '5 seconds', $$call p(poll_for => '4 seconds');$$);\n"
            "select E'it\\'s;'; select $tag$;$tag$ ;\n-- trailing; comment\n")
    statements = [s for _, s in split_statements(text)]
    assert statements == [
        "select 'a;b', \"c;d\" from t;",
        "select cron.schedule('n', '5 seconds', $$call p(poll_for => '4 seconds');$$);",
        "select E'it\\'s;';",
        "select $tag$;$tag$ ;",
    ], statements
    assert [s for _, s in split_statements("select 1;\nselect 2")] == ["select 1;", "select 2"]
