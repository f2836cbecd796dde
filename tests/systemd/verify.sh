#!/usr/bin/env bash
# Static checks of the systemd units with systemd's own tools:
#   - `systemd-analyze verify` reports nothing for the two .socket units and the .service unit,
#     checked on a copy whose ExecStart= points at the built binary (it must exist for verify),
#     then again with the three packaged drop-ins (systemd/loopback.conf, sts-egress.conf,
#     process-selectors.conf) in the unit's drop-in directory (an unknown or misspelt key in a
#     drop-in is reported there);
#   - the lockdown unit (ecs-credential-agent-lockdown.service) verifies cleanly and has the
#     lines that make it an early-boot oneshot (its exposure is printed, not limited), and the
#     service runs as the sysusers.d user ecs-credential-agent;
#   - `systemd-analyze security --offline=true` rates the service at exposure <= 1.5 as shipped,
#     with the loopback drop-in and with the STS egress drop-in, and <= 2.0 with the process
#     selectors drop-in (alone and with the STS egress one); every figure is printed.
# Each drop-in is applied the way systemd applies it: from ecs-credential-agent.service.d/ next
# to the unit copy, which `systemd-analyze` reads too (checked: the process selectors drop-in
# must show up in the report).
# Usage: tests/systemd/verify.sh [BINARY]   (default: target/release/ecs-credential-agent)
set -euo pipefail
cd "$(dirname "$0")/../.."
# The packaged unit, and the unit with a drop-in that only widens its IP allow-list.
MAX_EXPOSURE=1.5
# The unit with systemd/process-selectors.conf: CAP_SYS_PTRACE and ProtectProc=default.
MAX_EXPOSURE_PROCESS=2.0
DROPINS="loopback.conf sts-egress.conf process-selectors.conf"
bin=$(realpath "${1:-${CARGO_TARGET_DIR:-target}/release/ecs-credential-agent}")
[ -x "$bin" ] || { echo "verify.sh: no executable agent binary at $bin (build it first)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp systemd/ecs-credential-agent.service systemd/ecs-credential-agent.socket systemd/ecs-credential-agent-bridge.socket "$work/"
sed -i "s|^ExecStart=/usr/bin/ecs-credential-agent |ExecStart=$bin |" "$work/ecs-credential-agent.service"
grep -q "^ExecStart=$bin serve\$" "$work/ecs-credential-agent.service" ||
    { echo "verify.sh: could not point ExecStart= at $bin; the unit's ExecStart= line changed?" >&2; exit 1; }
for d in $DROPINS; do
    sed -n '/^\[Service\]$/,$p' "systemd/$d" | grep -q '^[A-Za-z]' ||
        { echo "verify.sh: systemd/$d has no [Service] settings" >&2; exit 1; }
done

# unit_dir NAME DROPIN...: a directory NAME holding the service copy and the given drop-ins in
# its ecs-credential-agent.service.d/ (the sockets too, for verify); prints its path.
unit_dir() {
    local dir="$work/$1"; shift
    mkdir -p "$dir/ecs-credential-agent.service.d"
    cp "$work"/ecs-credential-agent.service "$work"/*.socket "$dir/"
    for d in "$@"; do cp "systemd/$d" "$dir/ecs-credential-agent.service.d/"; done
    echo "$dir"
}

# verify DIR: systemd-analyze verify on DIR's units; fails on any output.
verify() {
    local out
    out=$(cd "$1" && systemd-analyze verify ./ecs-credential-agent.socket ./ecs-credential-agent-bridge.socket ./ecs-credential-agent.service 2>&1) || {
        echo "$out"; echo "verify.sh: FAIL: systemd-analyze verify exited non-zero" >&2; exit 1; }
    if [ -n "$out" ]; then
        echo "$out"; echo "verify.sh: FAIL: systemd-analyze verify reported the above" >&2; exit 1
    fi
    echo "(nothing reported)"
}

echo "--- systemd-analyze verify (must print nothing)"
verify "$(unit_dir shipped)"
echo "--- systemd-analyze verify with the drop-ins $DROPINS (must print nothing)"
# shellcheck disable=SC2086
verify "$(unit_dir all $DROPINS)"

# exposure DIR MAX: prints the ✗ lines and the overall exposure of DIR/ecs-credential-agent.service,
# then checks it against MAX; sets $exposure and $report.
exposure() {
    report=$(cd "$1" && systemd-analyze security --offline=true --no-pager ./ecs-credential-agent.service 2>&1) || true
    # Show what is not fully protected (the ✗ lines), then the overall figure.
    printf '%s\n' "$report" | grep -v '✓' | grep -v '^ *$' || true
    exposure=$(printf '%s\n' "$report" | sed -n 's/.*Overall exposure level for ecs-credential-agent.service: \([0-9.]*\).*/\1/p')
    if [ -z "$exposure" ]; then
        printf '%s\n' "$report"; echo "verify.sh: FAIL: no 'Overall exposure level' line in the report" >&2; exit 1
    fi
    if awk -v e="$exposure" -v m="$2" 'BEGIN { exit !(e > m) }'; then
        echo "verify.sh: FAIL: exposure $exposure is above $2" >&2; exit 1
    fi
}

echo "--- systemd-analyze security --offline=true (as shipped)"
exposure "$work/shipped" "$MAX_EXPOSURE"
shipped=$exposure
if printf '%s\n' "$report" | grep -q '✗ CapabilityBoundingSet=~CAP_SYS_PTRACE'; then
    echo "verify.sh: FAIL: the shipped unit holds CAP_SYS_PTRACE" >&2; exit 1
fi

echo "--- systemd-analyze security --offline=true (with the loopback drop-in, systemd/loopback.conf)"
exposure "$(unit_dir loopback loopback.conf)" "$MAX_EXPOSURE"
with_loopback=$exposure

echo "--- systemd-analyze security --offline=true (with the STS egress drop-in, systemd/sts-egress.conf)"
exposure "$(unit_dir sts sts-egress.conf)" "$MAX_EXPOSURE"
with_sts=$exposure

echo "--- systemd-analyze security --offline=true (with the process selectors drop-in, systemd/process-selectors.conf)"
exposure "$(unit_dir process process-selectors.conf)" "$MAX_EXPOSURE_PROCESS"
with_process=$exposure
# Proof that systemd-analyze read the drop-in directory (the other drop-ins do not move the
# rating, so this is the one that shows it): the capability appears in the report.
printf '%s\n' "$report" | grep -q '✗ CapabilityBoundingSet=~CAP_SYS_PTRACE' ||
    { echo "verify.sh: FAIL: systemd-analyze did not apply ecs-credential-agent.service.d/process-selectors.conf" >&2; exit 1; }

echo "--- systemd-analyze security --offline=true (with the STS egress and process selectors drop-ins)"
exposure "$(unit_dir profiles sts-egress.conf process-selectors.conf)" "$MAX_EXPOSURE_PROCESS"
with_both=$exposure

echo "--- the lockdown unit (systemd/ecs-credential-agent-lockdown.service): verify (must print nothing), then its settings"
lockdown=$work/lockdown
mkdir -p "$lockdown"
sed "s|^\(Exec[A-Za-z]*=\)/usr/bin/ecs-credential-agent |\1$bin |" systemd/ecs-credential-agent-lockdown.service \
    >"$lockdown/ecs-credential-agent-lockdown.service"
verify_lockdown() {
    local out
    out=$(cd "$lockdown" && systemd-analyze verify ./ecs-credential-agent-lockdown.service 2>&1) || {
        echo "$out"; echo "verify.sh: FAIL: systemd-analyze verify exited non-zero (lockdown unit)" >&2; exit 1; }
    [ -z "$out" ] || { echo "$out"; echo "verify.sh: FAIL: systemd-analyze verify reported the above (lockdown unit)" >&2; exit 1; }
    echo "(nothing reported)"
}
verify_lockdown
# What makes it a boot-time lockdown that is off until enabled; each line must be present.
for want in "Type=oneshot" "RemainAfterExit=yes" \
    "ExecStart=/usr/bin/ecs-credential-agent lockdown apply --user ecs-credential-agent" \
    "ExecStop=/usr/bin/ecs-credential-agent lockdown remove" "DefaultDependencies=no" \
    "After=systemd-sysusers.service" "After=nftables.service" "Before=network-pre.target" \
    "Wants=network-pre.target" "WantedBy=sysinit.target" "CapabilityBoundingSet=CAP_NET_ADMIN"; do
    grep -qxF "$want" systemd/ecs-credential-agent-lockdown.service ||
        { echo "verify.sh: FAIL: the lockdown unit lacks '$want'" >&2; exit 1; }
done
echo "ok: oneshot, RemainAfterExit, apply/remove, early boot (before network-pre.target, after sysusers and nftables), CAP_NET_ADMIN only"
lockdown_exposure=$(cd "$lockdown" && systemd-analyze security --offline=true --no-pager ./ecs-credential-agent-lockdown.service 2>&1 |
    sed -n 's/.*Overall exposure level for ecs-credential-agent-lockdown.service: \([0-9.]*\).*/\1/p')
echo "lockdown unit exposure (informative; it runs as root with CAP_NET_ADMIN): ${lockdown_exposure:-?}"
grep -qx 'User=ecs-credential-agent' systemd/ecs-credential-agent.service && ! grep -q '^DynamicUser=' systemd/ecs-credential-agent.service ||
    { echo "verify.sh: FAIL: the service must run as User=ecs-credential-agent, without DynamicUser=" >&2; exit 1; }
grep -qx 'u ecs-credential-agent - "ECS credential agent" - -' systemd/sysusers.conf ||
    { echo "verify.sh: FAIL: systemd/sysusers.conf does not create the user ecs-credential-agent" >&2; exit 1; }
echo "ok: the service runs as ecs-credential-agent, which systemd/sysusers.conf creates"

echo "exposure: $shipped as shipped, $with_loopback with loopback.conf, $with_sts with sts-egress.conf (limit $MAX_EXPOSURE);" \
    "$with_process with process-selectors.conf, $with_both with sts-egress.conf and process-selectors.conf (limit $MAX_EXPOSURE_PROCESS)"
echo "verify.sh: OK"
