use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::*;
use crate::credentials::State;
use crate::heartbeat::Heartbeat;
use crate::test_support::issued;

/// Records every message as its `KEY=VALUE` lines joined by `|`, with the paused-time offset.
#[derive(Default)]
struct Recorder(Mutex<Vec<(Duration, String)>>);

struct Shared(Arc<Recorder>, Instant);

impl Sink for Shared {
    fn send(&self, states: &[NotifyState<'_>]) {
        let line: Vec<String> = states.iter().map(|s| s.to_string()).collect();
        let at = Instant::now() - self.1;
        self.0 .0.lock().unwrap().push((at, line.join("|")));
    }
}

impl Recorder {
    fn take(&self) -> Vec<(Duration, String)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

struct Setup {
    rec: Arc<Recorder>,
    state: watch::Sender<State>,
    server: Heartbeat,
    refresher: Heartbeat,
    notifier: Notifier,
}

fn setup(ready_timeout: Duration, watchdog: Option<Duration>) -> Setup {
    let rec = Arc::new(Recorder::default());
    let (state, rx) = watch::channel(State::default());
    let (server, refresher) = (Heartbeat::new(), Heartbeat::new());
    let watched = vec![
        Watched {
            name: "refresher",
            beats: refresher.subscribe(),
            max_gap: Duration::from_secs(40),
        },
        Watched {
            name: "server",
            beats: server.subscribe(),
            max_gap: Duration::from_secs(5),
        },
    ];
    let sink = Arc::new(Shared(Arc::clone(&rec), Instant::now()));
    let cfg = NotifyConfig {
        ready_timeout,
        watchdog,
        watched,
    };
    let notifier = Notifier::spawn(sink, rx, cfg);
    Setup {
        rec,
        state,
        server,
        refresher,
        notifier,
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[tokio::test(start_paused = true)]
async fn ready_when_credentials_arrive_then_pings_then_stopping_last() {
    let mut s = setup(secs(30), Some(secs(10)));
    tokio::time::sleep(secs(3)).await;
    assert!(s.rec.take().is_empty(), "nothing before credentials");
    let issued = Arc::new(issued(1, "STS.test", secs(3600), secs(60)));
    s.state.send_modify(|st| st.credentials = Some(issued));
    tokio::time::sleep(Duration::from_millis(1)).await;
    let msgs = s.rec.take();
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert_eq!(
        msgs[0].1,
        "READY=1|STATUS=serving role EcsRole, credentials expire in 1h 00m"
    );
    assert_eq!(msgs[1].1, "WATCHDOG=1");
    for _ in 0..4 {
        s.server.beat();
        tokio::time::sleep(secs(4)).await;
    }
    let msgs = s.rec.take();
    let pings: Vec<_> = msgs.iter().filter(|m| m.1 == "WATCHDOG=1").collect();
    assert_eq!(pings.len(), 3, "every 5 s (half of 10 s): {msgs:?}");
    // The time to expiry moved past a minute boundary: one new STATUS, no repeats.
    let statuses: Vec<_> = msgs.iter().filter(|m| m.1.starts_with("STATUS=")).collect();
    assert_eq!(statuses.len(), 1, "{msgs:?}");
    assert!(statuses[0].1.ends_with("expire in 59m"), "{statuses:?}");
    s.notifier.stopping();
    s.notifier.stopping();
    tokio::time::sleep(secs(30)).await;
    let msgs = s.rec.take();
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(
        msgs[0].1,
        "STOPPING=1|STATUS=stopping: finishing in-flight requests"
    );
}

#[tokio::test(start_paused = true)]
async fn ready_after_the_timeout_without_credentials() {
    let s = setup(secs(30), None);
    tokio::time::sleep(secs(29)).await;
    assert!(s.rec.take().is_empty());
    tokio::time::sleep(secs(2)).await;
    let msgs = s.rec.take();
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0].0, secs(30));
    assert_eq!(
        msgs[0].1,
        "READY=1|STATUS=no credentials: agent is starting: no credentials fetched yet"
    );
    s.state
        .send_modify(|st| st.last_error = Some("refused".into()));
    tokio::time::sleep(secs(60)).await;
    assert!(s.rec.take().is_empty(), "no watchdog without WATCHDOG_USEC");
}

#[tokio::test(start_paused = true)]
async fn pings_stop_while_a_loop_is_stuck_and_resume_when_it_beats() {
    let s = setup(Duration::ZERO, Some(secs(2)));
    // The refresher beats, the server stops beating.
    for _ in 0..10 {
        s.refresher.beat();
        tokio::time::sleep(secs(1)).await;
    }
    let msgs = s.rec.take();
    let last_ping = msgs
        .iter()
        .filter(|m| m.1 == "WATCHDOG=1")
        .map(|m| m.0)
        .max()
        .unwrap();
    assert!(
        last_ping <= secs(5),
        "pings after the server's max gap: {msgs:?}"
    );
    assert!(last_ping >= secs(4), "{msgs:?}");
    s.server.beat();
    tokio::time::sleep(secs(2)).await;
    let msgs = s.rec.take();
    assert!(msgs.iter().any(|m| m.1 == "WATCHDOG=1"), "{msgs:?}");
    drop(s.refresher);
}
