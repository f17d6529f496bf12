#!/usr/bin/env bash
# Builds an earlier revision of mysmshook and installs it beside the current build as the
# extension NAME: its own control file, install script and library, so that both can live in
# one cluster (the benchmark's baseline, the upgrade tests' releases).
#   scripts/build_revision.sh REV NAME        (PG_MAJOR=17: for PostgreSQL 17, in its root)
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: scripts/build_revision.sh REV NAME}
name=${2:?usage: scripts/build_revision.sh REV NAME}
src=target/revisions/$name
rm -rf "$src"
mkdir -p "$src"
git archive "$rev" | tar -x -C "$src"
# Another name for the package, its control file and its library; the same target directory,
# so the dependencies compiled for the current build are reused.
sed -i "s/^name = \"mysmshook\"$/name = \"$name\"/" "$src/Cargo.toml"
# A workspace of its own: it lies inside this checkout, whose Cargo.toml is a workspace too.
grep -q '^\[workspace\]' "$src/Cargo.toml" || printf '\n[workspace]\n' >>"$src/Cargo.toml"
sed -i "s|\$libdir/mysmshook'|\$libdir/$name'|" "$src/mysmshook.control"
mv "$src/mysmshook.control" "$src/$name.control"
if [ "${PG_MAJOR:-15}" = 15 ]; then
    PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
    (cd "$src" && CARGO_TARGET_DIR="$PWD/../../../target" cargo pgrx install --release --pg-config "$PG_CONFIG" 2>&1 \
        | grep -E "^(error|warning: unused)|Finished|Installing" || true)
    test -f "$("$PG_CONFIG" --pkglibdir)/$name.so"
else
    # PostgreSQL 17 lives in the Debian 13 root (scripts/pg17-root.sh): built there, beside the
    # current build's pg17 target directory.
    scripts/pg17-root.sh run sh -c 'cd "$0" && CARGO_TARGET_DIR="$1" cargo pgrx install --release \
        --no-default-features --features pg17 --pg-config /usr/lib/postgresql/17/bin/pg_config 2>&1 \
        | grep -E "^(error|warning: unused)|Finished|Installing" || true' "$PWD/$src" "$PWD/target/pg17"
    test -f "$(scripts/pg17-root.sh path)/usr/lib/postgresql/17/lib/$name.so"
fi
