#!/usr/bin/env bash
# Builds the .rpm from an already built release binary with rpmbuild (Debian's `rpm` package
# has it): stages the binary and the files of systemd/ as the spec's sources, and writes
# OUT_DIR/ecs-credential-agent-<version>-1.x86_64.rpm. Nothing is compiled. The version is the
# workspace's (Cargo.toml). See docs/packaging.md.
# Usage: packaging/rpm/build.sh AGENT_BINARY OUT_DIR
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$(realpath "${1:?usage: build.sh AGENT_BINARY OUT_DIR}")
out=${2:?usage: build.sh AGENT_BINARY OUT_DIR}
[ -x "$bin" ] || { echo "build.sh: no executable at $bin" >&2; exit 1; }
command -v rpmbuild >/dev/null || { echo "build.sh: rpmbuild missing: apt-get install rpm" >&2; exit 1; }
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"$/\1/p' Cargo.toml)
[ -n "$version" ] || { echo "build.sh: no [workspace.package] version in Cargo.toml" >&2; exit 1; }

top=$(mktemp -d /tmp/rpmbuild.XXXXXX)
trap 'rm -rf "$top"' EXIT
mkdir -p "$top/SOURCES" "$out"
install -m 0755 "$bin" "$top/SOURCES/ecs-credential-agent"
cp systemd/ecs-credential-agent.service systemd/ecs-credential-agent.socket \
    systemd/ecs-credential-agent-bridge.socket systemd/ecs-credential-agent-lockdown.service \
    systemd/sysusers.conf systemd/loopback.conf systemd/sts-egress.conf \
    systemd/process-selectors.conf systemd/config.toml README.md "$top/SOURCES/"
rpmbuild -bb --quiet --target x86_64 \
    --define "_topdir $top" --define "pkg_version $version" \
    packaging/rpm/ecs-credential-agent.spec
find "$top/RPMS" -name '*.rpm' -exec cp {} "$out/" \;
ls "$out"/ecs-credential-agent-"$version"-1.*.rpm
