#!/usr/bin/env bash
# Builds the Debian packages: one per PostgreSQL major, with cargo pgrx package.
#   scripts/package.sh [MAJOR...]     default: 15 17
#   -> target/debian/postgresql-15-mysmshook_VERSION-1_amd64.deb   (Debian 12, on this host)
#      target/debian/postgresql-17-mysmshook_VERSION-1_amd64.deb   (Debian 13, built in the
#                                                                    root of scripts/pg17-root.sh)
# The library needs only libc, libm and libgcc_s (TLS is rustls, phone metadata is compiled in).
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
out=target/debian
mkdir -p "$out"
for major in ${*:-15 17}; do
    stage=target/package/pg$major
    rm -rf "$stage"
    pg_config=/usr/lib/postgresql/$major/bin/pg_config
    build="cargo pgrx package --no-default-features --features pg$major --pg-config $pg_config --out-dir $stage"
    if [ "$major" = 15 ]; then
        scripts/bootstrap.sh >/dev/null
        $build 2>&1 | grep -E "^error" || true
        run=(sh -c)
    else
        PG_MAJOR=$major scripts/bootstrap.sh >/dev/null
        scripts/pg17-root.sh run sh -c "cd '$PWD' && CARGO_TARGET_DIR=target/pg$major $build 2>&1 | grep -E '^error' || true"
        run=(scripts/pg17-root.sh run sh -c)
    fi
    so=$stage/usr/lib/postgresql/$major/lib/mysmshook.so
    test -f "$so"
    # The newest glibc symbol version the library uses is the libc6 it needs.
    glibc=$(objdump -T "$so" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)
    mkdir -p "$stage/DEBIAN"
    cat >"$stage/DEBIAN/control" <<CONTROL
Package: postgresql-$major-mysmshook
Version: $version-1
Architecture: amd64
Maintainer: mysmshook maintainers <maintainers@mysmshook.invalid>
Depends: postgresql-$major, libc6 (>= $glibc), libgcc-s1
Recommends: postgresql-$major-cron
Section: database
Priority: optional
Description: PostgreSQL $major extension: the delivery queue for authentication messages
 mysmshook makes PostgreSQL the delivery queue for one-time codes by SMS, WhatsApp and
 email: Supabase Auth's Send SMS and Send Email hooks queue them, pg_cron runs the worker,
 which sends them to real providers over HTTP with fallback, retries and a record of
 every outcome.
CONTROL
    deb=$out/postgresql-$major-mysmshook_${version}-1_amd64.deb
    "${run[@]}" "dpkg-deb --root-owner-group --build '$PWD/$stage' '$PWD/$deb' >/dev/null"
    echo "$deb"
done
