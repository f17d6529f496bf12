#!/usr/bin/env bash
# Writes the files the repository generates rather than holds by hand:
#   sql/sql_only/phone_metadata.sql   libphonenumber's metadata as the phonenumber crate holds it
# --check writes nothing and fails, naming the file, when one is out of date (the suite runs it).
set -euo pipefail
cd "$(dirname "$0")/.."
check=false
if [ "${1:-}" = --check ]; then check=true; fi

generated=$(mktemp)
trap 'rm -f "$generated"' EXIT
cargo run --quiet --release -p mysmshook-phone-metadata >"$generated"
target=sql/sql_only/phone_metadata.sql
if $check; then
    if ! cmp -s "$generated" "$target"; then
        echo "$target is out of date: run scripts/generate.sh" >&2
        exit 1
    fi
else
    cp "$generated" "$target"
fi
