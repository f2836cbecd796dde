#!/usr/bin/env bash
# Runs the .rpm's scriptlets under a real systemd: boots a container as boot-check.sh does
# ("host mode", see docs/systemd-testing.md), installs the package there with Debian's rpm
# (`rpm -i --nodeps`: the dependencies are Alibaba Cloud Linux package names), and checks that
# the install created the user `ecs-credential-agent` (systemd-sysusers) and left every unit
# disabled and inactive, that the operator's `systemctl enable --now` then works, and that
# erasing the package stops and disables the units and keeps an edited configuration as
# .rpmsave.
# Usage (as root; needs systemd-nspawn and rpm): tests/systemd/rpm-boot-check.sh PACKAGE.rpm
# RPM_BOOT_CHECK_TIMEOUT (seconds, default 120) bounds the container.
set -euo pipefail
cd "$(dirname "$0")/../.."
rpm=$(realpath "${1:?usage: rpm-boot-check.sh PACKAGE.rpm}")
limit=${RPM_BOOT_CHECK_TIMEOUT:-120}
die() { echo "rpm-boot-check.sh: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "must run as root (systemd-nspawn)"
command -v systemd-nspawn >/dev/null || die "systemd-nspawn missing: apt-get install systemd-container"
command -v rpm >/dev/null || die "rpm missing: apt-get install rpm"

work=$(mktemp -d /tmp/rpm-boot-check.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/payload" "$work/out"
cp "$rpm" "$work/payload/agent.rpm"
cat >"$work/payload/check.sh" <<'EOF'
#!/bin/bash
# Inside the container, as root, systemd is PID 1.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin SYSTEMD_COLORS=0
UNITS="ecs-credential-agent.socket ecs-credential-agent.service ecs-credential-agent-bridge.socket ecs-credential-agent-lockdown.service"
passed=0 failed=0
check() { local name=$1; shift; if "$@"; then passed=$((passed + 1)); echo "PASS: $name"; else failed=$((failed + 1)); echo "FAIL: $name"; fi; }
# /usr is the host's, read-only: a tmpfs-backed overlay lets rpm write there.
mkdir -p /run/usr-overlay && mount -t tmpfs -o mode=0755 tmpfs /run/usr-overlay &&
    mkdir /run/usr-overlay/upper /run/usr-overlay/work &&
    mount -t overlay overlay -o lowerdir=/usr,upperdir=/run/usr-overlay/upper,workdir=/run/usr-overlay/work /usr ||
    { echo "FAIL: cannot make /usr writable"; exit 1; }
check "no user ecs-credential-agent before the install" eval '! getent passwd ecs-credential-agent >/dev/null'
rpm -i --nodeps /payload/agent.rpm 2>&1 | grep -v -e 'use Alien instead' -e 'assuming you know what you are doing'
check "rpm -i succeeds, scriptlets included" test "${PIPESTATUS[0]}" -eq 0
user=$(getent passwd ecs-credential-agent)
echo "    $user"
check "the install created the system user ecs-credential-agent (uid < 1000, nologin)" \
    eval '[ -n "$user" ] && [ "$(echo "$user" | cut -d: -f3)" -lt 1000 ] && echo "$user" | grep -q nologin'
for u in $UNITS; do
    state="$(systemctl is-enabled "$u" 2>&1) $(systemctl is-active "$u" 2>&1)"
    check "$u is loaded, not enabled, inactive (saw: $state)" eval '[ "$(systemctl show -p LoadState --value "$u")" = loaded ] && echo "$state" | grep -Eq "^(disabled|indirect) inactive$"'
done
check "systemctl enable --now ecs-credential-agent.socket" systemctl enable --now ecs-credential-agent.socket
check "the socket unit is active" systemctl is-active -q ecs-credential-agent.socket
check "the socket exists" test -S /run/ecs-credential-agent/agent.sock
echo '# edited' >>/etc/ecs-credential-agent/config.toml
rpm -e --nodeps ecs-credential-agent 2>&1 | grep -v -e 'use Alien instead' -e 'assuming you know what you are doing'
check "rpm -e succeeds" test "${PIPESTATUS[0]}" -eq 0
check "erase stopped the socket unit" eval '! systemctl is-active -q ecs-credential-agent.socket'
check "erase removed the enablement link" test ! -e /etc/systemd/system/sockets.target.wants/ecs-credential-agent.socket
check "erase kept the edited configuration as config.toml.rpmsave" grep -qx '# edited' /etc/ecs-credential-agent/config.toml.rpmsave
echo "rpm-boot-check: $passed passed, $failed failed"
[ $failed -eq 0 ]
EOF
chmod 0755 "$work/payload/check.sh"
cat >"$work/ci-check.service" <<'EOF'
[Unit]
Description=ecs-credential-agent rpm scriptlet check
After=multi-user.target
Wants=multi-user.target
SuccessAction=exit-force
FailureAction=exit-force
[Service]
Type=oneshot
ExecStart=/bin/sh -c '/payload/check.sh >/out/check.log 2>&1; rc=$?; echo $rc >/out/rc; exit $rc'
TimeoutStartSec=infinity
EOF

echo "booting systemd in a container (limit ${limit}s) ..."
rc=0
timeout --kill-after=20 "$limit" systemd-nspawn --quiet --directory=/ --volatile=yes \
    --machine="rpm-boot-check-$$" --register=no --keep-unit --private-network \
    --bind-ro="$work/payload:/payload" --bind-ro="$work/ci-check.service:/etc/systemd/system/ci-check.service" \
    --bind="$work/out:/out" --setenv=SYSTEMD_COLORS=0 --console=read-only \
    --boot -- systemd.wants=ci-check.service systemd.firstboot=off systemd.show_status=error \
    </dev/null >"$work/console.log" 2>&1 || rc=$?
if [ -s "$work/out/check.log" ]; then cat "$work/out/check.log"; else echo "(no check log)"; fi
if [ ! -s "$work/out/rc" ]; then
    tail -40 "$work/console.log"
    die "FAIL: the check did not complete (systemd-nspawn exit status $rc)"
fi
[ "$(cat "$work/out/rc")" -eq 0 ] || die "FAIL: the checks inside the container failed"
echo "rpm-boot-check.sh: OK"
