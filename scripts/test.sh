#!/usr/bin/env bash
# The whole test suite: formatting and lints, Rust unit tests (pure logic, no Postgres), then the
# integration tests against a throwaway PostgreSQL + pg_cron and mock providers on 127.0.0.1,
# once on PostgreSQL 15 (pg_cron 1.4, the host's) and once on 17 (pg_cron 1.6, in a Debian 13
# root that scripts/pg17-root.sh makes and caches).
# Extra arguments go to pytest (e.g. scripts/test.sh -k webhook); PG_MAJORS="15" runs one major.
# The delivery suites run on both hosts, the in-database worker and mysmshook-worker: each test
# on each on the first major; on the other majors and on the quick path (-m "not slow") each test
# on one of them, the two alternating through the suite. MYSMSHOOK_TEST_HOSTS overrides it
# (both, alternate, in-database or external). The other majors run the quick path plus the tests
# marked every_major (the major's own package) unless -m is given.
set -euo pipefail
cd "$(dirname "$0")/.."
MAJORS=${PG_MAJORS:-15 17}
scripts/bootstrap.sh

printf '\n==> cargo fmt --all --check, cargo clippy\n'
cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

printf '\n==> Unit tests\n'
cargo test --workspace --lib --bins --tests --quiet

# The benchmark's quick run (one test) uses the Node.js mock provider.
if ! command -v node >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs >/dev/null
fi
if [ ! -x .venv/bin/pytest ]; then python3 -m venv .venv; fi
.venv/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
trap 'scripts/pg17-root.sh umount' EXIT
first=${MAJORS%% *}
for major in $MAJORS; do
    if [ "$major" != 15 ]; then PG_MAJOR=$major scripts/bootstrap.sh; fi
    hosts=both
    if [ "$major" != "$first" ] || [[ " $* " == *"not slow"* ]]; then hosts=alternate; fi
    hosts=${MYSMSHOOK_TEST_HOSTS:-$hosts}
    # The other majors run the quick path and the tests of what each major has of its own (its
    # package): the slow scenarios exercise the engine, which is the same on every major.
    subset=()
    if [ "$major" != "$first" ] && [[ " $* " != *" -m "* ]]; then subset=(-m "not slow or every_major"); fi
    printf '\n==> Integration tests on PostgreSQL %s (worker hosts: %s%s)\n' "$major" "$hosts" \
        "${subset:+; not slow or every_major}"
    MYSMSHOOK_TEST_HOSTS=$hosts PG_MAJOR=$major .venv/bin/pytest tests -p no:cacheprovider "${subset[@]}" "$@"
done
