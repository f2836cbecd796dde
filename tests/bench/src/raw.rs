//! The raw client (`bench load …`, `bench requests …`): the load generator of the agent and
//! bare hyper cells, over a Unix socket or loopback TCP. Each client is an OS thread with a blocking socket that writes the
//! request bytes itself and reads the answer's head, then exactly `Content-Length` bytes of
//! body; no async runtime, no HTTP library. Per request it makes the system calls a client
//! cannot avoid (`connect` and `close` for a new connection, one `write`, one or two `read`s)
//! and nothing else, so on a machine with few cores it takes as little CPU from the server as
//! a client can, the same for every server measured.
//!
//! Why not async: a tokio client adds `epoll_ctl`, `epoll_wait` and wake-ups per request and
//! competes with the server for the same two cores; with a new connection per request its
//! share dilutes the server's difference in the throughput ratio (the server's CPU per request
//! tells the difference whatever the client: see `report.rs`).

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::load::{parse_head, Addr, Conn, LoadResult, Mode, Tally, Window};

/// When a raw run stops.
#[derive(Debug, Clone, Copy)]
pub enum Until {
    /// After a warm-up and a measured window (`bench load`).
    Window(Window),
    /// After exactly this many requests in all, every one measured (`bench requests`, the
    /// callgrind script's fixed count).
    Requests(u64),
}

/// What the clients share: when to stop, and what is left of a fixed count.
struct Plan {
    from: Instant,
    end: Option<Instant>,
    left: AtomicU64,
}

impl Plan {
    fn new(until: Until) -> Plan {
        let now = Instant::now();
        match until {
            Until::Window(w) => Plan {
                from: now + w.warmup,
                end: Some(now + w.warmup + w.duration),
                left: AtomicU64::new(u64::MAX),
            },
            Until::Requests(n) => Plan {
                from: now,
                end: None,
                left: AtomicU64::new(n),
            },
        }
    }

    /// Whether a client may send one more request.
    fn next(&self) -> bool {
        match self.end {
            Some(end) => Instant::now() < end,
            None => self
                .left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok(),
        }
    }
}

/// `concurrency` raw clients sending `GET /v1/credentials` to `addr` until `until`.
pub fn raw_load(addr: &Addr, mode: Mode, concurrency: usize, until: Until) -> LoadResult {
    let plan = Plan::new(until);
    let started = Instant::now();
    let cpu = own_cpu_time();
    let tallies: Vec<Tally> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..concurrency)
            .map(|_| scope.spawn(|| client(addr, mode, &plan)))
            .collect();
        clients
            .into_iter()
            .map(|c| c.join().expect("a raw client thread panicked"))
            .collect()
    });
    let seconds = match until {
        Until::Window(w) => w.duration.as_secs_f64(),
        Until::Requests(_) => started.elapsed().as_secs_f64(),
    };
    let mut result = Tally::merge(tallies).result(seconds);
    if result.all_requests > 0 {
        let used = own_cpu_time().saturating_sub(cpu);
        result.client_cpu_us = Some(used.as_secs_f64() * 1e6 / result.all_requests as f64);
    }
    result
}

/// One client: requests until the plan says stop, or after too many errors.
fn client(addr: &Addr, mode: Mode, plan: &Plan) -> Tally {
    let mut t = Tally::default();
    let mut buf = vec![0u8; 16 * 1024];
    let request = addr.request();
    let mut conn: Option<Conn> = None;
    while plan.next() {
        let start = Instant::now();
        let outcome = match conn.as_mut() {
            Some(s) => one_request(s, request, &mut buf),
            None => addr
                .connect()
                .map(|s| conn.insert(s))
                .and_then(|s| one_request(s, request, &mut buf)),
        };
        let done = Instant::now();
        if outcome.is_err() || mode == Mode::NewConn {
            // Closed after the whole answer was read, as a client that is done with it does.
            conn = None;
        }
        t.record(outcome, done - start, done, plan.from);
        if t.too_many_errors() {
            break;
        }
    }
    t
}

/// Writes `request` and reads one answer: the head, then exactly `Content-Length` bytes of
/// body. Returns the status.
fn one_request(s: &mut Conn, request: &[u8], buf: &mut [u8]) -> io::Result<u16> {
    s.write_all(request)?;
    let mut have = 0;
    let (status, head_end, len) = loop {
        if have == buf.len() {
            return Err(io::Error::other("response head too large"));
        }
        let n = s.read(&mut buf[have..])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the response",
            ));
        }
        have += n;
        if let Some(head) = parse_head(&buf[..have])? {
            break head;
        }
    };
    // The rest of the body, without keeping it: its bytes are not looked at.
    let mut left = (head_end + len).saturating_sub(have);
    while left > 0 {
        let room = left.min(buf.len());
        let n = s.read(&mut buf[..room])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed in the body",
            ));
        }
        left -= n;
    }
    Ok(status)
}

/// The CPU time this process has used so far, all its threads (`getrusage(RUSAGE_SELF)`,
/// which counts threads that have exited too).
fn own_cpu_time() -> Duration {
    let Ok(usage) = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF) else {
        return Duration::ZERO;
    };
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    tv(usage.user_time()) + tv(usage.system_time())
}
