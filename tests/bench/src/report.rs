//! The figures, the targets (PASS/FAIL), the markdown table and the JSON.

use serde::Serialize;

use crate::load::{LoadResult, Mode};
use crate::lookup::Lookup;
use crate::profile::report::{Comparison, ProfileHerd};
use crate::sim::Lifetime;

/// Bare hyper on loopback TCP: the reference of the agent's loopback listener.
pub const HYPER_TCP: &str = "bare hyper, TCP";
/// The agent's loopback listener (`[bridge] listen`).
pub const AGENT_TCP: &str = "agent, TCP listener";

/// One load point (median of its rounds).
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// What was measured.
    pub target: &'static str,
    /// Keep-alive or new connection (socket targets only).
    pub mode: Option<Mode>,
    /// Concurrent clients.
    pub concurrency: usize,
    /// The median round (by throughput), with the median of each percentile.
    pub result: LoadResult,
    /// Throughput of every round.
    pub rounds: Vec<f64>,
    /// p99 latency of every round, microseconds.
    pub p99_rounds: Vec<f64>,
    /// The server's CPU time per request in every round, microseconds (0 when unknown).
    pub cpu_rounds: Vec<f64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

impl Point {
    pub fn median(
        target: &'static str,
        mode: Option<Mode>,
        c: usize,
        runs: Vec<LoadResult>,
    ) -> Point {
        let rounds: Vec<f64> = runs.iter().map(|r| r.throughput).collect();
        let p99_rounds: Vec<f64> = runs.iter().map(|r| r.p99_us).collect();
        let cpu_rounds: Vec<f64> = runs
            .iter()
            .map(|r| r.server_cpu_us.unwrap_or(0.0))
            .collect();
        let pick = |f: fn(&LoadResult) -> f64| median(runs.iter().map(f).collect());
        let result = LoadResult {
            requests: runs.iter().map(|r| r.requests).sum(),
            errors: runs.iter().map(|r| r.errors).sum(),
            seconds: runs.iter().map(|r| r.seconds).sum(),
            throughput: pick(|r| r.throughput),
            p50_us: pick(|r| r.p50_us),
            p99_us: pick(|r| r.p99_us),
            p999_us: pick(|r| r.p999_us),
            first_error: runs.iter().find_map(|r| r.first_error.clone()),
            all_requests: runs.iter().map(|r| r.all_requests).sum(),
            server_cpu_us: runs
                .iter()
                .all(|r| r.server_cpu_us.is_some())
                .then(|| pick(|r| r.server_cpu_us.unwrap_or(0.0))),
            client_cpu_us: runs
                .iter()
                .all(|r| r.client_cpu_us.is_some())
                .then(|| pick(|r| r.client_cpu_us.unwrap_or(0.0))),
        };
        Point {
            target,
            mode,
            concurrency: c,
            result,
            rounds,
            p99_rounds,
            cpu_rounds,
        }
    }

    pub fn single(target: &'static str, mode: Option<Mode>, c: usize, r: LoadResult) -> Point {
        Point::median(target, mode, c, vec![r])
    }
}

/// Which per-round figure of a [`Point`] a ratio target compares.
pub(crate) type Figure = fn(&Point) -> &[f64];

/// The two targets a ratio compares: the agent's, over its reference's.
pub(crate) type Pair = (&'static str, &'static str);

/// The agent's socket over bare hyper's.
const UNIX: Pair = ("agent", "bare hyper");

/// The agent's loopback listener over bare hyper on loopback TCP.
const TCP: Pair = (AGENT_TCP, HYPER_TCP);

/// How a ratio target prints: as a percentage, or as a multiple.
#[derive(Debug, Clone, Copy)]
enum Shown {
    Percent,
    Times,
}

impl Shown {
    fn median(self, r: f64) -> String {
        match self {
            Shown::Percent => format!("{:.1} %", r * 100.0),
            Shown::Times => format!("{r:.2} ×"),
        }
    }

    fn round(self, r: f64) -> String {
        match self {
            Shown::Percent => format!("{:.0} %", r * 100.0),
            Shown::Times => format!("{r:.2}"),
        }
    }
}

/// The cold-start herd.
#[derive(Debug, Clone, Serialize)]
pub struct Herd {
    pub clients: u64,
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub token_puts: u64,
    pub role_list_gets: u64,
    pub credential_gets: u64,
    pub p50_ms: f64,
    pub max_ms: f64,
}

/// The idle agent's CPU time.
#[derive(Debug, Clone, Serialize)]
pub struct Idle {
    pub seconds: f64,
    pub cpu_ms: f64,
    pub cpu_ms_per_minute: f64,
}

/// The machine the figures come from.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu: String,
    pub kernel: String,
    /// `/proc/loadavg` when the run ended.
    pub loadavg: String,
}

impl Machine {
    pub fn describe() -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        Machine {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu: read("/proc/cpuinfo")
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
                .unwrap_or_default(),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            loadavg: read("/proc/loadavg")
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

/// One target and its verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub name: String,
    pub required: String,
    pub measured: String,
    pub pass: bool,
}

/// Everything a run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub smoke: bool,
    /// Only the profile comparison was run (`--profiles-only`).
    pub profiles_only: bool,
    pub machine: Machine,
    /// `/proc/loadavg` when the run started.
    pub loadavg_at_start: String,
    pub total_secs: f64,
    pub request_bytes: usize,
    pub response_bytes: usize,
    pub agent_binary_bytes: u64,
    pub startup_ms: Vec<f64>,
    pub rss_start_kib: u64,
    pub rss_1000_conns_kib: u64,
    pub held_connections: u64,
    pub rss_after_close_kib: u64,
    pub idle: Option<Idle>,
    pub herd: Option<Herd>,
    /// The loopback listener's caller lookup, per connection.
    pub lookup: Option<Lookup>,
    pub lifetimes: Vec<Lifetime>,
    /// The cold-start herd of profile callers.
    pub profile_herd: Option<ProfileHerd>,
    /// Accepted `AssumeRole` calls while the profile comparison loaded the agent.
    pub profile_assume_roles_under_load: Option<u64>,
    /// The profile caller over the instance-role caller, per load point (full runs).
    pub profile_comparison: Vec<Comparison>,
    /// Why the profile comparison was left out, when it was.
    pub profile_note: Option<String>,
    pub points: Vec<Point>,
    pub targets: Vec<Target>,
}

const MIB: f64 = 1024.0;

impl Report {
    pub fn new(smoke: bool) -> Report {
        Report {
            smoke,
            loadavg_at_start: Machine::describe().loadavg,
            ..Report::default()
        }
    }

    fn point(&self, target: &str, mode: Mode, c: usize) -> Option<&Point> {
        self.points
            .iter()
            .find(|p| p.target == target && p.mode == Some(mode) && p.concurrency == c)
    }

    /// The agent's figure over bare hyper's at one load point: the median of the per-round
    /// ratios. Each round measures the two back to back, so a slow spell of the (shared)
    /// machine weighs on both sides of a ratio rather than on one side of the medians.
    /// Also returns the per-round ratios.
    pub(crate) fn agent_over_hyper(
        &self,
        pair: Pair,
        mode: Mode,
        c: usize,
        f: Figure,
    ) -> (f64, Vec<f64>) {
        let (Some(a), Some(h)) = (self.point(pair.0, mode, c), self.point(pair.1, mode, c)) else {
            return (f64::NAN, Vec::new());
        };
        let ratios: Vec<f64> = f(a)
            .iter()
            .zip(f(h))
            .filter(|(&a, &h)| a > 0.0 && h > 0.0)
            .map(|(a, h)| a / h)
            .collect();
        let m = if ratios.is_empty() {
            f64::NAN
        } else {
            median(ratios.clone())
        };
        (m, ratios)
    }

    /// A target on [`Report::agent_over_hyper`], shown with every round's ratio.
    fn ratio_target(
        &mut self,
        name: &str,
        required: &str,
        (pair, mode, c, f): (Pair, Mode, usize, Figure),
        shown: Shown,
        pass: fn(f64) -> bool,
    ) {
        let (ratio, rounds) = self.agent_over_hyper(pair, mode, c, f);
        let rounds: Vec<String> = rounds.iter().map(|&r| shown.round(r)).collect();
        let measured = format!("{} (rounds: {})", shown.median(ratio), rounds.join(", "));
        self.target(name, required, measured, pass(ratio));
    }

    /// Throughput, latency and server CPU time per request against bare hyper's, each the
    /// median of the per-round ratios (raw client).
    fn throughput_and_cpu_targets(&mut self) {
        let throughput: Figure = |p| &p.rounds;
        let cpu: Figure = |p| &p.cpu_rounds;
        self.ratio_target(
            "throughput, keep-alive, c=8",
            "≥ 90 % of bare hyper",
            (UNIX, Mode::KeepAlive, 8, throughput),
            Shown::Percent,
            |r| r >= 0.90,
        );
        self.ratio_target(
            "p99 latency, keep-alive, c=1",
            "≤ 1.2 × bare hyper",
            (UNIX, Mode::KeepAlive, 1, |p| &p.p99_rounds),
            Shown::Times,
            |r| r <= 1.2,
        );
        for c in [1, 8] {
            self.ratio_target(
                &format!("throughput, new connection, c={c}"),
                "≥ 90 % of bare hyper",
                (UNIX, Mode::NewConn, c, throughput),
                Shown::Percent,
                |r| r >= 0.90,
            );
        }
        for (mode, name) in [
            (Mode::KeepAlive, "keep-alive"),
            (Mode::NewConn, "new connection"),
        ] {
            for c in [1, 8] {
                self.ratio_target(
                    &format!("server CPU per request, {name}, c={c}"),
                    "≤ 1.1 × bare hyper",
                    (UNIX, mode, c, cpu),
                    Shown::Times,
                    |r| r <= 1.1,
                );
            }
        }
    }

    /// The loopback listener against bare hyper on loopback TCP (issue 12's targets): the
    /// same per-round ratios, with lower bars for a new connection per request, which pays
    /// for the caller lookup.
    fn listener_targets(&mut self) {
        self.ratio_target(
            "listener: throughput, keep-alive, c=8",
            "≥ 90 % of bare hyper (TCP)",
            (TCP, Mode::KeepAlive, 8, |p| &p.rounds),
            Shown::Percent,
            |r| r >= 0.90,
        );
        self.ratio_target(
            "listener: throughput, new connection, c=8",
            "≥ 80 % of bare hyper (TCP)",
            (TCP, Mode::NewConn, 8, |p| &p.rounds),
            Shown::Percent,
            |r| r >= 0.80,
        );
        self.ratio_target(
            "listener: p99 latency, keep-alive, c=1",
            "≤ 1.2 × bare hyper (TCP)",
            (TCP, Mode::KeepAlive, 1, |p| &p.p99_rounds),
            Shown::Times,
            |r| r <= 1.2,
        );
    }

    pub(crate) fn target(&mut self, name: &str, required: &str, measured: String, pass: bool) {
        self.targets.push(Target {
            name: name.into(),
            required: required.into(),
            measured,
            pass,
        });
    }

    /// Checks every target (only the counts in smoke mode).
    pub fn evaluate(&mut self) {
        let errors: u64 = self.points.iter().map(|p| p.result.errors).sum();
        self.target("no failed request", "0", errors.to_string(), errors == 0);
        if let Some(h) = self.herd.clone() {
            self.target(
                "cold-start herd: metadata requests for 1000 concurrent clients",
                "1 token PUT, 1 credential GET, 1000 × 200",
                format!(
                    "{} token PUT, {} credential GET ({} role list GET), {} × 200",
                    h.token_puts, h.credential_gets, h.role_list_gets, h.ok
                ),
                h.token_puts == 1 && h.credential_gets == 1 && h.ok == h.clients && h.errors == 0,
            );
        }
        self.profile_targets();
        if self.smoke || self.profiles_only {
            return;
        }
        self.throughput_and_cpu_targets();
        self.listener_targets();
        let (start, peak, after) = (
            self.rss_start_kib as f64 / MIB,
            self.rss_1000_conns_kib as f64 / MIB,
            self.rss_after_close_kib as f64 / MIB,
        );
        self.target(
            "RSS after start",
            "≤ 10 MiB",
            format!("{start:.1} MiB"),
            start > 0.0 && start <= 10.0,
        );
        self.target(
            "peak RSS with 1000 idle connections",
            "≤ 40 MiB",
            format!("{peak:.1} MiB ({} connections held)", self.held_connections),
            peak > 0.0 && peak <= 40.0 && self.held_connections == 1000,
        );
        self.target(
            "RSS after they close",
            "< 2 × RSS after start",
            format!("{after:.1} MiB ({:.2} ×)", after / start),
            after > 0.0 && after < 2.0 * start,
        );
        if let Some(idle) = self.idle.clone() {
            self.target(
                "idle CPU",
                "≤ 50 ms per minute",
                format!(
                    "{:.1} ms per minute ({:.1} ms over {:.0} s)",
                    idle.cpu_ms_per_minute, idle.cpu_ms, idle.seconds
                ),
                idle.cpu_ms_per_minute <= 50.0,
            );
        }
        let worst_gets = self
            .lifetimes
            .iter()
            .map(|l| l.credential_gets)
            .max()
            .unwrap_or(0);
        let worst_puts = self
            .lifetimes
            .iter()
            .map(|l| l.token_puts)
            .max()
            .unwrap_or(0);
        let fresh = self.lifetimes.iter().all(|l| l.always_fresh);
        self.target(
            "metadata requests per 6 h credential lifetime (simulated)",
            "≤ 10 credential GETs, 1 token PUT per token lifetime",
            format!(
                "{worst_gets} credential GETs, {worst_puts} token PUT (worst of {} runs)",
                self.lifetimes.len()
            ),
            worst_gets <= 10 && worst_puts <= 1 && fresh,
        );
        let startup = median(self.startup_ms.clone());
        self.target(
            "start-up to first credentials served",
            "≤ 100 ms",
            format!("{startup:.1} ms (median of {})", self.startup_ms.len()),
            startup > 0.0 && startup <= 100.0,
        );
    }

    pub fn all_pass(&self) -> bool {
        self.targets.iter().all(|t| t.pass)
    }

    /// The markdown tables.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let m = &self.machine;
        s.push_str(&format!(
            "Machine: {} CPUs ({}), Linux {}, load average {} at the start, {} at the end. \
             Request {} B, response {} B. Run took {:.0} s{}.\n\n",
            m.nproc,
            m.cpu,
            m.kernel,
            self.loadavg_at_start,
            m.loadavg,
            self.request_bytes,
            self.response_bytes,
            self.total_secs,
            if self.smoke { " (smoke mode)" } else { "" },
        ));
        s.push_str("| server / client | connection | clients | req/s | % of floor | p50 µs | p99 µs | p99.9 µs | server CPU µs/req | client CPU µs/req | errors |\n");
        s.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for p in &self.points {
            // The floor is a Unix socket server: no share for the TCP rows.
            let floor = p
                .mode
                .filter(|_| p.target != HYPER_TCP && p.target != AGENT_TCP)
                .and_then(|mode| self.point("floor", mode, p.concurrency));
            let share = match floor {
                Some(f) if f.result.throughput > 0.0 => {
                    format!("{:.0} %", 100.0 * p.result.throughput / f.result.throughput)
                }
                _ => "—".into(),
            };
            let mode = match p.mode {
                Some(Mode::KeepAlive) => "keep-alive",
                Some(Mode::NewConn) => "new per request",
                None if p.target.starts_with("direct") => "new TCP per request",
                None if p.target.ends_with("uncached") => "new per call",
                None => "—",
            };
            let r = &p.result;
            s.push_str(&format!(
                "| {} | {} | {} | {:.0} | {} | {:.1} | {:.1} | {:.1} | {} | {} | {} |\n",
                p.target,
                mode,
                p.concurrency,
                r.throughput,
                share,
                r.p50_us,
                r.p99_us,
                r.p999_us,
                r.server_cpu_us
                    .map_or("—".to_owned(), |c| format!("{c:.1}")),
                r.client_cpu_us
                    .map_or("—".to_owned(), |c| format!("{c:.1}")),
                r.errors
            ));
        }
        s.push('\n');
        if let Some(h) = &self.herd {
            s.push_str(&format!(
                "Cold-start herd: {} clients, {} answered 200 (median {:.0} ms, all within {:.0} ms; first token PUT delayed 500 ms); \
                 metadata requests: {} token PUT, {} role list GET, {} credential GET.\n\n",
                h.clients, h.ok, h.p50_ms, h.max_ms, h.token_puts, h.role_list_gets, h.credential_gets
            ));
        }
        if let Some(l) = &self.lookup {
            s.push_str(&format!(
                "Loopback listener, per connection (in-process, {} calls): the caller's \
                 sock_diag lookup {:.2} µs, its Caller {:.3} µs (the user database is read \
                 only when a rule or an audit event needs the caller's gid).\n\n",
                l.calls,
                l.sock_diag_ns / 1000.0,
                l.caller_ns / 1000.0
            ));
        }
        s.push_str(&self.profile_markdown());
        if !self.smoke && !self.profiles_only {
            s.push_str(&format!(
                "Memory (agent RSS): {:.1} MiB after start, {:.1} MiB peak with {} idle connections, {:.1} MiB after they closed. \
                 Start-up to first credentials: {} ms. Release binary: {:.2} MiB ({} bytes).\n\n",
                self.rss_start_kib as f64 / MIB,
                self.rss_1000_conns_kib as f64 / MIB,
                self.held_connections,
                self.rss_after_close_kib as f64 / MIB,
                self.startup_ms.iter().map(|t| format!("{t:.1}")).collect::<Vec<_>>().join(", "),
                self.agent_binary_bytes as f64 / MIB / MIB,
                self.agent_binary_bytes,
            ));
            if let Some(i) = &self.idle {
                s.push_str(&format!(
                    "Idle: {:.1} ms CPU over {:.0} s.\n\n",
                    i.cpu_ms, i.seconds
                ));
            }
            for l in &self.lifetimes {
                s.push_str(&format!(
                    "Simulated 6 h lifetime, {} jitter: {} credential GETs, {} token PUT.\n",
                    l.jitter, l.credential_gets, l.token_puts
                ));
            }
            s.push('\n');
        }
        if !self.smoke && !self.profiles_only {
            s.push_str(
                "Targets against bare hyper: the median of the per-round ratios (each round \
                 measures bare hyper and the agent back to back, with the raw client); the rounds' \
                 ratios follow. Server CPU is the server process's CPU time over the load run \
                 (warm-up included) per request answered.\n\n",
            );
        }
        s.push_str("| target | required | measured | |\n|---|---|---|---|\n");
        for t in &self.targets {
            s.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                t.name,
                t.required,
                t.measured,
                if t.pass { "PASS" } else { "FAIL" }
            ));
        }
        s
    }
}
