"""The two phone_info implementations, one contract: the extension's (Rust, the phonenumber
crate) and the SQL-only edition's (PL/pgSQL over the same crate's metadata, generated) say the
same of every number: E.164 form, calling code, region, validity and the reason."""

import functools
import random
import subprocess

from psycopg.types.json import Jsonb

from conftest import REPO, started_cluster

FIELDS = "e164, calling_code, region, valid, reason"


@functools.cache
def example_numbers():
    """The example number of every kind of every region, from the crate's metadata."""
    return subprocess.run(["cargo", "run", "--quiet", "--release", "-p", "mysmshook-phone-metadata", "--", "--examples"],
                          cwd=REPO, check=True, capture_output=True, text=True).stdout.split()


def both(db, sql_only_owner, numbers):
    query = f"select n, {FIELDS} from unnest(%s::text[]) n, mysmshook.phone_info(n) order by n"
    return db.execute(query, [numbers]).fetchall(), sql_only_owner.execute(query, [numbers]).fetchall()


def assert_same(db, sql_only_owner, numbers):
    numbers = sorted(set(numbers))
    extension, sql = both(db, sql_only_owner, numbers)
    differ = [(e, s) for e, s in zip(extension, sql) if e != s]
    assert not differ, f"{len(differ)} of {len(numbers)} differ (extension, SQL):\n" + \
        "\n".join(f"{e}\n{s}" for e, s in differ[:20])
    return extension


def test_the_metadata_file_is_generated_from_the_pinned_crate():
    check = subprocess.run([REPO / "scripts" / "generate.sh", "--check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_every_example_number_of_the_metadata_reads_the_same(db, sql_only_owner):
    examples = example_numbers()
    assert len(examples) > 1000
    rows = assert_same(db, sql_only_owner, examples)
    # The vectors are worth something: most examples are valid, across most regions.
    assert sum(r[4] for r in rows) > 0.9 * len(rows)
    assert len({r[3] for r in rows}) > 200


def test_near_misses_of_every_example_read_the_same(db, sql_only_owner):
    """Each example one digit longer or shorter, its last and first national digits changed,
    and written with a national prefix or leading zero: where validity, region and the
    prefix rules decide."""
    numbers = []
    for example in example_numbers():
        numbers += [example[:-1], example + "5", example[:-1] + "0", example[:-1] + "9"]
        for cc_length in (1, 2, 3):
            code, national = example[1:1 + cc_length], example[1 + cc_length:]
            numbers += [f"+{code}0{national}", f"+{code}1{national}", f"+{code}8{national}",
                        f"+{code}9{national}", f"+{code}{national[1:]}",
                        # Local forms, which some regions' prefix rules complete (+1 268 …).
                        f"+{code}{national[-6:]}", f"+{code}{national[-7:]}", f"+{code}{national[-8:]}"]
    rows = assert_same(db, sql_only_owner, numbers)
    assert {r[4] for r in rows} == {True, False}


def test_a_preloaded_library_reads_every_number_the_same(db):
    """Preloaded (shared_preload_libraries), the library loads libphonenumber and compiles its
    patterns in the postmaster, and backends fork with them: each says of every number what a
    backend that loaded them itself says, and the SMS hook queues as without."""
    numbers = sorted({n for e in example_numbers() for n in (e, e[:-1], e + "5", e[:-1] + "0")})
    query = f"select n, {FIELDS} from unnest(%s::text[]) n, mysmshook.phone_info(n) order by n"
    expected = db.execute(query, [numbers]).fetchall()
    with started_cluster("mysmshook-preloaded-", preload="pg_cron,mysmshook") as cluster:
        with cluster.connect() as preloaded:
            preloaded.execute("create extension mysmshook cascade")
            for _ in range(2):  # a second backend forks from the same postmaster
                with cluster.connect() as backend:
                    assert backend.execute(query, [numbers]).fetchall() == expected
            event = {"user": {"id": "u1", "phone": "14155550123"}, "sms": {"otp": "123456"}}
            assert preloaded.execute("select mysmshook.send_sms(%s)", [Jsonb(event)]).fetchone()[0] == {}
            assert preloaded.execute("select job_data ->> 'to', job_data ->> 'region' "
                                     "from mysmshook.job_queue").fetchall() == [("+14155550123", "US")]
        log = cluster.log()
        # Once, by the postmaster, and by no backend.
        assert log.count("mysmshook: libphonenumber loaded for every backend in") == 1, log
        assert "panicked" not in log and "FATAL" not in log


def test_random_numbers_of_every_length_read_the_same(db, sql_only_owner):
    rng = random.Random(20261203)
    numbers = ["+", "+1", "+12", "+123", "+0", "+01234567", "+999123456", "+80012345678",
               "+" + "9" * 18, "+1" + "0" * 16, "+390" + "0" * 9, "+44" + "0" * 8, "+" + "1" * 12,
               # The prefix rules' rarer branches: carrier codes (AR, BR), JP's three prefixes,
               # a double strip (GG), transforms (MG, SM, NF, GA), other national prefixes.
               "+540111512345678", "+5402921512345", "+5501511987654321", "+55902112345678901",
               "+81003768012345678", "+810002512345", "+44001481123456", "+2612123456", "+378912345",
               "+67201234", "+241011234567", "+5704141234567", "+82085123456", "+37580291234567"]
    for _ in range(6000):
        length = rng.randint(1, 19)
        numbers.append("+" + "".join(rng.choice("0123456789") for _ in range(length)))
    assert_same(db, sql_only_owner, numbers)


def test_other_forms_are_refused_by_the_sql_edition_with_a_clear_reason(sql_only_owner):
    for number in ["+1 650 253 0000", "16502530000", "+1-650-CALL-NOW", "tel:+16502530000", ""]:
        row = sql_only_owner.execute(f"select {FIELDS} from mysmshook.phone_info(%s)", [number]).fetchone()
        assert row == (None, None, None, False, "cannot be parsed: not in E.164 form (a + and digits only)"), number
