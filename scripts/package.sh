#!/usr/bin/env bash
# Builds the Debian packages: one per PostgreSQL major, with cargo pgrx package, and
# mysmshook-worker's.
#   scripts/package.sh [MAJOR... | worker]     default: 15 17 worker
#   -> target/debian/postgresql-15-mysmshook_VERSION-1_amd64.deb   (Debian 12, on this host)
#      target/debian/postgresql-17-mysmshook_VERSION-1_amd64.deb   (Debian 13, built in the
#                                                                    root of scripts/pg17-root.sh)
#      target/debian/mysmshook-worker_VERSION-1_amd64.deb           (built on Debian 12: it runs
#                                                                    on 12 and 13)
# The library and the worker need only libc, libm and libgcc_s (TLS is rustls, phone metadata
# is compiled in).
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
out=target/debian
mkdir -p "$out"
# The newest glibc symbol version a binary uses is the libc6 it needs.
glibc_of() { objdump -T "$1" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1; }

worker_package() {
    local stage=target/package/worker
    rm -rf "$stage"
    scripts/bootstrap.sh >/dev/null
    install -D -m 0755 target/release/mysmshook-worker "$stage/usr/bin/mysmshook-worker"
    strip "$stage/usr/bin/mysmshook-worker"
    install -D -m 0644 worker/debian/mysmshook-worker.service "$stage/usr/lib/systemd/system/mysmshook-worker.service"
    install -D -m 0640 worker/debian/worker.env "$stage/etc/mysmshook/worker.env"
    install -D -m 0755 worker/debian/postinst "$stage/DEBIAN/postinst"
    echo /etc/mysmshook/worker.env >"$stage/DEBIAN/conffiles"
    cat >"$stage/DEBIAN/control" <<CONTROL
Package: mysmshook-worker
Version: $version-1
Architecture: amd64
Maintainer: mysmshook maintainers <maintainers@mysmshook.invalid>
Depends: libc6 (>= $(glibc_of "$stage/usr/bin/mysmshook-worker")), libgcc-s1, adduser
Section: database
Priority: optional
Description: mysmshook's delivery worker, outside PostgreSQL
 Delivers the one-time codes mysmshook queues in PostgreSQL (SMS, WhatsApp, email) from a
 process of its own: a systemd service running as its own user, configured in
 /etc/mysmshook/worker.env.
CONTROL
    local deb=$out/mysmshook-worker_${version}-1_amd64.deb
    dpkg-deb --root-owner-group --build "$stage" "$deb" >/dev/null
    echo "$deb"
}

for major in ${*:-15 17 worker}; do
    if [ "$major" = worker ]; then
        worker_package
        continue
    fi
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
    glibc=$(glibc_of "$so")
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
