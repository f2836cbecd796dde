#!/usr/bin/env bash
# Checks that the release binary is linked dynamically against glibc only: the kernel's vDSO,
# the loader, libc and libm, and glibc's libpthread and libdl (separate libraries before glibc
# 2.34: the packaged build links against glibc 2.28 with cargo-zigbuild), plus GCC's libgcc_s
# when a plain `cargo build` links it (unwinding for `panic = "unwind"`, which the agent keeps
# so that a panicking connection task does not take the process down; the cargo-zigbuild build
# links LLVM's libunwind statically instead). Anything else (OpenSSL, libz, ...) fails the check.
# Usage: tests/systemd/linkage.sh [BINARY]   (default: target/release/ecs-credential-agent)
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-${CARGO_TARGET_DIR:-target}/release/ecs-credential-agent}
[ -x "$bin" ] || { echo "linkage.sh: no executable at $bin (build it first)" >&2; exit 1; }
allowed='^(linux-vdso\.so\.1|linux-gate\.so\.1|libc\.so\.6|libm\.so\.6|libpthread\.so\.0|libdl\.so\.2|libgcc_s\.so\.1|(/lib(64)?/)?ld-linux[-a-z0-9_.]*\.so\.[0-9]+)$'
echo "--- ldd $bin"
deps=$(ldd "$bin")
printf '%s\n' "$deps"
bad=$(printf '%s\n' "$deps" | awk '{print $1}' | grep -Ev "$allowed" || true)
if [ -n "$bad" ]; then
    echo "linkage.sh: FAIL: $bin links libraries beyond glibc (and libgcc_s):" >&2
    printf '  %s\n' $bad >&2
    exit 1
fi
printf '%s\n' "$deps" | grep -q 'libc\.so\.6' || { echo "linkage.sh: FAIL: not dynamically linked against glibc" >&2; exit 1; }
echo "linkage.sh: OK (glibc only$(printf '%s' "$deps" | grep -q libgcc_s && echo ', plus libgcc_s for unwinding'))"
