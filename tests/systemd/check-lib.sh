#!/bin/bash
# Shared by check.sh and upgrade-check.sh, which source it INSIDE the boot-check container
# (systemd is PID 1, /payload holds the payload): PASS/FAIL helpers, a writable /usr (a
# tmpfs-backed overlay on the host's read-only one) and the metadata emulator on
# 100.100.100.200:80 on lo (--private-network: nothing leaves the container).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin SYSTEMD_COLORS=0
SVC=ecs-credential-agent.service
SOCK_UNIT=ecs-credential-agent.socket
SOCK=/run/ecs-credential-agent/agent.sock
passed=0 failed=0

pass() { passed=$((passed + 1)); echo "PASS: $*"; }
fail() { failed=$((failed + 1)); echo "FAIL: $*"; }
# check NAME COMMAND...: PASS when COMMAND succeeds; its output is shown on failure.
check() {
    local name=$1 out; shift
    if out=$("$@" 2>&1); then pass "$name"; else fail "$name"; printf '%s\n' "$out" | sed 's/^/    /'; fi
}
prop() { systemctl show -p "$2" --value "$1"; }
# wait_for SECONDS COMMAND...: retries COMMAND every 0.2 s until it succeeds.
wait_for() {
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do [ $SECONDS -ge $deadline ] && return 1; sleep 0.2; done
}
state_is() { [ "$(prop $SVC ActiveState)/$(prop $SVC SubState)" = "$1" ]; }
show_state() { systemctl show -p Type,ActiveState,SubState,Result,MainPID,NRestarts,StatusText,WatchdogUSec,ExecMainStatus $SVC | tr '\n' ' '; echo; }

step() { echo; echo "--- $* (${SECONDS}s)"; }

step "usr overlay and metadata emulator"
# /usr is the host's, read-only: put a tmpfs-backed overlay on it so the install can write.
mkdir -p /run/usr-overlay && mount -t tmpfs -o mode=0755 tmpfs /run/usr-overlay &&
    mkdir /run/usr-overlay/upper /run/usr-overlay/work &&
    mount -t overlay overlay -o lowerdir=/usr,upperdir=/run/usr-overlay/upper,workdir=/run/usr-overlay/work /usr ||
    { echo "FAIL: cannot make /usr writable"; exit 1; }
# --private-network: only lo exists and nothing leaves the container.
ip link set lo up && ip addr add 100.100.100.200/32 dev lo || { echo "FAIL: cannot add 100.100.100.200 to lo"; exit 1; }
# Clients take 127.0.0.1 as their source address, not 100.100.100.200: the metadata lockdown
# (nftables, `meta skuid` in the output hook) judges every packet this namespace sends to
# 100.100.100.200, and the emulator's replies (a SYN-ACK has no socket owner) would be judged
# too if they went there. As on an instance, where the metadata service is remote.
ip route change local 100.100.100.200 dev lo table local proto kernel scope host src 127.0.0.1 ||
    { echo "FAIL: cannot set the source address for 100.100.100.200"; exit 1; }
systemd-run --quiet --unit=metadata-emulator /payload/ecs-metadata-emulator --listen 100.100.100.200:80 ||
    { echo "FAIL: cannot start the emulator"; exit 1; }
emulator_up() { curl -s -o /dev/null -X PUT -H 'X-aliyun-ecs-metadata-token-ttl-seconds: 60' http://100.100.100.200/latest/api/token; }
wait_for 10 emulator_up || { echo "FAIL: the emulator does not answer"; journalctl -u metadata-emulator --no-pager; exit 1; }
echo "emulator answering on 100.100.100.200:80"
