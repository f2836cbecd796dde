#!/bin/bash
# Runs as root INSIDE the third systemd-nspawn container that boot-check.sh boots: the new
# package's files are on /usr (a read-only overlay over the host's /usr) and
# ecs-credential-agent-lockdown.service and ecs-credential-agent.socket are enabled (links in
# sysinit.target.wants and sockets.target.wants), as after `dpkg -i` and `systemctl enable`, so
# systemd started the lockdown during this boot. Checks that it ran early, before
# network-pre.target and after the user existed, that the table is loaded, and that the agent
# still gets credentials while other users are reset.
set -uo pipefail
LOCKDOWN=ecs-credential-agent-lockdown.service
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin SYSTEMD_COLORS=0
# The lockdown must hold before the emulator and any client exist: record its state first.
state_at_check=$(systemctl show -p ActiveState --value $LOCKDOWN)/$(systemctl show -p SubState --value $LOCKDOWN)/$(systemctl show -p Result --value $LOCKDOWN)
table_at_check=$(nft list table inet ecs_credential_agent 2>&1)
# shellcheck source=tests/systemd/check-lib.sh
. /payload/check-lib.sh

step "the lockdown unit ran at boot"
echo "    $LOCKDOWN at the start of the check: $state_at_check"
check "$LOCKDOWN is active (exited), result success ($state_at_check)" test "$state_at_check" = active/exited/success
check "the table inet ecs_credential_agent was loaded at boot" sh -c "printf '%s' \"\$0\" | grep -q 'chain output'" "$table_at_check"
mono() { systemctl show -p "$2" --value "$1"; }
lockdown_done=$(mono $LOCKDOWN ActiveEnterTimestampMonotonic)
netpre=$(mono network-pre.target ActiveEnterTimestampMonotonic)
sysusers_done=$(mono systemd-sysusers.service ActiveEnterTimestampMonotonic)
sysinit=$(mono sysinit.target ActiveEnterTimestampMonotonic)
echo "    monotonic µs: systemd-sysusers $sysusers_done, lockdown $lockdown_done, network-pre.target $netpre, sysinit.target $sysinit"
check "it was active before network-pre.target was reached ($lockdown_done <= $netpre)" \
    test "${lockdown_done:-0}" -gt 0 -a "${netpre:-0}" -gt 0 -a "${lockdown_done:-0}" -le "${netpre:-0}"
check "it started after systemd-sysusers finished ($sysusers_done <= $(mono $LOCKDOWN InactiveExitTimestampMonotonic))" \
    test "${sysusers_done:-0}" -gt 0 -a "${sysusers_done:-0}" -le "$(mono $LOCKDOWN InactiveExitTimestampMonotonic)"
uid=$(id -u ecs-credential-agent 2>/dev/null)
status=$(ecs-credential-agent lockdown status 2>&1); rc=$?
printf '%s\n' "$status" | sed 's/^/    /'
check "lockdown status exits 0" test $rc -eq 0
check "it allows uids 0 and ${uid:-?} (ecs-credential-agent, created at boot from sysusers.d)" \
    sh -c "printf '%s\n' \"\$0\" | grep -qx 'allowed uids: 0, $uid'" "$status"

step "the agent works under the lockdown"
check "$SOCK_UNIT was started at boot" systemctl is-active $SOCK_UNIT
out=$(timeout 30 ecs-credential-agent get 2>&1); rc=$?
check "root: ecs-credential-agent get exits 0 (the agent fetched through the table; rc=$rc)" test $rc -eq 0
check "the agent runs as ecs-credential-agent" test "$(ps -o uid= -p "$(prop $SVC MainPID)" | tr -d ' ')" = "$uid"
code=$(setpriv --reuid 65534 --regid 65534 --clear-groups curl -s -m 5 -o /dev/null -w '%{http_code}' \
    -X PUT -H 'X-aliyun-ecs-metadata-token-ttl-seconds: 60' http://100.100.100.200/latest/api/token; echo " rc=$?")
check "uid 65534 is reset by 100.100.100.200 (curl: $code; 7 = refused)" test "${code##* }" = rc=7

if [ $failed -gt 0 ]; then
    step "diagnostics"
    systemctl status --no-pager -l $LOCKDOWN $SOCK_UNIT $SVC 2>&1 | head -40
    journalctl -b --no-pager -o short-monotonic -u $LOCKDOWN -u systemd-sysusers | tail -20
fi
echo
echo "lockdown-boot-check: $passed passed, $failed failed"
[ $failed -eq 0 ]
