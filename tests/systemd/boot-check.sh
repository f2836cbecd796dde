#!/usr/bin/env bash
# Boots a real systemd in a container ("host mode": this machine's /usr read-only, a tmpfs
# root, a private network with only lo) and runs tests/systemd/check.sh inside it, which installs
# the release binary, the units and the default configuration exactly as the README's
# "Install as a service" block says and checks them under systemd. See
# docs/systemd-testing.md for the recipe and its pitfalls.
#
# Usage (as root; needs systemd-nspawn from the systemd-container package):
#   tests/systemd/boot-check.sh [AGENT_BINARY [EMULATOR_BINARY]]
# Defaults: $CARGO_TARGET_DIR (or target)/release/{ecs-credential-agent,ecs-metadata-emulator}.
# BOOT_CHECK_DROPIN=FILE adds FILE as a drop-in of the service (for debugging, e.g.
# Environment=RUST_LOG=debug). BOOT_CHECK_TIMEOUT (seconds, default 120) bounds each container.
# With BOOT_CHECK_PREVIOUS_DEB=OLD.deb and BOOT_CHECK_DEB=NEW.deb (both, as .ci/run sets them; OLD
# from tests/systemd/build-previous.sh), a second container runs tests/systemd/upgrade-check.sh:
# OLD installed and running, upgraded to NEW under a client loop, then the lockdown unit; and a
# third boots with NEW's files and the lockdown unit enabled (tests/systemd/lockdown-boot-check.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
release=${CARGO_TARGET_DIR:-target}/release
agent=$(realpath "${1:-$release/ecs-credential-agent}")
emulator=$(realpath "${2:-$release/ecs-metadata-emulator}")
limit=${BOOT_CHECK_TIMEOUT:-120}

die() { echo "boot-check.sh: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "must run as root (systemd-nspawn)"
command -v systemd-nspawn >/dev/null || die "systemd-nspawn missing: apt-get install systemd-container"
[ -x "$agent" ] || die "no agent binary at $agent (cargo build --release -p ecs-credential-agent)"
[ -x "$emulator" ] || die "no emulator binary at $emulator (cargo build --release -p ecs-metadata-emulator)"
old_deb=${BOOT_CHECK_PREVIOUS_DEB:-} new_deb=${BOOT_CHECK_DEB:-}
if [ -n "$old_deb$new_deb" ]; then
    [ -f "$old_deb" ] && [ -f "$new_deb" ] ||
        die "the upgrade check needs both BOOT_CHECK_PREVIOUS_DEB and BOOT_CHECK_DEB (saw '$old_deb', '$new_deb')"
fi

work=$(mktemp -d /tmp/boot-check.XXXXXX)
trap 'rm -rf "$work"' EXIT
payload=$work/payload out=$work/out
mkdir -p "$payload/target/release" "$payload/systemd" "$out"
# The payload mirrors a source checkout after `cargo build --release`, so the README's install
# commands run unchanged from /payload.
install -m 0755 "$agent" "$payload/target/release/ecs-credential-agent"
install -m 0755 "$emulator" "$payload/ecs-metadata-emulator"
cp systemd/ecs-credential-agent.service systemd/ecs-credential-agent.socket \
    systemd/ecs-credential-agent-bridge.socket systemd/loopback.conf systemd/process-selectors.conf \
    systemd/config.toml systemd/sysusers.conf "$payload/systemd/"
install -m 0755 tests/systemd/check.sh tests/systemd/upgrade-check.sh tests/systemd/lockdown-boot-check.sh "$payload/"
install -m 0644 tests/systemd/check-lib.sh "$payload/"
if [ -n "$new_deb" ]; then cp "$old_deb" "$payload/previous.deb"; cp "$new_deb" "$payload/new.deb"; fi
if [ -n "${BOOT_CHECK_DROPIN:-}" ]; then cp "$BOOT_CHECK_DROPIN" "$payload/extra-dropin.conf"; fi

# The README's install block: the lines of the ```sh fence between the two markers.
sed -n '/<!-- install-as-a-service:begin/,/<!-- install-as-a-service:end/p' README.md |
    sed -n '/^```sh$/,/^```$/p' | grep -v '^```' >"$payload/install.sh" || true
grep -q 'systemctl enable --now ecs-credential-agent.socket' "$payload/install.sh" ||
    die "README.md has no install block (\`\`\`sh fence between the install-as-a-service markers) with 'systemctl enable --now ecs-credential-agent.socket'"

# boot NAME SCRIPT [NSPAWN_ARG...]: boots a container that runs /payload/SCRIPT at boot and
# exits with its status (pitfall 3: SuccessAction=/FailureAction= belong in [Unit]); prints the
# check's log, and fails when the check failed or did not complete.
boot() {
    local name=$1 script=$2 rc=0 dir=$work/$1; shift 2
    mkdir -p "$dir/out"
    cat >"$dir/ci-check.service" <<EOF
[Unit]
Description=ecs-credential-agent boot check ($name)
After=multi-user.target
Wants=multi-user.target
SuccessAction=exit-force
FailureAction=exit-force
[Service]
Type=oneshot
ExecStart=/bin/sh -c '/payload/$script >/out/check.log 2>&1; rc=\$?; echo \$rc >/out/rc; exit \$rc'
StandardOutput=journal+console
TimeoutStartSec=infinity
EOF
    echo "booting systemd in a container for $script (limit ${limit}s) ..."
    timeout --kill-after=20 "$limit" systemd-nspawn --quiet --directory=/ --volatile=yes \
        --machine="boot-check-$name-$$" --register=no --keep-unit --private-network \
        --bind-ro="$payload:/payload" --bind-ro="$dir/ci-check.service:/etc/systemd/system/ci-check.service" \
        --bind="$dir/out:/out" --setenv=SYSTEMD_COLORS=0 --console=read-only "$@" \
        --boot -- systemd.wants=ci-check.service systemd.firstboot=off systemd.show_status=error \
        </dev/null >"$dir/console.log" 2>&1 || rc=$?

    echo "=== check log ($script)"
    if [ -s "$dir/out/check.log" ]; then cat "$dir/out/check.log"; else echo "(no check log)"; fi
    if [ ! -s "$dir/out/rc" ]; then
        echo "=== container console (last 40 lines)"
        tail -40 "$dir/console.log"
        [ "$rc" -eq 124 ] && die "FAIL: the container did not finish within ${limit}s ($script)"
        die "FAIL: $script did not complete (systemd-nspawn exit status $rc)"
    fi
    local check_rc; check_rc=$(cat "$dir/out/rc")
    [ "$check_rc" -eq 0 ] || die "FAIL: the checks inside the container failed ($script, status $check_rc)"
    [ "$rc" -eq 0 ] || die "FAIL: $script passed but systemd-nspawn exited with status $rc"
}

boot install check.sh
if [ -n "$new_deb" ]; then
    boot upgrade upgrade-check.sh --bind-ro=/var/lib/dpkg:/run/host-dpkg
    # A boot with the new package's files on /usr (a read-only overlay over this machine's) and
    # the lockdown unit and the socket enabled, as `systemctl enable` links them: systemd itself
    # starts the lockdown during boot.
    pkg=$work/pkg wants=$work/wants
    mkdir -p "$pkg" "$wants/sysinit.target.wants" "$wants/sockets.target.wants"
    dpkg-deb -x "$new_deb" "$pkg"
    mkdir -p "$pkg/usr/lib" && cp -a "$pkg/lib/." "$pkg/usr/lib/" && rm -rf "$pkg/lib"
    ln -s /usr/lib/systemd/system/ecs-credential-agent-lockdown.service "$wants/sysinit.target.wants/"
    ln -s /usr/lib/systemd/system/ecs-credential-agent.socket "$wants/sockets.target.wants/"
    boot lockdown lockdown-boot-check.sh --overlay-ro="/usr:$pkg/usr:/usr" \
        --bind-ro="$wants/sysinit.target.wants:/etc/systemd/system/sysinit.target.wants" \
        --bind-ro="$wants/sockets.target.wants:/etc/systemd/system/sockets.target.wants"
else
    echo "boot-check.sh: upgrade check not run (set BOOT_CHECK_PREVIOUS_DEB and BOOT_CHECK_DEB)"
fi
echo "boot-check.sh: OK"
