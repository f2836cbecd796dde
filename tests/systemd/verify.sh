#!/usr/bin/env bash
# Static checks of the systemd units with systemd's own tools:
#   - `systemd-analyze verify` reports nothing for the two .socket units and the .service unit,
#     checked on a copy whose ExecStart= points at the built binary (it must exist for verify);
#   - `systemd-analyze security --offline=true` rates the service at exposure <= 1.5, as
#     shipped and with the packaged loopback drop-in (systemd/loopback.conf) applied; both
#     figures are printed.
# Usage: tests/systemd/verify.sh [BINARY]   (default: target/release/ecs-credential-agent)
set -euo pipefail
cd "$(dirname "$0")/../.."
MAX_EXPOSURE=1.5
bin=$(realpath "${1:-${CARGO_TARGET_DIR:-target}/release/ecs-credential-agent}")
[ -x "$bin" ] || { echo "verify.sh: no executable agent binary at $bin (build it first)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp systemd/ecs-credential-agent.service systemd/ecs-credential-agent.socket systemd/ecs-credential-agent-bridge.socket "$work/"
sed -i "s|^ExecStart=/usr/bin/ecs-credential-agent |ExecStart=$bin |" "$work/ecs-credential-agent.service"
grep -q "^ExecStart=$bin serve\$" "$work/ecs-credential-agent.service" ||
    { echo "verify.sh: could not point ExecStart= at $bin; the unit's ExecStart= line changed?" >&2; exit 1; }

echo "--- systemd-analyze verify (must print nothing)"
out=$(cd "$work" && systemd-analyze verify ./ecs-credential-agent.socket ./ecs-credential-agent-bridge.socket ./ecs-credential-agent.service 2>&1) || {
    echo "$out"; echo "verify.sh: FAIL: systemd-analyze verify exited non-zero" >&2; exit 1; }
if [ -n "$out" ]; then
    echo "$out"; echo "verify.sh: FAIL: systemd-analyze verify reported the above" >&2; exit 1
fi
echo "(nothing reported)"

# exposure DIR: prints the ✗ lines and the overall exposure of DIR/ecs-credential-agent.service,
# then checks it against MAX_EXPOSURE; sets $exposure.
exposure() {
    local report
    report=$(cd "$1" && systemd-analyze security --offline=true --no-pager ./ecs-credential-agent.service 2>&1) || true
    # Show what is not fully protected (the ✗ lines), then the overall figure.
    printf '%s\n' "$report" | grep -v '✓' | grep -v '^ *$' || true
    exposure=$(printf '%s\n' "$report" | sed -n 's/.*Overall exposure level for ecs-credential-agent.service: \([0-9.]*\).*/\1/p')
    if [ -z "$exposure" ]; then
        printf '%s\n' "$report"; echo "verify.sh: FAIL: no 'Overall exposure level' line in the report" >&2; exit 1
    fi
    if awk -v e="$exposure" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(e > m) }'; then
        echo "verify.sh: FAIL: exposure $exposure is above $MAX_EXPOSURE" >&2; exit 1
    fi
}

echo "--- systemd-analyze security --offline=true (as shipped)"
exposure "$work"
shipped=$exposure

echo "--- systemd-analyze security --offline=true (with the loopback drop-in, systemd/loopback.conf)"
# The drop-in's settings merged into a copy of the unit (list settings accumulate, as they do
# from a drop-in): its [Service] lines inserted right after the unit's IPAddressAllow= line.
mkdir "$work/loopback"
cp "$work/ecs-credential-agent.service" "$work/loopback/"
dropin=$(sed -n '/^\[Service\]$/,$p' systemd/loopback.conf | grep -v '^\[' | grep -v '^#' | grep -v '^ *$')
[ -n "$dropin" ] || { echo "verify.sh: systemd/loopback.conf has no [Service] settings" >&2; exit 1; }
awk -v add="$dropin" '{ print } /^IPAddressAllow=/ && !done { print add; done = 1 }' \
    "$work/ecs-credential-agent.service" >"$work/loopback/ecs-credential-agent.service"
grep -qx 'IPAddressAllow=localhost' "$work/loopback/ecs-credential-agent.service" ||
    { echo "verify.sh: could not merge systemd/loopback.conf into the unit" >&2; exit 1; }
exposure "$work/loopback"
with_loopback=$exposure

echo "exposure: $shipped as shipped, $with_loopback with the loopback drop-in (limit $MAX_EXPOSURE)"
echo "verify.sh: OK"
