#!/usr/bin/env bash
# The whole test suite: formatting and lints, Rust unit tests (pure logic, no Postgres), then the
# integration tests against a throwaway PostgreSQL 15 + pg_cron and mock providers on 127.0.0.1.
# Extra arguments go to pytest (e.g. scripts/test.sh -k webhook).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh

printf '\n==> cargo fmt --check, cargo clippy\n'
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings

printf '\n==> Unit tests\n'
cargo test --lib --quiet

printf '\n==> Integration tests\n'
# The benchmark's quick run (one test) uses the Node.js mock provider.
if ! command -v node >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs >/dev/null
fi
if [ ! -x .venv/bin/pytest ]; then python3 -m venv .venv; fi
.venv/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
.venv/bin/pytest tests -p no:cacheprovider "$@"
