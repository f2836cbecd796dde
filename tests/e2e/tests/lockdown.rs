//! `ecs-credential-agent lockdown apply | status | remove` against real nftables, in two
//! network namespaces joined by a veth pair, never in the host's own (nft tables belong to a
//! network namespace, so the host's rules are never read or changed):
//!
//! ```text
//!  netns A (the "metadata service")        netns B (the instance's callers)
//!  lo: 100.100.100.200/32  emulator :80     route 100.100.100.200 via 10.200.0.1
//!  va: 10.200.0.1/30  <------ veth ------>  vb: 10.200.0.2/30
//!                                           `lockdown` runs here; callers as uid 0, 1, 65534
//!                                           forwards for C (ip_forward = 1)
//!                                           vbc: 10.200.1.1/30
//!                                             ^ veth
//!                                           netns C (a bridge-network "container")
//!                                           vc: 10.200.1.2/30, default via 10.200.1.1
//! ```
//!
//! Two namespaces rather than the emulator on B's `lo`: `meta skuid` judges locally generated
//! packets in the output hook, and an emulator in B would send its replies through that hook
//! with no socket owner, so "accept root, reset the rest" would reset the replies to root too.
//! Here, as on an instance, the metadata service is remote.
//!
//! Callers are `e2e-metadata-call` (this package's binary: one token `PUT`), run in B through
//! `ip netns exec` and, for a uid other than root, `setpriv`. The agent's user is `daemon`
//! (uid 1, present on Debian and RHEL-like systems); the unprivileged caller is uid 65534.
//!
//! Needs root, `nft` (nftables), `ip` (iproute2) and `setpriv` (util-linux). Without them the
//! test prints `SKIPPED: …` and passes; with `ECA_LOCKDOWN_TESTS=required` (as `.ci/run`
//! sets) it fails instead.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Output};

use ecs_credential_agent_e2e::*;
use ecs_metadata_emulator::{Emulator, EmulatorConfig};

/// The metadata service's address, on `lo` of namespace A only.
const METADATA: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(100, 100, 100, 200), 80));
/// The agent's user `apply` is given, and its uid.
const AGENT_USER: &str = "daemon";
/// An unprivileged uid the table must reset.
const OTHER_UID: u32 = 65534;
/// Our table, as `nft list tables` prints it.
const TABLE_LINE: &str = "table inet ecs_credential_agent";

/// `e2e-metadata-call`'s exit statuses (see its docs).
const SERVED: i32 = 0;
const REFUSED: i32 = 10;
const DROPPED: i32 = 13;
/// How long a forwarded connection is given to be answered once the lockdown drops it (a
/// negative check: it passes only by timing out).
const DROP_SECS: u32 = 5;

fn required() -> bool {
    std::env::var("ECA_LOCKDOWN_TESTS").as_deref() == Ok("required")
}

/// Why the test cannot run here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    if !is_root() {
        return Some("needs root for network namespaces and nftables".into());
    }
    for (tool, arg, package) in [
        ("nft", "--version", "nftables"),
        ("ip", "-V", "iproute2"),
        ("setpriv", "--version", "util-linux"),
    ] {
        if Command::new(tool).arg(arg).output().is_err() {
            return Some(format!("no `{tool}` ({package})"));
        }
    }
    if nix::unistd::User::from_name(AGENT_USER)
        .ok()
        .flatten()
        .is_none()
    {
        return Some(format!("no user {AGENT_USER}"));
    }
    None
}

/// The `ip` commands that build the topology (`{a}`, `{b}`, `{c}`: the namespaces' names).
const SETUP: &str = "
    netns add {a}
    netns add {b}
    netns add {c}
    -n {a} link add va type veth peer name vb netns {b}
    -n {a} link set lo up
    -n {a} link set va up
    -n {a} addr add 100.100.100.200/32 dev lo
    -n {a} addr add 10.200.0.1/30 dev va
    -n {a} route add 10.200.1.0/30 via 10.200.0.2
    -n {b} link set lo up
    -n {b} link set vb up
    -n {b} addr add 10.200.0.2/30 dev vb
    -n {b} route add 100.100.100.200/32 via 10.200.0.1
    -n {b} link add vbc type veth peer name vc netns {c}
    -n {b} link set vbc up
    -n {b} addr add 10.200.1.1/30 dev vbc
    netns exec {b} sysctl -qw net.ipv4.ip_forward=1
    -n {c} link set lo up
    -n {c} link set vc up
    -n {c} addr add 10.200.1.2/30 dev vc
    -n {c} route add default via 10.200.1.1
";

/// Namespaces A, B and C and their veth pairs; the namespaces (and with them the pairs) are
/// deleted when dropped, on every path.
struct Topology {
    a: String,
    b: String,
    c: String,
}

impl Topology {
    fn new() -> Topology {
        let id = std::process::id();
        let topology = Topology {
            a: format!("eca-lock-a-{id}"),
            b: format!("eca-lock-b-{id}"),
            c: format!("eca-lock-c-{id}"),
        };
        for line in SETUP.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let line = line
                .replace("{a}", &topology.a)
                .replace("{b}", &topology.b)
                .replace("{c}", &topology.c);
            let args: Vec<&str> = line.split_whitespace().collect();
            let out = Command::new("ip").args(&args).output().unwrap();
            assert!(out.status.success(), "ip {line}: {}", text(&out.stderr));
        }
        topology
    }

    /// A TCP listener on `addr` in namespace A (bound from a thread that joins it).
    fn bind_in_a(&self, addr: SocketAddr) -> std::net::TcpListener {
        let ns = std::fs::File::open(Path::new("/run/netns").join(&self.a)).unwrap();
        std::thread::spawn(move || {
            // SAFETY: setns(2) on a valid namespace descriptor changes only this thread, which
            // ends right after binding; the socket stays in namespace A.
            assert_eq!(
                unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            std::net::TcpListener::bind(addr).unwrap()
        })
        .join()
        .expect("bind in namespace A")
    }

    /// Runs `program args` in namespace B, as `uid` (and gid, no supplementary groups) unless
    /// it is root.
    fn run_in_b(&self, uid: u32, program: &Path, args: &[&str]) -> Output {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.b]);
        if uid != 0 {
            let id = uid.to_string();
            cmd.args([
                "setpriv",
                "--reuid",
                &id,
                "--regid",
                &id,
                "--clear-groups",
                "--",
            ]);
        }
        cmd.arg(program).args(args).output().unwrap()
    }

    /// `e2e-metadata-call` to the metadata address from B as `uid`: its exit status.
    fn call_as(&self, uid: u32) -> i32 {
        let bin = Path::new(env!("CARGO_BIN_EXE_e2e-metadata-call"));
        let out = self.run_in_b(uid, bin, &[&METADATA.to_string()]);
        out.status.code().unwrap_or(-1)
    }

    /// `e2e-metadata-call` to the metadata address from C (forwarded by B) as root, connecting
    /// within `secs`: its exit status.
    fn call_from_c(&self, secs: u32) -> i32 {
        let bin = env!("CARGO_BIN_EXE_e2e-metadata-call");
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.c,
                bin,
                &METADATA.to_string(),
                &secs.to_string(),
            ])
            .output()
            .unwrap();
        out.status.code().unwrap_or(-1)
    }

    /// `<agent> lockdown ARGS` in B, as root.
    fn lockdown(&self, args: &[&str]) -> Output {
        let mut all = vec!["lockdown"];
        all.extend_from_slice(args);
        self.run_in_b(0, agent_bin!(), &all)
    }

    /// `nft list table inet ecs_credential_agent` in B (empty when absent).
    fn listed(&self) -> String {
        let nft = Path::new("nft");
        let out = self.run_in_b(0, nft, &["list", "table", "inet", "ecs_credential_agent"]);
        text(&out.stdout)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b, &self.c] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts `out` exited with `code`, showing its output otherwise; returns its stdout.
fn expect(out: &Output, code: i32, what: &str) -> String {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: stdout {:?}, stderr {:?}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn host_tables() -> String {
    text(
        &Command::new("nft")
            .args(["list", "tables"])
            .output()
            .unwrap()
            .stdout,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_root_and_the_agent_s_user_reach_the_metadata_service_while_applied() {
    if let Some(why) = missing_prerequisite() {
        assert!(
            !required(),
            "lockdown test: {why} (ECA_LOCKDOWN_TESTS=required)"
        );
        eprintln!("SKIPPED: lockdown test: {why} (.ci/run installs what it needs; run as root)");
        return;
    }
    let host_before = host_tables();
    let agent_uid = nix::unistd::User::from_name(AGENT_USER)
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    let topology = Topology::new();
    let emulator =
        Emulator::from_listener(topology.bind_in_a(METADATA), EmulatorConfig::default()).unwrap();

    before_apply(&topology);
    while_applied(&topology, &emulator, agent_uid);
    after_remove(&topology);

    drop(emulator);
    drop(topology);
    assert_eq!(
        host_tables(),
        host_before,
        "the host's own tables are untouched"
    );
}

/// Before `apply`: everyone is served; `status` says it is not loaded; an unknown user is refused.
fn before_apply(topology: &Topology) {
    // Before: everyone is served; status says it is not loaded.
    let out = topology.lockdown(&["status"]);
    assert!(expect(&out, 3, "status before apply").contains("not loaded"));
    assert_eq!(
        topology.call_as(OTHER_UID),
        SERVED,
        "uid {OTHER_UID} before apply"
    );
    assert_eq!(topology.call_as(0), SERVED, "root before apply");
    assert_eq!(
        topology.call_from_c(20),
        SERVED,
        "forwarded from C before apply"
    );

    // A user that does not exist is refused, and nothing is loaded.
    let out = topology.lockdown(&["apply", "--user", "no-such-user-eca"]);
    expect(&out, 67, "apply --user no-such-user-eca");
    assert!(text(&out.stderr).contains("no user \"no-such-user-eca\""));
    assert_eq!(topology.listed(), "");
}

/// `apply` (twice), then who is served, reset or dropped, and what `status` says.
fn while_applied(topology: &Topology, emulator: &Emulator, agent_uid: u32) {
    // Applied (twice: the same table, replaced whole).
    expect(
        &topology.lockdown(&["apply", "--user", AGENT_USER]),
        0,
        "apply",
    );
    let first = topology.listed();
    expect(
        &topology.lockdown(&["apply", "--user", AGENT_USER]),
        0,
        "apply again",
    );
    assert_eq!(topology.listed(), first, "a second apply changes nothing");
    assert!(first.starts_with(TABLE_LINE), "{first}");
    assert!(
        first.contains(&format!("meta skuid {{ 0, {agent_uid} }} accept")),
        "{first}"
    );
    let out = topology.lockdown(&["status"]);
    let said = expect(&out, 0, "status after apply");
    assert!(said.contains("lockdown: loaded"), "{said}");
    assert!(
        said.contains(&format!("allowed uids: 0, {agent_uid}\n")),
        "{said}"
    );

    // Root and the agent's user are served; the other uid gets a reset.
    let issued = emulator.counts().tokens_issued;
    assert_eq!(
        topology.call_as(OTHER_UID),
        REFUSED,
        "uid {OTHER_UID} after apply"
    );
    assert_eq!(topology.call_as(0), SERVED, "root after apply");
    assert_eq!(
        topology.call_as(agent_uid),
        SERVED,
        "{AGENT_USER} after apply"
    );
    assert_eq!(
        emulator.counts().tokens_issued,
        issued + 2,
        "root's and the agent's only"
    );
    // Forwarded from C (a container's network): dropped, root or not.
    assert_eq!(
        topology.call_from_c(DROP_SECS),
        DROPPED,
        "forwarded from C after apply"
    );
    let out = topology.lockdown(&["status", "--probe"]);
    let said = expect(&out, 0, "status --probe after apply");
    assert!(
        said.contains("probe: uid 65534 connecting to 100.100.100.200:80: reset"),
        "{said}"
    );
    // A container network appears in B: status warns.
    let out = Command::new("ip")
        .args([
            "-n",
            &topology.b,
            "link",
            "add",
            "docker0",
            "type",
            "bridge",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = topology.lockdown(&["status"]);
    expect(&out, 0, "status with docker0");
    let warned = text(&out.stderr);
    assert!(
        warned.contains("warning: container networks exist (docker0)"),
        "{warned}"
    );
}

/// After `remove`: everyone is served again.
fn after_remove(topology: &Topology) {
    // Removed: everyone is served again; removing twice is fine.
    expect(&topology.lockdown(&["remove"]), 0, "remove");
    expect(&topology.lockdown(&["remove"]), 0, "remove again");
    assert!(
        expect(&topology.lockdown(&["status"]), 3, "status after remove").contains("not loaded")
    );
    assert_eq!(
        topology.call_as(OTHER_UID),
        SERVED,
        "uid {OTHER_UID} after remove"
    );
    assert_eq!(
        topology.call_from_c(20),
        SERVED,
        "forwarded from C after remove"
    );
    let out = topology.lockdown(&["status", "--probe"]);
    expect(&out, 3, "status --probe after remove");
}
