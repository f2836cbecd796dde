#!/bin/bash
# Runs as root INSIDE the systemd-nspawn container that boot-check.sh boots (systemd is PID 1).
# Installs the agent exactly as the README says (/payload/install.sh is extracted from it),
# with the metadata emulator on 100.100.100.200:80 inside the container's private network, and
# checks the units under a real systemd. Every check prints PASS or FAIL with what it saw;
# after a failure the remaining checks still run, and diagnostics are printed at the end.
set -uo pipefail
WATCHDOG_SECS=4
# shellcheck source=tests/systemd/check-lib.sh
. /payload/check-lib.sh

step "install as the README says"
# The test's only addition: a short watchdog period, to check that the agent keeps pinging.
mkdir -p /etc/systemd/system/$SVC.d
printf '[Service]\nWatchdogSec=%ss\n' $WATCHDOG_SECS >/etc/systemd/system/$SVC.d/50-boot-check.conf
[ -f /payload/extra-dropin.conf ] && cp /payload/extra-dropin.conf /etc/systemd/system/$SVC.d/60-extra.conf
cat /payload/install.sh
(cd /payload && set -ex && . ./install.sh) 2>&1 | sed 's/^/    /'
check "README install commands succeed" test "${PIPESTATUS[0]}" -eq 0

step "unit files"
unit_path=$(prop $SVC FragmentPath)
verify_quiet() { local o; o=$(systemd-analyze verify "$@" 2>&1); [ -z "$o" ] || { echo "$o"; false; }; }
check "systemd-analyze verify reports nothing for the installed units" verify_quiet $SOCK_UNIT $SVC
echo "installed service: $unit_path"
systemd-analyze security --no-pager $SVC 2>&1 | tail -1

step "socket"
check "$SOCK_UNIT is active" systemctl is-active $SOCK_UNIT
check "$SOCK_UNIT is enabled" systemctl is-enabled $SOCK_UNIT
listen=$(systemctl show $SOCK_UNIT | sed -n 's/^Listen=//p')
check "socket unit listens on $SOCK (Listen=$listen)" test "$listen" = "$SOCK (Stream)"
check "$SOCK is a socket, mode 0600, root:root ($(stat -c '%F %a %U:%G' $SOCK 2>&1))" \
    test "$(stat -c '%F %a %U:%G' $SOCK)" = "socket 600 root:root"
echo "before the first connection: $(show_state)"

step "root fetches credentials (starts the service through the socket)"
out=$(timeout 30 ecs-credential-agent get 2>&1); rc=$?
check "root: ecs-credential-agent get exits 0 (rc=$rc)" test $rc -eq 0
has_key_id() { printf '%s' "$1" | grep -q '"AccessKeyId"' || { printf '%s\n' "$1" | head -c 300; false; }; }
check "root: the answer carries an AccessKeyId" has_key_id "$out"

step "a non-root caller is refused"
out=$(timeout 10 setpriv --reuid 65534 --regid 65534 --clear-groups ecs-credential-agent get 2>&1); rc=$?
echo "    uid 65534: rc=$rc: $out"
check "uid 65534: get exits non-zero" test $rc -ne 0
says_denied() { printf '%s' "$1" | grep -Eqi 'permission|denied|forbidden'; }
check "uid 65534: the error says permission denied / forbidden" says_denied "$out"

step "service active and READY (needs the agent's sd_notify support)"
wait_for 15 state_is active/running
echo "    $(show_state)"
ready=$(prop $SVC Type)/$(prop $SVC ActiveState)/$(prop $SVC SubState)
check "$SVC is notify/active/running, i.e. READY=1 was received (saw $ready)" test "$ready" = notify/active/running
status_text=$(prop $SVC StatusText)
check "$SVC has a StatusText from STATUS= (saw \"$status_text\")" test -n "$status_text"
agent_uid=$(ps -o uid= -p "$(prop $SVC MainPID)" 2>/dev/null | tr -d ' ')
want_uid=$(id -u ecs-credential-agent 2>/dev/null)
check "$SVC runs as the system user ecs-credential-agent (uid ${agent_uid:-none}, want ${want_uid:-none}, below 1000)" \
    test -n "$want_uid" -a "${agent_uid:-0}" = "$want_uid" -a "${want_uid:-0}" -gt 0 -a "${want_uid:-1000}" -lt 1000

step "watchdog: survives more than one period (WatchdogSec=${WATCHDOG_SECS}s, waiting 10 s)"
pid0=$(prop $SVC MainPID)
check "WatchdogUSec is ${WATCHDOG_SECS}s ($(prop $SVC WatchdogUSec))" test "$(prop $SVC WatchdogUSec)" = "${WATCHDOG_SECS}s"
sleep 10
echo "    $(show_state)"
now=$(prop $SVC NRestarts)/$(prop $SVC MainPID)/$(prop $SVC ActiveState)
check "after 10 s: NRestarts/MainPID/ActiveState = 0/$pid0/active (saw $now)" test "$now" = "0/$pid0/active"

step "reload (SIGHUP) keeps serving"
check "systemctl reload succeeds" timeout 20 systemctl reload $SVC
sleep 1
now=$(prop $SVC NRestarts)/$(prop $SVC MainPID)/$(prop $SVC ActiveState)
check "after reload: NRestarts/MainPID/ActiveState = 0/$pid0/active (saw $now)" test "$now" = "0/$pid0/active"
check "after reload: root still gets credentials" timeout 10 ecs-credential-agent get

step "restart while a client loop runs loses no request"
rm -f /run/loop.*
(
    ok=0 bad=0
    while [ ! -e /run/loop.stop ]; do
        if timeout 15 ecs-credential-agent get >/dev/null 2>>/run/loop.err; then ok=$((ok + 1)); else bad=$((bad + 1)); fi
    done
    echo "$ok $bad" >/run/loop.counts
) &
loop=$!
sleep 1
for i in 1 2; do
    timeout 30 systemctl restart $SVC || echo "    systemctl restart #$i failed"
    sleep 1
done
touch /run/loop.stop
wait $loop
read -r ok bad </run/loop.counts
echo "    client loop: $ok succeeded, $bad failed, across 2 restarts"
[ -s /run/loop.err ] && sort /run/loop.err | uniq -c | head -5 | sed 's/^/    /'
check "restart: no client request failed ($bad failures)" test "$bad" -eq 0
check "restart: the loop made requests ($ok)" test "$ok" -gt 10
pid1=$(prop $SVC MainPID)
check "restart: a new MainPID ($pid0 -> $pid1), active" \
    test "$pid1" != "$pid0" -a "$pid1" != 0 -a "$(prop $SVC ActiveState)" = active

step "audit lines in the journal"
audit=$(journalctl -u $SVC --no-pager -o cat | grep -i audit)
head -3 <<<"$audit" | sed 's/^/    /'
check "journalctl -u $SVC has audit lines" test -n "$audit"

step "loopback listener: ecs-credential-agent-bridge.socket (as the README says)"
BRIDGE_UNIT=ecs-credential-agent-bridge.socket
URI=http://127.0.0.1:17301/v1/credentials
sed -i 's|^# Example: listen = "127.0.0.1:17301"$|listen = "127.0.0.1:17301"|' /etc/ecs-credential-agent/config.toml
check "[bridge] listen set in config.toml" grep -qx 'listen = "127.0.0.1:17301"' /etc/ecs-credential-agent/config.toml
install -m 0644 /payload/systemd/$BRIDGE_UNIT /etc/systemd/system/ && systemctl daemon-reload
check "systemd-analyze verify reports nothing for $BRIDGE_UNIT" verify_quiet $BRIDGE_UNIT
# systemd refuses to start a socket unit whose service is running ("Socket service … already
# active, refusing"): stop the service; the Unix socket queues clients meanwhile.
check "systemctl enable $BRIDGE_UNIT" systemctl enable $BRIDGE_UNIT
check "systemctl stop $SVC" timeout 30 systemctl stop $SVC
check "systemctl start $BRIDGE_UNIT" systemctl start $BRIDGE_UNIT
blisten=$(systemctl show $BRIDGE_UNIT | sed -n 's/^Listen=//p')
check "$BRIDGE_UNIT listens on 127.0.0.1:17301 (Listen=$blisten)" test "$blisten" = "127.0.0.1:17301 (Stream)"
code_as() { # code_as USER: the HTTP status of GET $URI as USER (000: no answer)
    if [ "$1" = root ]; then curl -s -m 10 -o /dev/null -w '%{http_code}' $URI
    else setpriv --reuid "$1" --regid "$1" --clear-groups curl -s -m 10 -o /dev/null -w '%{http_code}' $URI; fi
}
code=$(code_as root)
check "root: GET $URI -> 200 (saw $code)" test "$code" = 200
code=$(code_as 65534)
check "uid 65534: GET $URI -> 403 (saw $code)" test "$code" = 403
passed_log() { journalctl -u $SVC --no-pager -o cat | grep -q 'serving credentials URIs on the loopback socket passed by systemd'; }
check "the agent serves the bridge socket systemd passed (journal)" passed_log
sockets=$(systemctl show -p Triggers --value $BRIDGE_UNIT)
check "$BRIDGE_UNIT triggers $SVC (Triggers=$sockets)" test "$sockets" = $SVC

step "restart while a client loop runs over the listener loses no request"
rm -f /run/tloop.*
(
    ok=0 bad=0
    while [ ! -e /run/tloop.stop ]; do
        c=$(curl -s -m 15 -o /dev/null -w '%{http_code}' $URI 2>>/run/tloop.err)
        if [ "$c" = 200 ]; then ok=$((ok + 1)); else bad=$((bad + 1)); echo "status $c" >>/run/tloop.err; fi
    done
    echo "$ok $bad" >/run/tloop.counts
) &
tloop=$!
sleep 1
timeout 30 systemctl restart $SVC || echo "    systemctl restart failed"
sleep 1
touch /run/tloop.stop
wait $tloop
read -r ok bad </run/tloop.counts
echo "    client loop: $ok succeeded, $bad failed, across 1 restart"
[ -s /run/tloop.err ] && sort /run/tloop.err | uniq -c | head -5 | sed 's/^/    /'
check "restart: no request over the listener failed ($bad failures)" test "$bad" -eq 0
check "restart: the loop made requests over the listener ($ok)" test "$ok" -gt 10

step "self-bound listener: the service's IPAddressAllow= blocks it until the loopback drop-in"
check "systemctl disable --now $BRIDGE_UNIT" systemctl disable --now $BRIDGE_UNIT
check "systemctl restart $SVC (binds [bridge] listen itself)" timeout 30 systemctl restart $SVC
self_bound() { journalctl -u $SVC --no-pager -o cat | grep -q 'serving credentials URIs on loopback TCP (\[bridge\] listen)'; }
wait_for 10 self_bound
code=$(curl -s -m 3 -o /dev/null -w '%{http_code}' $URI)
# Whether this systemd filters IP at all (it needs the BPF cgroup firewall, which a host with
# cgroup v1 may not give a container): a transient unit denied every address tries the emulator.
firewall=""
if systemd-run --quiet --wait -p IPAddressDeny=any curl -s -m 3 -o /dev/null -X PUT \
    -H 'X-aliyun-ecs-metadata-token-ttl-seconds: 60' http://100.100.100.200/latest/api/token; then
    firewall="a unit with IPAddressDeny=any still reached 100.100.100.200"
fi
if [ -n "$firewall" ]; then
    echo "SKIP: without the drop-in the listener answers $code: systemd here does not filter IP ($firewall)"
else
    check "without the drop-in: no answer on $URI (saw $code)" test "$code" = 000
fi
ln -s /payload/systemd/loopback.conf /etc/systemd/system/$SVC.d/loopback.conf && systemctl daemon-reload
check "systemctl restart $SVC with loopback.conf" timeout 30 systemctl restart $SVC
code=$(code_as root)
check "with the drop-in: root: GET $URI -> 200 (saw $code)" test "$code" = 200

step "process selectors: the service's sandbox reads another user's exe only with process-selectors.conf"
# A probe runs under the service's own [Service] settings (read from the installed unit, minus
# how the agent is started and supervised), as a transient unit, against a process of another
# uid; then again with the drop-in's settings added, as a drop-in would add them.
service_props() {
    sed -n '/^\[Service\]$/,/^\[/p' "$1" | grep -E '^[A-Za-z]+=' |
        grep -Ev '^(Type|ExecStart|ExecReload|Restart|RestartSec|RestartPreventExitStatus|WatchdogSec|TimeoutStopSec|TimeoutStartSec)=' |
        while IFS= read -r line; do printf -- '-p\n%s\n' "$line"; done
}
mapfile -t base_props < <(service_props "$unit_path")
mapfile -t dropin_props < <(service_props /payload/systemd/process-selectors.conf)
setpriv --reuid=4321 --regid=4321 --clear-groups sleep 300 &
target=$!
wait_for 5 test "$(stat -c %u /proc/$target 2>/dev/null)" = 4321
want_hash=$(sha256sum </usr/bin/sleep | cut -d' ' -f1)
probe_sandbox() { local script=$1; shift; systemd-run --quiet --wait --pipe "$@" /bin/sh -c "$script" 2>&1; }
out=$(probe_sandbox "readlink /proc/$target/exe" "${base_props[@]}")
check "without the drop-in: /proc/<pid>/exe of uid 4321 unreadable (saw: $out)" test "$out" != /usr/bin/sleep
out=$(probe_sandbox "grep '^0::' /proc/$target/cgroup" "${base_props[@]}")
check "without the drop-in: /proc/<pid>/cgroup of uid 4321 unreadable (saw: $out)" test -z "$(printf '%s' "$out" | grep '^0::/')"
out=$(probe_sandbox "readlink /proc/$target/exe" "${base_props[@]}" "${dropin_props[@]}")
check "with the drop-in: /proc/<pid>/exe reads /usr/bin/sleep (saw: $out)" test "$out" = /usr/bin/sleep
out=$(probe_sandbox "grep '^0::' /proc/$target/cgroup" "${base_props[@]}" "${dropin_props[@]}")
check "with the drop-in: /proc/<pid>/cgroup has a 0:: line (saw: $out)" test -n "$(printf '%s' "$out" | grep '^0::/')"
out=$(probe_sandbox "sha256sum </proc/$target/exe" "${base_props[@]}" "${dropin_props[@]}")
check "with the drop-in: the exe hashes as /usr/bin/sleep (saw: $out)" test "${out%% *}" = "$want_hash"
out=$(probe_sandbox "head -c1 /proc/$target/mem >/dev/null && echo read-mem; head -c1 /proc/$target/environ >/dev/null && echo read-environ; true" "${base_props[@]}" "${dropin_props[@]}")
check "with the drop-in: its memory and environment stay unreadable (saw: $out)" test -z "$(printf '%s' "$out" | grep '^read-')"
# process_vm_readv(2) (x86_64 number 310) with no iovecs: 0 when allowed, EPERM when the
# drop-in's SystemCallFilter= removed it.
if [ "$(uname -m)" = x86_64 ]; then
    out=$(probe_sandbox "perl -e '\$! = 0; print syscall(310, $target, 0, 0, 0, 0, 0), \" \", (\$! + 0), \"\\n\"'" "${base_props[@]}" "${dropin_props[@]}")
    check "with the drop-in: process_vm_readv is filtered (EPERM = 1; saw: $out)" test "$out" = "-1 1"
else
    echo "SKIP: process_vm_readv probe is for x86_64 only"
fi
kill $target 2>/dev/null

step "stop leaves no process"
mainpid=$(prop $SVC MainPID)
check "systemctl stop succeeds" timeout 30 systemctl stop $SOCK_UNIT $SVC
echo "    $(show_state)"
now=$(prop $SVC ActiveState)/$(prop $SVC Result)/$(prop $SVC ExecMainStatus)
check "stopped cleanly: ActiveState/Result/ExecMainStatus = inactive/success/0 (saw $now)" test "$now" = inactive/success/0
no_agent_left() { { [ "$1" = 0 ] || ! kill -0 "$1" 2>/dev/null; } && ! pgrep -a -f '^/usr/bin/ecs-credential-agent serve'; }
check "no agent process left (pid $mainpid gone, none serving)" no_agent_left "$mainpid"
check "the socket file is removed" test ! -e $SOCK

if [ $failed -gt 0 ]; then
    step "diagnostics"
    systemctl status --no-pager -l $SOCK_UNIT $SVC 2>&1 | head -40
    echo "--- journal of $SVC (last 60 lines)"
    journalctl -u $SVC --no-pager -o short-monotonic -n 60
    echo "--- journal of the emulator (last 10 lines)"
    journalctl -u metadata-emulator --no-pager -o short-monotonic -n 10
fi
echo
echo "boot-check: $passed passed, $failed failed"
[ $failed -eq 0 ]
