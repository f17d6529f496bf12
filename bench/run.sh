#!/usr/bin/env bash
# Benchmarks, each against its baseline in the same run:  bench/run.sh --quick | --full
# --full rewrites BENCHMARKS.md and delivery.png at the repository root (about 25 minutes; it
# builds the previous commit and installs graphile-worker to compare with);
# --quick is a smoke run into a temporary directory (about a minute).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
if ! command -v node >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
if [ "${1:-}" = --full ]; then
    (cd bench && npm install --no-audit --no-fund --silent)
fi
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
exec .venv/bin/python bench/run.py "$@"
