#!/usr/bin/env bash
# Installs a released version of mysmshook beside the current build, for the upgrade tests:
# its install script as mysmshook--VERSION.sql, calling its own library mysmshook_release_VERSION
# (so that its objects run its code, not the current library's), built from its git tag.
#   scripts/install_release.sh VERSION        e.g. 0.1.0 (PG_MAJOR=17: for PostgreSQL 17)
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:?usage: scripts/install_release.sh VERSION}
# Released versions and their commits, should a clone lack the tags.
case "$version" in
0.1.0) commit=ae9ffea6d08a873544e5d85730973a37fcef4530 ;;
0.2.0) commit=1469152eb07d692b5103cb9e6a48081f0d791374 ;;
0.3.0) commit=e1f5fb8a8ce48d10556c0a85ebe610547216667a ;;
0.4.0) commit=6caee5aea7ff311ee7bc0402c974362768e5526b ;;
0.5.0) commit=3493a07c9e7ba8851c07648ed3e773ed302bfeb8 ;;
0.6.0) commit=d8c539a78e666585404eab3c958d6d96c7ef476f ;;
*) echo "unknown release $version" >&2; exit 1 ;;
esac
rev=$(git rev-parse -q --verify "v$version^{commit}" || echo "$commit")
name=mysmshook_release_${version//./_}
if [ "${PG_MAJOR:-15}" = 15 ]; then
    PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
    extdir=$("$PG_CONFIG" --sharedir)/extension
    libdir=$("$PG_CONFIG" --pkglibdir)
else  # in the root of scripts/pg17-root.sh
    root=$(scripts/pg17-root.sh path)
    extdir=$root/usr/share/postgresql/$PG_MAJOR/extension
    libdir=$root/usr/lib/postgresql/$PG_MAJOR/lib
fi
if [ -f "$libdir/$name.so" ] && [ -f "$extdir/mysmshook--$version.sql" ] \
   && grep -q "$name" "$extdir/mysmshook--$version.sql"; then
    exit 0  # installed already
fi
scripts/build_revision.sh "$rev" "$name"
# The release's install script, as extension mysmshook at its version, bound to its library.
sed "s|'MODULE_PATHNAME'|'\$libdir/$name'|" "$extdir/$name--$version.sql" >"$extdir/mysmshook--$version.sql"
rm -f "$extdir/$name--$version.sql" "$extdir/$name.control"
