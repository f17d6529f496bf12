#!/usr/bin/env bash
# Builds an earlier revision of mysmshook and installs it beside the current build as the
# extension NAME: its own control file, install script and library, so that both can live in
# one cluster (the benchmark's baseline, the upgrade tests' releases).
#   scripts/build_revision.sh REV NAME
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: scripts/build_revision.sh REV NAME}
name=${2:?usage: scripts/build_revision.sh REV NAME}
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
src=target/revisions/$name
rm -rf "$src"
mkdir -p "$src"
git archive "$rev" | tar -x -C "$src"
# Another name for the package, its control file and its library; the same target directory,
# so the dependencies compiled for the current build are reused.
sed -i "s/^name = \"mysmshook\"$/name = \"$name\"/" "$src/Cargo.toml"
sed -i "s|\$libdir/mysmshook'|\$libdir/$name'|" "$src/mysmshook.control"
mv "$src/mysmshook.control" "$src/$name.control"
(cd "$src" && CARGO_TARGET_DIR="$PWD/../../../target" cargo pgrx install --release --pg-config "$PG_CONFIG" 2>&1 \
    | grep -E "^(error|warning: unused)|Finished|Installing" || true)
test -f "$("$PG_CONFIG" --pkglibdir)/$name.so"
