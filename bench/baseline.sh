#!/usr/bin/env bash
# Builds and installs an earlier revision of mysmshook beside the current one, as the extension
# mysmshook_baseline (its own .so, control and SQL files), so that the benchmark can measure
# both in the same run, each in its own database.
#   bench/baseline.sh REV
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: bench/baseline.sh REV}
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
src=target/baseline-src
rm -rf "$src"
mkdir -p "$src"
git archive "$rev" | tar -x -C "$src"
# Another name for the package, its control file and its library; the same target directory,
# so the dependencies compiled for the current build are reused.
sed -i 's/^name = "mysmshook"$/name = "mysmshook_baseline"/' "$src/Cargo.toml"
sed -i "s|\$libdir/mysmshook'|\$libdir/mysmshook_baseline'|" "$src/mysmshook.control"
mv "$src/mysmshook.control" "$src/mysmshook_baseline.control"
(cd "$src" && CARGO_TARGET_DIR="$PWD/../../target" cargo pgrx install --release --pg-config "$PG_CONFIG" 2>&1 \
    | grep -E "^(error|warning: unused)|Finished|Installing" || true)
test -f "$("$PG_CONFIG" --pkglibdir)/mysmshook_baseline.so"
