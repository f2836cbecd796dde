#!/bin/bash
# Runs as root INSIDE the second systemd-nspawn container that boot-check.sh boots (systemd is
# PID 1), with /payload/previous.deb (the package of commit cdf5a30, whose unit uses
# DynamicUser=yes; tests/systemd/build-previous.sh) and /payload/new.deb (this tree's package).
# Installs and starts the previous package as its README said, upgrades to the new one with
# dpkg while a client keeps requesting (no request may fail), checks what the upgrade must
# keep or change (socket, configuration, user, running service), then enables and starts the
# packaged lockdown unit and checks that only root and the agent's user reach the metadata
# service; finally purges the package. Every check prints PASS or FAIL; diagnostics follow a
# failure.
set -uo pipefail
# shellcheck source=tests/systemd/check-lib.sh
. /payload/check-lib.sh
LOCKDOWN=ecs-credential-agent-lockdown.service
CONFIG=/etc/ecs-credential-agent/config.toml
main_uid() { ps -o uid= -p "$(prop $SVC MainPID)" 2>/dev/null | tr -d ' '; }
has_key_id() { printf '%s' "$1" | grep -q '"AccessKeyId"' || { printf '%s\n' "$1" | head -c 300; false; }; }
root_gets() { local out; out=$(timeout 30 ecs-credential-agent get 2>&1) && has_key_id "$out"; }

step "dpkg database"
# --volatile=yes gives an empty /var: start from this machine's package database (read-only
# bind at /run/host-dpkg) so the packages' dependencies (libc6, libgcc-s1) are satisfied.
# Its stat overrides name users of this machine that the container's /etc (made by
# systemd-sysusers at boot) lacks, and dpkg refuses to run with those: drop them.
mkdir -p /var/lib/dpkg && cp -a /run/host-dpkg/. /var/lib/dpkg/ && rm -f /var/lib/dpkg/lock* &&
    : >/var/lib/dpkg/statoverride || { echo "FAIL: cannot copy the dpkg database"; exit 1; }
check "dpkg knows libc6" dpkg -s libc6

step "install the previous package (DynamicUser=yes) and start it"
dpkg-deb -f /payload/previous.deb Package Version | sed 's/^/    /'
check "dpkg -i previous.deb" dpkg -i /payload/previous.deb
[ $failed -eq 0 ] || { echo "upgrade-check: the previous package did not install; nothing else to check"; exit 1; }
# What that package's README said after dpkg -i.
systemctl daemon-reload
check "systemctl enable --now $SOCK_UNIT" systemctl enable --now $SOCK_UNIT
check "previous: root gets credentials" root_gets
wait_for 15 state_is active/running
check "previous: the unit uses DynamicUser=yes ($(prop $SVC DynamicUser))" test "$(prop $SVC DynamicUser)" = yes
old_uid=$(main_uid)
check "previous: the agent runs as a transient uid (uid ${old_uid:-none}, 61184-65519)" \
    test "${old_uid:-0}" -ge 61184 -a "${old_uid:-0}" -le 65519
check "previous: no user ecs-credential-agent yet" sh -c '! getent passwd ecs-credential-agent'
# An operator's edit of the conffile, which the upgrade must keep.
echo '# edited by upgrade-check' >>$CONFIG
config_sum=$(sha256sum $CONFIG)
sock_inode=$(stat -c %i $SOCK)
old_pid=$(prop $SVC MainPID)

step "upgrade to the new package while a client keeps requesting"
rm -f /run/uloop.*
(
    ok=0 bad=0
    while [ ! -e /run/uloop.stop ]; do
        if timeout 15 ecs-credential-agent get >/dev/null 2>>/run/uloop.err; then ok=$((ok + 1)); else bad=$((bad + 1)); fi
    done
    echo "$ok $bad" >/run/uloop.counts
) &
loop=$!
sleep 1
dpkg-deb -f /payload/new.deb Package Version | sed 's/^/    /'
dpkg -i /payload/new.deb 2>&1 | sed 's/^/    dpkg: /'
check "dpkg -i new.deb succeeds" test "${PIPESTATUS[0]}" -eq 0
wait_for 15 state_is active/running
sleep 2
touch /run/uloop.stop
wait $loop
read -r ok bad </run/uloop.counts
echo "    client loop: $ok succeeded, $bad failed, across the upgrade"
[ -s /run/uloop.err ] && sort /run/uloop.err | uniq -c | head -5 | sed 's/^/    /'
check "upgrade: no client request failed ($bad failures)" test "$bad" -eq 0
check "upgrade: the loop made requests ($ok)" test "$ok" -gt 10

step "after the upgrade"
new_uid=$(id -u ecs-credential-agent 2>/dev/null)
getent passwd ecs-credential-agent | sed 's/^/    /'
check "the system user ecs-credential-agent exists (uid ${new_uid:-none}, below 1000)" \
    test -n "$new_uid" -a "${new_uid:-1000}" -lt 1000 -a "${new_uid:-0}" -gt 0
check "the group ecs-credential-agent exists" getent group ecs-credential-agent
check "its shell is nologin" sh -c 'getent passwd ecs-credential-agent | grep -q ":/usr/sbin/nologin$"'
new_pid=$(prop $SVC MainPID)
check "the running agent was restarted (MainPID $old_pid -> $new_pid)" test "$new_pid" != "$old_pid" -a "$new_pid" != 0
check "it runs as ecs-credential-agent (uid $(main_uid))" test "$(main_uid)" = "$new_uid"
check "the unit has User=ecs-credential-agent, DynamicUser=no ($(prop $SVC User), $(prop $SVC DynamicUser))" \
    test "$(prop $SVC User)/$(prop $SVC DynamicUser)" = ecs-credential-agent/no
check "the socket was kept (inode $sock_inode -> $(stat -c %i $SOCK))" test "$(stat -c %i $SOCK)" = "$sock_inode"
check "the socket is still 0600 root:root ($(stat -c '%a %U:%G' $SOCK))" test "$(stat -c '%a %U:%G' $SOCK)" = "600 root:root"
check "the edited configuration was kept" test "$(sha256sum $CONFIG)" = "$config_sum"
check "no .dpkg-new/.dpkg-dist configuration left" sh -c '! ls /etc/ecs-credential-agent/*.dpkg-*'
check "no state left under /var/lib/private or /run/private" \
    sh -c '! ls -d /var/lib/private/ecs-credential-agent* /run/private/ecs-credential-agent* 2>/dev/null'
check "after: root gets credentials" root_gets
out=$(timeout 10 setpriv --reuid 65534 --regid 65534 --clear-groups ecs-credential-agent get 2>&1)
check "after: uid 65534 is refused" test $? -ne 0
check "the package enabled nothing: $LOCKDOWN is disabled ($(systemctl is-enabled $LOCKDOWN 2>&1))" \
    test "$(systemctl is-enabled $LOCKDOWN 2>&1)" = disabled
check "$SOCK_UNIT still enabled" systemctl is-enabled $SOCK_UNIT

step "the lockdown unit"
verify_quiet() { local o; o=$(systemd-analyze verify "$@" 2>&1); [ -z "$o" ] || { echo "$o"; false; }; }
check "systemd-analyze verify reports nothing for $LOCKDOWN" verify_quiet $LOCKDOWN
check "systemctl enable $LOCKDOWN" systemctl enable $LOCKDOWN
check "enabled for boot: sysinit.target wants it" test -L /etc/systemd/system/sysinit.target.wants/$LOCKDOWN
check "ordered before network-pre.target, after systemd-sysusers.service" \
    sh -c "systemctl show -p Before --value $LOCKDOWN | grep -qw network-pre.target && systemctl show -p After --value $LOCKDOWN | grep -qw systemd-sysusers.service"
check "systemctl start $LOCKDOWN" timeout 30 systemctl start $LOCKDOWN
journalctl -u $LOCKDOWN --no-pager -o cat | grep -v '^$' | tail -3 | sed 's/^/    /'
check "$LOCKDOWN is active (exited)" test "$(prop $LOCKDOWN ActiveState)/$(prop $LOCKDOWN SubState)" = active/exited
check "the table inet ecs_credential_agent is loaded" nft list table inet ecs_credential_agent
status=$(ecs-credential-agent lockdown status 2>&1); rc=$?
printf '%s\n' "$status" | sed 's/^/    /'
check "lockdown status exits 0" test $rc -eq 0
check "it allows uids 0 and $new_uid" sh -c "printf '%s\n' \"\$0\" | grep -qx 'allowed uids: 0, $new_uid'" "$status"
nobody_code=$(setpriv --reuid 65534 --regid 65534 --clear-groups curl -s -m 5 -o /dev/null -w '%{http_code}' \
    -X PUT -H 'X-aliyun-ecs-metadata-token-ttl-seconds: 60' http://100.100.100.200/latest/api/token; echo " rc=$?")
check "uid 65534 is reset by 100.100.100.200 (curl: $nobody_code; 7 = refused)" test "${nobody_code##* }" = rc=7
check "root still reaches 100.100.100.200" emulator_up
# A restarted agent holds no credentials: it must fetch them through the lockdown.
check "systemctl restart $SVC" timeout 30 systemctl restart $SVC
check "under the lockdown: root gets credentials from a fresh agent" root_gets
check "systemctl stop $LOCKDOWN" timeout 30 systemctl stop $LOCKDOWN
check "stopping it deleted the table" sh -c '! nft list table inet ecs_credential_agent'

step "purge: the maintainer scripts stop what runs and drop the enable links"
check "systemctl start $LOCKDOWN again" timeout 30 systemctl start $LOCKDOWN
check "root gets credentials before the purge" root_gets
dpkg --purge ecs-credential-agent 2>&1 | sed 's/^/    dpkg: /'
check "dpkg --purge succeeds" test "${PIPESTATUS[0]}" -eq 0
check "no agent process left" sh -c '! pgrep -f "^/usr/bin/ecs-credential-agent serve"'
check "$SOCK_UNIT stopped, the socket file gone" sh -c "! systemctl is-active -q $SOCK_UNIT && test ! -e $SOCK"
check "the lockdown table was deleted (its unit stopped)" sh -c '! nft list table inet ecs_credential_agent'
check "no enable links left" sh -c '! ls /etc/systemd/system/*.wants/ecs-credential-agent* 2>/dev/null'
check "the user ecs-credential-agent is kept" getent passwd ecs-credential-agent

if [ $failed -gt 0 ]; then
    step "diagnostics"
    systemctl status --no-pager -l $SOCK_UNIT $SVC $LOCKDOWN 2>&1 | head -50
    echo "--- journal of $SVC (last 40 lines)"
    journalctl -u $SVC --no-pager -o short-monotonic -n 40
fi
echo
echo "upgrade-check: $passed passed, $failed failed"
[ $failed -eq 0 ]
