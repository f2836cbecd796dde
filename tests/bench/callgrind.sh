#!/usr/bin/env bash
# Instructions per request: the agent and bare hyper, keep-alive and a new connection per
# request, counted by callgrind (valgrind --tool=callgrind) in the release binaries; and a
# profile's caller beside an instance-role caller of one agent configured with a profile.
#
#   cargo build --release -p ecs-credential-agent -p ecs-credential-bench --no-default-features
#   tests/bench/callgrind.sh [TARGET_DIR]        # TARGET_DIR defaults to target/release
#
# Each server runs under callgrind twice, once answering FEW requests and once MANY (from
# `bench requests`, the benchmark's raw client, CLIENTS at once); the difference of the two
# totals over MANY - FEW is the cost of a request, start-up and shutdown cancelling out. The
# count is of every thread of the server process (user space only: the kernel's share of a
# request, about 70 % of the server's CPU time, is not in it). Under valgrind the threads run
# one at a time, so the figures do not depend on the machine's load or core count: they are
# the benchmark's machine-independent view, steady to about 1 %.
#
# Only loopback: the agent gets its credentials from a metadata emulator on 127.0.0.1 (and the
# profile's from an STS emulator on 127.0.0.1, both in `bench emulator`) and serves a Unix
# socket in a temporary directory, removed at the end with everything started. Takes about
# three minutes (48 runs under valgrind); not part of CI (.ci/run), which runs only
# `bench --smoke`.
#
# The servers (SERVERS, default all four): `hyper` (bare hyper), `agent` (the agent with its
# default settings), and one agent with one `[[profile]]` matching uid 65534, its role assumed
# from the STS emulator, and uid 1 in `allowed_uids`, asked by uid 1 (`instance`: served the
# instance role) or by uid 65534 (`profile`), both through `setpriv` (which needs root): the
# same process, configuration and socket for both, only the caller differs.
#
# A new connection's count varies by a few per cent from one run to the next (how the
# runtime's threads happen to park and wake one another under valgrind's one-at-a-time
# scheduling), a kept connection's by well under 1 %: each figure is the median of RUNS runs,
# with their range.
#
# Environment: SERVERS (default "hyper agent instance profile"), MODES (default "keep-alive
# new-conn"), CLIENTS (default 8), FEW
# (500), MANY (2500), RUNS (3), AGENT (another agent
# binary, e.g. a copy of an earlier build, to compare before and after), HYPER_ARGS (default
# --accept-on-worker, bare hyper's accept loop on a worker like the agent's; set it empty for
# the accept loop in block_on); KEEP=DIR keeps callgrind's output
# files there (SERVER-MODE-N.out) for callgrind_annotate, which names functions when the
# binaries keep their symbols, e.g. built with
#   CARGO_PROFILE_PROF_INHERITS=release CARGO_PROFILE_PROF_STRIP=false \
#   CARGO_PROFILE_PROF_DEBUG=line-tables-only cargo build --profile prof -p ... (as above)
# and run as `tests/bench/callgrind.sh target/prof`.
set -euo pipefail

target=${1:-target/release}
agent=${AGENT:-$target/ecs-credential-agent}
bench=$target/bench
clients=${CLIENTS:-8}
few=${FEW:-500}
many=${MANY:-2500}
runs=${RUNS:-3}
servers=${SERVERS:-hyper agent instance profile}
modes=${MODES:-keep-alive new-conn}
nobody=65534
instance_uid=1
for bin in "$agent" "$bench"; do
    [[ -x $bin ]] || {
        echo "callgrind.sh: no $bin; build with: cargo build --release -p ecs-credential-agent -p ecs-credential-bench --no-default-features" >&2
        exit 2
    }
done
command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind is not installed" >&2; exit 2; }

dir=$(mktemp -d "${TMPDIR:-/tmp}/ecs-callgrind.XXXXXX")
# Open to the callers of the agent with a profile (uids 1 and 65534), which run a copy of the
# bench binary from here.
chmod 0755 "$dir"
cp "$bench" "$dir/bench-client"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

# Waits until FILE has a line, for at most 60 s.
wait_for_line() {
    local file=$1 deadline=$((SECONDS + 60))
    until [[ -s $file ]]; do
        ((SECONDS < deadline)) || { echo "callgrind.sh: nothing in $file" >&2; return 1; }
        sleep 0.1
    done
}

"$bench" emulator --sts-ca-file "$dir/sts-ca.pem" >"$dir/emulator.out" &
pids+=($!)
until grep -q '^sts listening on ' "$dir/emulator.out" 2>/dev/null; do
    wait_for_line "$dir/emulator.out"
    kill -0 "${pids[-1]}" 2>/dev/null || { echo "callgrind.sh: the emulator stopped" >&2; exit 1; }
    sleep 0.1
done
endpoint=$(sed -n 's/^listening on //p' "$dir/emulator.out")
sts_endpoint=$(sed -n 's/^sts listening on //p' "$dir/emulator.out")

cat >"$dir/agent.toml" <<EOF
[metadata]
endpoint = "$endpoint"

[server]
socket_path = "$dir/agent.sock"
allowed_uids = [$(id -u)]
EOF

# The agent with one profile for uid $nobody and uid $instance_uid allowed (the bench's, see
# tests/bench/src/profile/mod.rs).
cat >"$dir/profile.toml" <<EOF
[metadata]
endpoint = "$endpoint"

[server]
socket_path = "$dir/profile.sock"
allowed_uids = [$(id -u), $instance_uid]
socket_mode = "0666"

[sts]
endpoint = "$sts_endpoint"
ca_file = "$dir/sts-ca.pem"

[[profile]]
name = "bench"
match = { uid = $nobody }
role_arn = "acs:ram::123456789012:role/bench-profile"
EOF

# Runs the bench binary as uid CALLER (and its gid, no supplementary groups); as is for root.
as_caller() {
    local caller=$1
    shift
    if [[ $caller == 0 ]]; then
        "$bench" "$@"
    else
        setpriv --reuid "$caller" --regid "$caller" --clear-groups -- "$dir/bench-client" "$@"
    fi
}

# A plain agent, to capture the body bare hyper serves (the same bytes as the agent's).
"$agent" serve --config "$dir/agent.toml" 2>"$dir/agent.log" &
pids+=($!)
until "$bench" fetch "$dir/agent.sock" "$dir/body.json" 2>/dev/null; do
    kill -0 "${pids[-1]}" 2>/dev/null || { cat "$dir/agent.log" >&2; exit 1; }
    sleep 0.1
done
kill -TERM "${pids[-1]}"
wait "${pids[-1]}" || true
unset 'pids[-1]'

# Runs SERVER (agent or hyper) under callgrind, sends N requests in MODE, stops it and prints
# the instructions it executed.
instructions() {
    local server=$1 mode=$2 n=$3 out="$dir/callgrind.out" sock pid caller=0
    rm -f "$out" "$dir"/*.sock
    if [[ $server == agent ]]; then
        sock=$dir/agent.sock
        valgrind --tool=callgrind --callgrind-out-file="$out" \
            "$agent" serve --config "$dir/agent.toml" 2>"$dir/valgrind.log" &
    elif [[ $server == instance || $server == profile ]]; then
        sock=$dir/profile.sock
        caller=$([[ $server == profile ]] && echo "$nobody" || echo "$instance_uid")
        valgrind --tool=callgrind --callgrind-out-file="$out" \
            "$agent" serve --config "$dir/profile.toml" 2>"$dir/valgrind.log" &
    else
        sock=$dir/hyper.sock
        valgrind --tool=callgrind --callgrind-out-file="$out" \
            "$bench" hyper ${HYPER_ARGS---accept-on-worker} "$sock" "$dir/body.json" >/dev/null 2>"$dir/valgrind.log" &
    fi
    pid=$!
    pids+=("$pid")
    # The agent answers 200 once it holds credentials; bare hyper once it listens. The agent
    # with a profile is asked by both callers first, so that the profile's AssumeRole is
    # behind it (in the few and the many run alike) whichever caller is measured.
    local who=(0)
    [[ $server == instance || $server == profile ]] && who=("$instance_uid" "$nobody")
    for c in "${who[@]}"; do
        until as_caller "$c" fetch "$sock" /dev/null 2>/dev/null; do
            kill -0 "$pid" 2>/dev/null || { cat "$dir/valgrind.log" >&2; exit 1; }
            sleep 0.2
        done
    done
    local result
    result=$(as_caller "$caller" requests "$sock" "$mode" "$clients" "$n")
    if ! grep -q "\"requests\":$n," <<<"$result" || ! grep -q '"errors":0,' <<<"$result"; then
        echo "callgrind.sh: $server $mode: $result" >&2
        exit 1
    fi
    kill -TERM "$pid"
    wait "$pid" || true
    unset 'pids[-1]'
    if [[ -n ${KEEP:-} ]]; then
        mkdir -p "$KEEP"
        cp "$out" "$KEEP/$server-$mode-$n.out"
    fi
    # callgrind writes the total as `summary: N` (older versions `totals: N`).
    sed -n 's/^\(summary\|totals\): *\([0-9]*\).*/\2/p' "$out" | head -n 1
}

# The median of the arguments, and their range.
median_range() {
    local sorted
    sorted=$(printf '%s\n' "$@" | sort -n)
    printf '%s (%s–%s)' "$(sed -n "$(((${#} + 1) / 2))p" <<<"$sorted")" \
        "$(head -n 1 <<<"$sorted")" "$(tail -n 1 <<<"$sorted")"
}

printf '| server | connection | clients | instructions per request (range of %s runs) |\n|---|---|---:|---:|\n' "$runs"
for mode in $modes; do
    for server in $servers; do
        per=()
        for _ in $(seq "$runs"); do
            a=$(instructions "$server" "$mode" "$few")
            b=$(instructions "$server" "$mode" "$many")
            per+=($(((b - a) / (many - few))))
        done
        case $server in
        agent) name=agent ;;
        instance) name="agent with a profile, instance-role caller (uid $instance_uid)" ;;
        profile) name="agent with a profile, profile caller (uid $nobody)" ;;
        *) name="bare hyper" ;;
        esac
        printf '| %s | %s | %s | %s |\n' "$name" "$mode" "$clients" "$(median_range "${per[@]}")"
    done
done
