#!/usr/bin/env bash
# Installs the tools of the packaged release build, cargo-zigbuild and Zig, pinned, from PyPI
# into a venv (once; again only when a pin changes), and prints the venv's bin directory for
# PATH. `cargo zigbuild --target x86_64-unknown-linux-gnu.2.28` links against glibc 2.28's
# symbol versions, so the binary runs on Alibaba Cloud Linux 3 (glibc 2.28) as on Debian 12;
# no extra rustup target is needed. See docs/packaging.md.
#
# Usage: PATH="$(packaging/zig-tools.sh):$PATH" cargo zigbuild --release --target x86_64-unknown-linux-gnu.2.28 ...
# ZIG_TOOLS_DIR sets the venv (default: $CARGO_TARGET_DIR or target, then /zig-tools). Builds
# that share dependencies must use the same venv: its paths are part of cargo's fingerprints
# (another venv rebuilt every crate).
#
# ziglang 0.15.2: its `zig ar` creates the static archives cc-rs builds for ring (checked:
# `zig ar rcs` on a new file, and the release build). Not 0.16.0: its `ar` cannot create an
# archive ("unable to open ... No such file or directory"; aws/aws-lc-rs#993), so every crate
# with C code fails to build. Measured: 10-46 s for both wheels into a fresh venv (410 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
ZIGLANG=0.15.2
CARGO_ZIGBUILD=0.24.1
dir=${ZIG_TOOLS_DIR:-${CARGO_TARGET_DIR:-target}/zig-tools}
stamp="ziglang==$ZIGLANG cargo-zigbuild==$CARGO_ZIGBUILD"
if [ "$(cat "$dir/.pins" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$dir"
    python3 -m venv "$dir" >&2
    # shellcheck disable=SC2086
    timeout "${ZIG_TOOLS_TIMEOUT:-300}" "$dir/bin/pip" install -q --disable-pip-version-check $stamp >&2
    echo "$stamp" >"$dir/.pins"
fi
# cargo-zigbuild finds Zig as `python3 -m ziglang` with the venv first on PATH.
[ "$("$dir/bin/python3" -m ziglang version)" = "$ZIGLANG" ] || { echo "zig-tools.sh: ziglang is not $ZIGLANG in $dir" >&2; exit 1; }
realpath "$dir/bin"
