#!/usr/bin/env bash
# Checks that no symbol of the given ELF binaries needs a glibc newer than the floor (default
# 2.28: Alibaba Cloud Linux 3), from the version needs the dynamic loader resolves at start
# (`GLIBC_x.y` entries of .gnu.version_r, as `readelf -V` lists them). A binary built on
# Debian 12 without cargo-zigbuild needs GLIBC_2.34 and fails. Prints the highest version each
# binary needs.
# Usage: tests/systemd/glibc-floor.sh BINARY...   (GLIBC_FLOOR=2.28 by default)
set -euo pipefail
floor=${GLIBC_FLOOR:-2.28}
[ $# -gt 0 ] || { echo "usage: glibc-floor.sh BINARY..." >&2; exit 2; }
command -v readelf >/dev/null || { echo "glibc-floor.sh: readelf missing: apt-get install binutils" >&2; exit 1; }
failed=0
for bin in "$@"; do
    [ -f "$bin" ] || { echo "glibc-floor.sh: FAIL: no file at $bin" >&2; failed=1; continue; }
    # "Name: GLIBC_2.17  Flags: none  Version: 3" lines of the version needs section.
    versions=$(readelf -V --wide "$bin" | sed -n 's/.*Name: GLIBC_\([0-9][0-9.]*\) .*/\1/p' | sort -u -V)
    if [ -z "$versions" ]; then
        echo "glibc-floor.sh: FAIL: $bin needs no versioned glibc symbol (not dynamically linked against glibc?)" >&2
        failed=1; continue
    fi
    newest=$(printf '%s\n' "$versions" | tail -1)
    too_new=$(printf '%s\n' "$versions" | while read -r v; do
        [ "$(printf '%s\n%s\n' "$floor" "$v" | sort -V | tail -1)" = "$floor" ] || echo "$v"
    done)
    if [ -n "$too_new" ]; then
        echo "glibc-floor.sh: FAIL: $bin needs $(printf '%s\n' "$too_new" | sed 's/^/GLIBC_/' | paste -sd' ') (floor $floor); the symbols:" >&2
        pattern=$(printf '%s\n' "$too_new" | sed 's/\./\\./g' | paste -sd'|')
        objdump -T "$bin" | grep -E "\(GLIBC_($pattern)\)" | awk '{ print "  " $(NF-1), $NF }' | sort -u | head -20 >&2 || true
        failed=1
    else
        echo "ok: $bin needs at most GLIBC_$newest (floor $floor)"
    fi
done
[ $failed -eq 0 ] && echo "glibc-floor.sh: OK"
exit $failed
