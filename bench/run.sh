#!/usr/bin/env bash
# Benchmarks, each against its baseline in the same run:  bench/run.sh --quick | --full
# --full rewrites BENCHMARKS.md and delivery.png at the repository root (about 12 minutes);
# --quick is a smoke run into a temporary directory (about a minute).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
exec .venv/bin/python bench/run.py "$@"
