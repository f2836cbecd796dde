#!/usr/bin/env bash
# Checks the .rpm built by packaging/rpm/build.sh: its metadata (`rpm -qpi`), contents with modes
# (`rpm -qplv`), that the configuration is %config(noreplace), that it requires nftables and no
# glibc newer than 2.28, that its scriptlets create the user with systemd-sysusers, reload
# systemd and enable or start nothing; then installs it into a scratch root (`rpm --root ... -i
# --nodeps --noscripts`), compares the installed files with systemd/, runs the binary, and
# checks that an edited configuration survives a reinstall and is kept as .rpmsave on erase.
# Usage: tests/systemd/rpm-check.sh PACKAGE.rpm   (needs rpm: apt-get install rpm)
set -euo pipefail
cd "$(dirname "$0")/../.."
rpm=$(realpath "${1:?usage: rpm-check.sh PACKAGE.rpm}")
[ -f "$rpm" ] || { echo "rpm-check.sh: no package at $rpm" >&2; exit 1; }
command -v rpm >/dev/null || { echo "rpm-check.sh: rpm missing: apt-get install rpm" >&2; exit 1; }
failed=0
ok() { echo "ok: $*"; }
fail() { echo "rpm-check.sh: FAIL: $*" >&2; failed=1; }

echo "--- rpm -qpi"
rpm -qpi "$rpm"
echo "--- rpm -qplv"
rpm -qplv "$rpm"
echo "--- rpm -qp --requires"
requires=$(rpm -qp --requires "$rpm")
printf '%s\n' "$requires"
echo "--- rpm -qp --scripts"
scripts=$(rpm -qp --scripts "$rpm")
printf '%s\n' "$scripts"

[ "$(rpm -qp --qf '%{NAME} %{ARCH}' "$rpm")" = "ecs-credential-agent x86_64" ] &&
    ok "name and architecture: ecs-credential-agent x86_64" || fail "name/arch: $(rpm -qp --qf '%{NAME} %{ARCH}' "$rpm")"

# "MODE USER GROUP PATH FLAGS" per file; FLAGS "cn" = %config(noreplace), "d" = %doc.
files=$(rpm -qp --qf '[%{FILEMODES:perms} %{FILEUSERNAME} %{FILEGROUPNAME} %{FILENAMES} %{FILEFLAGS:fflags}\n]' "$rpm")
for want in "-rwxr-xr-x /usr/bin/ecs-credential-agent" \
    "-rw-r--r-- /usr/lib/systemd/system/ecs-credential-agent.service" \
    "-rw-r--r-- /usr/lib/systemd/system/ecs-credential-agent.socket" \
    "-rw-r--r-- /usr/lib/systemd/system/ecs-credential-agent-bridge.socket" \
    "-rw-r--r-- /usr/lib/systemd/system/ecs-credential-agent-lockdown.service" \
    "-rw-r--r-- /usr/lib/sysusers.d/ecs-credential-agent.conf" \
    "-rw-r--r-- /usr/share/ecs-credential-agent/loopback.conf" \
    "-rw-r--r-- /usr/share/ecs-credential-agent/sts-egress.conf" \
    "-rw-r--r-- /usr/share/ecs-credential-agent/process-selectors.conf" \
    "-rw-r--r-- /etc/ecs-credential-agent/config.toml"; do
    mode=${want%% *} path=${want#* }
    if printf '%s\n' "$files" | awk -v m="$mode" -v p="$path" '$1 == m && $2 == "root" && $3 == "root" && $4 == p { f = 1 } END { exit !f }'; then
        ok "$path ($mode root:root)"
    else
        fail "$path with mode $mode, owned by root:root, is not in the package"
    fi
done
flags=$(printf '%s\n' "$files" | awk '$4 == "/etc/ecs-credential-agent/config.toml" { print $5 }')
[ "$flags" = cn ] && ok "/etc/ecs-credential-agent/config.toml is %config(noreplace)" ||
    fail "/etc/ecs-credential-agent/config.toml has file flags '${flags}', not cn (%config(noreplace))"
if printf '%s\n' "$files" | awk '{ print $4 }' | grep -Eq '\.wants/|\.service\.d/|\.socket\.d/'; then
    fail "the package enables a unit or ships a drop-in directory"
else
    ok "no unit enabled (no .wants/ link), no drop-in directory"
fi

# Alibaba Cloud Linux 3's rpm (4.14) reads gzip and xz payloads; zstd depends on how it was built.
payload=$(rpm -qp --qf '%{PAYLOADCOMPRESSOR}' "$rpm")
case $payload in gzip | xz) ok "payload compressed with $payload" ;; *) fail "payload compressed with $payload (not gzip or xz)" ;; esac
printf '%s\n' "$requires" | grep -qx nftables && ok "requires nftables" || fail "does not require nftables"
too_new=$(printf '%s\n' "$requires" | sed -n 's/.*(GLIBC_\([0-9.]*\)).*/\1/p' |
    while read -r v; do [ "$(printf '2.28\n%s\n' "$v" | sort -V | tail -1)" = 2.28 ] || echo "GLIBC_$v"; done |
    sort -uV | paste -sd' ')
glibc=$(printf '%s\n' "$requires" | grep -c 'GLIBC_' || true)
if [ -n "$too_new" ]; then fail "requires a glibc newer than 2.28: $too_new"
elif [ "$glibc" -eq 0 ]; then fail "no libc.so.6(GLIBC_...) requirement: rpmbuild found no ELF dependencies"
else ok "requires no glibc newer than 2.28 ($glibc versioned libc/libm requirements)"; fi

printf '%s\n' "$scripts" | grep -q 'systemd-sysusers /usr/lib/sysusers.d/ecs-credential-agent.conf' &&
    ok "postinstall creates the user with systemd-sysusers" || fail "no scriptlet runs systemd-sysusers on the sysusers file"
printf '%s\n' "$scripts" | grep -q 'systemctl daemon-reload' && ok "a scriptlet reloads systemd" ||
    fail "no scriptlet runs systemctl daemon-reload"
# enable, start, preset or reenable anywhere, or a restart that is not try-restart.
if printf '%s\n' "$scripts" | grep -v '^ *#' | grep -Eq 'systemctl.*[[:space:]](enable|start|preset|reenable|restart)([[:space:]]|$)'; then
    fail "a scriptlet enables or starts a unit"
else
    ok "no scriptlet enables or starts a unit (only try-restart of a running service)"
fi

echo "--- install into a scratch root: rpm --root ROOT -i --nodeps --noscripts"
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
# The owners the package names, so rpm does not fall back with a warning.
mkdir -p "$root/etc"
echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
echo 'root:x:0:' >"$root/etc/group"
rpm --root "$root" --initdb
rpm --root "$root" -i --nodeps --noscripts "$rpm"
rpm --root "$root" -qa | grep -q '^ecs-credential-agent-' && ok "installed: $(rpm --root "$root" -qa | grep '^ecs-credential-agent-')" ||
    fail "rpm --root does not list the installed package"
for pair in "systemd/ecs-credential-agent.service usr/lib/systemd/system/ecs-credential-agent.service" \
    "systemd/ecs-credential-agent.socket usr/lib/systemd/system/ecs-credential-agent.socket" \
    "systemd/ecs-credential-agent-bridge.socket usr/lib/systemd/system/ecs-credential-agent-bridge.socket" \
    "systemd/ecs-credential-agent-lockdown.service usr/lib/systemd/system/ecs-credential-agent-lockdown.service" \
    "systemd/sysusers.conf usr/lib/sysusers.d/ecs-credential-agent.conf" \
    "systemd/loopback.conf usr/share/ecs-credential-agent/loopback.conf" \
    "systemd/sts-egress.conf usr/share/ecs-credential-agent/sts-egress.conf" \
    "systemd/process-selectors.conf usr/share/ecs-credential-agent/process-selectors.conf" \
    "systemd/config.toml etc/ecs-credential-agent/config.toml"; do
    set -- $pair
    cmp -s "$1" "$root/$2" && ok "/$2 is $1" || fail "/$2 differs from $1"
done
"$root/usr/bin/ecs-credential-agent" --version
if "$root/usr/bin/ecs-credential-agent" dev --help >/dev/null 2>&1; then
    fail "the packaged binary has the dev command (built with the dev feature)"
else
    ok "the packaged binary has no dev command"
fi
if verify=$(rpm --root "$root" -V --nodeps ecs-credential-agent 2>&1); then
    ok "rpm -V: every file as packaged"
else
    fail "rpm -V: $verify"
fi

# %config(noreplace): an edited configuration survives a reinstall and is saved on erase.
conf=$root/etc/ecs-credential-agent/config.toml
echo '# edited by rpm-check.sh' >>"$conf"
rpm --root "$root" -U --replacepkgs --nodeps --noscripts "$rpm"
tail -1 "$conf" | grep -qx '# edited by rpm-check.sh' && ok "an edited config.toml survives a reinstall" ||
    fail "a reinstall replaced the edited config.toml"
rpm --root "$root" -e --nodeps --noscripts ecs-credential-agent
[ -f "$conf.rpmsave" ] && [ ! -e "$root/usr/bin/ecs-credential-agent" ] &&
    ok "erase removes the package and keeps the edited config.toml as config.toml.rpmsave" ||
    fail "after erase: $(find "$root/etc" "$root/usr" -type f 2>/dev/null | head)"

[ $failed -eq 0 ] && echo "rpm-check.sh: OK"
exit $failed
