#!/usr/bin/env bash
# Installs what mysmshook needs on a fresh Debian 12 machine (as root), then builds and installs
# the extension into Debian's PostgreSQL 15. Idempotent: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
PACKAGES=(postgresql-15 postgresql-server-dev-15 postgresql-15-cron libclang-dev clang pkg-config sudo)
step() { printf '\n==> %s\n' "$*"; }

if ! dpkg -s "${PACKAGES[@]}" >/dev/null 2>&1; then
    step "Installing PostgreSQL 15, pg_cron and build tools (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${PACKAGES[@]}" >/dev/null
fi

if ! cargo pgrx --version 2>/dev/null | grep -q '0\.18\.0'; then
    step "Installing cargo-pgrx 0.18.0 (about 5 minutes, once)"
    cargo install cargo-pgrx --version 0.18.0 --locked
fi
if ! grep -qs "pg15" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
    step "Pointing pgrx at Debian's PostgreSQL 15"
    cargo pgrx init --pg15 "$PG_CONFIG" >/dev/null
fi

step "Building and installing the mysmshook extension"
cargo pgrx install --release --pg-config "$PG_CONFIG" 2>&1 | grep -E "^(error|warning)|Finished|Installing" || true
test -f /usr/lib/postgresql/15/lib/mysmshook.so
