#!/usr/bin/env bash
# Installs what mysmshook needs on a fresh Debian 12 machine (as root), then builds and installs
# the extension into Debian's PostgreSQL 15. Idempotent: each step is skipped when already done.
# PG_MAJOR=17: builds and installs it for PostgreSQL 17 in the Debian 13 root of
# scripts/pg17-root.sh instead (made first if missing; the host's Rust toolchain builds it there).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${PG_MAJOR:-15}" = 17 ]; then
    PG_MAJOR=15 "$0"   # the host's toolchain (cargo-pgrx) first
    printf '\n==> Building and installing the mysmshook extension for PostgreSQL 17\n'
    scripts/pg17-root.sh run sh -c '
        set -e
        cd "$0"
        grep -qs pg17 "$HOME/.pgrx/config.toml" || cargo pgrx init --pg17 /usr/lib/postgresql/17/bin/pg_config >/dev/null
        CARGO_TARGET_DIR=target/pg17 cargo pgrx install --release --no-default-features --features pg17 \
            --pg-config /usr/lib/postgresql/17/bin/pg_config 2>&1 | grep -E "^(error|warning)|Finished|Installing" || true
        test -f /usr/lib/postgresql/17/lib/mysmshook.so' "$PWD"
    exit 0
fi
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
PACKAGES=(postgresql-15 postgresql-server-dev-15 postgresql-15-cron postgresql-15-plpgsql-check libclang-dev clang pkg-config sudo openssl pgbouncer)
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

step "Building mysmshook-worker"
cargo build --release --quiet -p mysmshook-worker
test -x target/release/mysmshook-worker
