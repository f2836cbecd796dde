#!/usr/bin/env bash
# Builds the .deb of the last release before the fixed service user (commit cdf5a30: its unit
# uses DynamicUser=yes), for the upgrade check of tests/systemd/boot-check.sh. The commit is
# checked out in a temporary `git worktree` and built into the same target directory as the
# current tree, so the dependencies already compiled there are reused (the workspace's own
# crates and the LTO link are built again). The binaries the current tree built there are put
# back afterwards (hard links), so the packages and checks that follow use them. The workspace's
# crates of both trees have the same artifact names (cargo hashes a path package by its path
# inside the workspace), so a later release build of the current tree compiles them again:
# run this after it, as .ci/run does.
#
# Usage: tests/systemd/build-previous.sh OUT_DIR
#   Writes OUT_DIR/ecs-credential-agent-previous.deb.
# Environment:
#   PREVIOUS_COMMIT   the commit to build (default cdf5a30)
#   RELEASE_CARGO     the build command (default "cargo build"; e.g. "cargo zigbuild")
#   RELEASE_TARGET    its --target, if any (e.g. x86_64-unknown-linux-gnu.2.28; the binaries are
#                     then in target/x86_64-unknown-linux-gnu/release and cargo-deb gets
#                     --target x86_64-unknown-linux-gnu)
#   CARGO_TARGET_DIR  the shared target directory (default ./target)
# The release build runs as .ci/run runs it (--release --locked, the same packages, no default
# features: the same features, so the same compiled dependencies), for the agent binary only.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:?usage: build-previous.sh OUT_DIR}
commit=${PREVIOUS_COMMIT:-cdf5a30}
read -r -a build <<<"${RELEASE_CARGO:-cargo build}"
target_dir=$(realpath -m "${CARGO_TARGET_DIR:-target}")
die() { echo "build-previous.sh: $*" >&2; exit 1; }

git rev-parse -q --verify "$commit^{commit}" >/dev/null ||
    die "commit $commit is not in this clone (a shallow clone? run: git fetch --unshallow)"
command -v cargo-deb >/dev/null || die "cargo-deb missing: cargo install cargo-deb --locked"

target_args=() deb_args=() release=$target_dir/release
if [ -n "${RELEASE_TARGET:-}" ]; then
    # cargo-zigbuild's glibc suffix (.2.28) is not part of the triple or of the directory.
    triple=$(sed -E 's/\.[0-9]+(\.[0-9]+)*$//' <<<"$RELEASE_TARGET")
    target_args=(--target "$RELEASE_TARGET") deb_args=(--target "$triple")
    release=$target_dir/$triple/release
fi

mkdir -p "$out" "$release"
out=$(realpath "$out")
src=$(mktemp -d /tmp/eca-previous.XXXXXX)
keep=$(mktemp -d "$target_dir/.previous-keep.XXXXXX")
cleanup() {
    # Put the current tree's binaries back (the previous build replaced them).
    find "$keep" -maxdepth 1 -type f -exec ln -f {} "$release/" \; 2>/dev/null || true
    rm -rf "$keep"
    git worktree remove --force "$src" 2>/dev/null || rm -rf "$src"
    git worktree prune
}
trap cleanup EXIT
# Hard links: they keep the current binaries' files while cargo replaces the names.
find "$release" -maxdepth 1 -type f -exec ln {} "$keep/" \;

git worktree add --quiet --detach "$src" "$commit"
echo "build-previous.sh: building $(git -C "$src" log -1 --format='%h %s' | cut -c1-100)"
(
    cd "$src"
    export CARGO_TARGET_DIR=$target_dir
    # The three packages select the features (as the current release build does), so the
    # dependencies compiled there match; only the agent's binary is built and linked.
    "${build[@]}" --release --locked "${target_args[@]}" -p ecs-credential-agent \
        -p ecs-metadata-emulator -p ecs-credential-bench --no-default-features --bin ecs-credential-agent
    rm -rf "$target_dir/debian-previous"
    cargo deb -p ecs-credential-agent --no-build "${deb_args[@]}" --output "$target_dir/debian-previous/"
)
deb=$(ls "$target_dir"/debian-previous/*.deb)
mv "$deb" "$out/ecs-credential-agent-previous.deb"
rm -rf "$target_dir/debian-previous"
dpkg-deb -I "$out/ecs-credential-agent-previous.deb" | grep -E '^ (Package|Version):'
unit=$(dpkg-deb --fsys-tarfile "$out/ecs-credential-agent-previous.deb" | tar -xO ./lib/systemd/system/ecs-credential-agent.service)
grep -qx 'DynamicUser=yes' <<<"$unit" || die "the unit of $commit does not use DynamicUser=yes"
echo "build-previous.sh: OK: $out/ecs-credential-agent-previous.deb (the unit uses DynamicUser=yes)"
