#!/usr/bin/env bash
# Checks the .deb built by `cargo deb -p ecs-credential-agent`: it depends on nftables (for
# `lockdown`) and libc6 (>= 2.28), installs the binary, the four units (the lockdown unit among
# them), the sysusers.d file of the user ecs-credential-agent, the three optional drop-ins
# (loopback, STS egress, process selectors; not in a drop-in directory: the operator links the
# ones needed) and the example configuration, enables nothing, its maintainer scripts create the
# user and reload systemd but never enable or start a unit, the configuration is a conffile, and
# the packaged files are the ones in systemd/.
# Usage: tests/systemd/deb-check.sh PACKAGE.deb
set -euo pipefail
cd "$(dirname "$0")/../.."
deb=${1:?usage: deb-check.sh PACKAGE.deb}
[ -f "$deb" ] || { echo "deb-check.sh: no package at $deb" >&2; exit 1; }
echo "--- dpkg-deb -c $deb"
contents=$(dpkg-deb -c "$deb")
printf '%s\n' "$contents"
echo "--- control"
dpkg-deb -f "$deb" Package Version Architecture Depends
failed=0
# `ecs-credential-agent lockdown` runs nft; the binary needs glibc 2.28 (glibc-floor.sh).
for dep in nftables 'libc6 (>= 2.28)'; do
    if dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed 's/^ *//' | grep -qxF "$dep"; then
        echo "ok: depends on $dep"
    else
        echo "deb-check.sh: FAIL: Depends lacks $dep" >&2; failed=1
    fi
done
for want in "-rwxr-xr-x ./usr/bin/ecs-credential-agent" \
    "-rw-r--r-- ./lib/systemd/system/ecs-credential-agent.service" \
    "-rw-r--r-- ./lib/systemd/system/ecs-credential-agent.socket" \
    "-rw-r--r-- ./lib/systemd/system/ecs-credential-agent-bridge.socket" \
    "-rw-r--r-- ./lib/systemd/system/ecs-credential-agent-lockdown.service" \
    "-rw-r--r-- ./usr/lib/sysusers.d/ecs-credential-agent.conf" \
    "-rw-r--r-- ./usr/share/ecs-credential-agent/loopback.conf" \
    "-rw-r--r-- ./usr/share/ecs-credential-agent/sts-egress.conf" \
    "-rw-r--r-- ./usr/share/ecs-credential-agent/process-selectors.conf" \
    "-rw-r--r-- ./etc/ecs-credential-agent/config.toml"; do
    mode=${want%% *} path=${want#* }
    if printf '%s\n' "$contents" | awk -v m="$mode" -v p="$path" '$1 == m && $NF == p { found = 1 } END { exit !found }'; then
        echo "ok: $path ($mode)"
    else
        echo "deb-check.sh: FAIL: $path with mode $mode is not in the package" >&2; failed=1
    fi
done
# Shipped disabled: nothing under a .wants directory, no drop-in directory, no maintainer
# script that enables or starts a unit.
if printf '%s\n' "$contents" | grep -Eq '\.wants/|\.service\.d/|\.socket\.d/'; then
    echo "deb-check.sh: FAIL: the package enables a unit or ships a drop-in directory" >&2; failed=1
else
    echo "ok: no unit enabled, no drop-in directory"
fi
# The scripts may reload systemd, restart a running agent (try-restart) and stop units on
# removal; never enable, start, unmask or preset one.
scripts=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./postinst ./prerm ./postrm 2>/dev/null || true)
if printf '%s\n' "$scripts" | grep -v '^ *#' | grep -Eq 'deb-systemd-(helper|invoke)|systemctl.*[[:space:]](enable|start|reenable|preset|unmask|--now)([[:space:]]|$)'; then
    echo "deb-check.sh: FAIL: a maintainer script enables or starts units" >&2; failed=1
else
    echo "ok: no maintainer script enables or starts a unit"
fi
postinst=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./postinst 2>/dev/null || true)
for want in 'systemd-sysusers ecs-credential-agent.conf' 'systemctl daemon-reload' 'systemctl try-restart ecs-credential-agent.service'; do
    if printf '%s\n' "$postinst" | grep -qF "$want"; then
        echo "ok: postinst runs $want"
    else
        echo "deb-check.sh: FAIL: postinst does not run '$want'" >&2; failed=1
    fi
done
for script in postinst prerm postrm; do
    cmp -s "packaging/debian/$script" <(dpkg-deb --ctrl-tarfile "$deb" | tar -xO "./$script" 2>/dev/null) &&
        echo "ok: $script is packaging/debian/$script" ||
        { echo "deb-check.sh: FAIL: the package's $script differs from packaging/debian/$script" >&2; failed=1; }
done
conffiles=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles 2>/dev/null || true)
if printf '%s\n' "$conffiles" | grep -qx /etc/ecs-credential-agent/config.toml; then
    echo "ok: /etc/ecs-credential-agent/config.toml is a conffile"
else
    echo "deb-check.sh: FAIL: /etc/ecs-credential-agent/config.toml is not a conffile (conffiles: ${conffiles:-none})" >&2; failed=1
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
dpkg-deb -x "$deb" "$tmp"
for pair in "systemd/ecs-credential-agent.service lib/systemd/system/ecs-credential-agent.service" \
    "systemd/ecs-credential-agent.socket lib/systemd/system/ecs-credential-agent.socket" \
    "systemd/ecs-credential-agent-bridge.socket lib/systemd/system/ecs-credential-agent-bridge.socket" \
    "systemd/ecs-credential-agent-lockdown.service lib/systemd/system/ecs-credential-agent-lockdown.service" \
    "systemd/sysusers.conf usr/lib/sysusers.d/ecs-credential-agent.conf" \
    "systemd/loopback.conf usr/share/ecs-credential-agent/loopback.conf" \
    "systemd/sts-egress.conf usr/share/ecs-credential-agent/sts-egress.conf" \
    "systemd/process-selectors.conf usr/share/ecs-credential-agent/process-selectors.conf" \
    "systemd/config.toml etc/ecs-credential-agent/config.toml"; do
    set -- $pair
    cmp -s "$1" "$tmp/$2" && echo "ok: /$2 is $1" || { echo "deb-check.sh: FAIL: /$2 differs from $1" >&2; failed=1; }
done
"$tmp/usr/bin/ecs-credential-agent" --version
if "$tmp/usr/bin/ecs-credential-agent" dev --help >/dev/null 2>&1; then
    echo "deb-check.sh: FAIL: the packaged binary has the dev command (built with the dev feature)" >&2; failed=1
else
    echo "ok: the packaged binary has no dev command"
fi
[ $failed -eq 0 ] && echo "deb-check.sh: OK"
exit $failed
