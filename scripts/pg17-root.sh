#!/usr/bin/env bash
# PostgreSQL 17 beside the host's 15: Debian 13 ("trixie") in its own root, with PostgreSQL 17,
# pg_cron 1.6 and what building the extension needs. Debian 12 has no PostgreSQL 17, and adding
# trixie to the host's apt sources would pull a newer glibc into it, so it lives apart.
#   scripts/pg17-root.sh path                  print the root's path (made and cached if missing)
#   scripts/pg17-root.sh mount                 bind the host's /tmp, /dev, /proc, the repository
#                                              and the Rust toolchain into it (idempotent)
#   scripts/pg17-root.sh umount                undo mount
#   scripts/pg17-root.sh run CMD...            run CMD in the root (as root), mounted
# The host's rustc and cargo-pgrx run inside it (bind-mounted ~/.rustup and ~/.cargo); /tmp and
# the repository are mounted at the same paths, so a path means the same inside and out.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
ROOT=${MYSMSHOOK_PG17_ROOT:-/var/cache/mysmshook/trixie-pg17}
MIRROR=http://deb.debian.org/debian
PACKAGES="postgresql-17 postgresql-17-cron postgresql-server-dev-17 clang libclang-dev pkg-config gcc libc6-dev ca-certificates"

make_root() {
    [ -f "$ROOT/.ready" ] && return
    command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
    rm -rf "$ROOT"
    mkdir -p "$(dirname "$ROOT")"
    echo "==> Debian 13 root with PostgreSQL 17 in $ROOT (once, about 2 minutes)" >&2
    debootstrap --variant=minbase trixie "$ROOT" "$MIRROR" >"$ROOT.log" 2>&1 || { tail -20 "$ROOT.log" >&2; exit 1; }
    cp /etc/resolv.conf "$ROOT/etc/"
    mount_all
    chroot "$ROOT" sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $PACKAGES" \
        >>"$ROOT.log" 2>&1 || { tail -20 "$ROOT.log" >&2; exit 1; }
    # Debian's package creates a cluster of its own; nothing here uses it.
    chroot "$ROOT" sh -c 'pg_dropcluster --stop 17 main 2>/dev/null || true'
    touch "$ROOT/.ready"
}

bind() {  # bind SOURCE at the same path inside the root
    mkdir -p "$ROOT$1"
    mountpoint -q "$ROOT$1" || mount --bind "$1" "$ROOT$1"
}

mount_all() {
    mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
    bind /dev
    bind /tmp
    bind "$REPO"
    bind "$HOME/.rustup"
    bind "$HOME/.cargo"
}

umount_all() {
    for m in "$HOME/.cargo" "$HOME/.rustup" "$REPO" /tmp /dev /proc; do
        mountpoint -q "$ROOT$m" && umount -l "$ROOT$m"
    done
    return 0
}

case "${1:?usage: pg17-root.sh path|mount|umount|run CMD...}" in
path) make_root; echo "$ROOT" ;;
mount) make_root; mount_all ;;
umount) umount_all ;;
run) shift; make_root; mount_all
     exec chroot "$ROOT" env HOME="$HOME" PATH="$HOME/.cargo/bin:/usr/local/bin:/usr/bin:/bin" "$@" ;;
*) echo "usage: pg17-root.sh path|mount|umount|run CMD..." >&2; exit 2 ;;
esac
