//! The refresher's log lines name the credential generation but never a secret.
//!
//! Alone in its own test binary on purpose: `tracing` caches per-callsite interest globally,
//! so a thread-local subscriber can miss events that a parallel test registered first.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ecs_credential_agent::credentials::RefreshPolicy;
use ecs_credential_agent::credentials::{Credentials, Fetched, Refresher, Source};
use ecs_credential_agent::sources::metadata::MetadataError;
use ecs_credential_agent::time::TimeSource;
use secrecy::SecretString;
use time::OffsetDateTime;
use tokio::time::Instant;

const HOUR: Duration = Duration::from_secs(3600);

/// Wall clock following tokio's paused clock.
#[derive(Debug)]
struct PausedClock {
    base_wall: SystemTime,
    base: Instant,
}

impl TimeSource for PausedClock {
    fn now(&self) -> SystemTime {
        self.base_wall + (Instant::now() - self.base)
    }
}

/// Answers: credentials, connection refused, role not attached, credentials again.
struct Script {
    clock: Arc<PausedClock>,
    calls: Arc<AtomicUsize>,
}

impl Source for Script {
    type Error = MetadataError;

    async fn fetch(&self) -> Result<Fetched, MetadataError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        match n {
            1 => Err(MetadataError::Unreachable {
                endpoint: "http://127.0.0.1:9".to_owned(),
                reason: "connection refused".to_owned(),
            }),
            2 => Err(MetadataError::RoleNotAttached { role_name: None }),
            _ => {
                let issued = OffsetDateTime::from(self.clock.now())
                    .replace_nanosecond(0)
                    .unwrap();
                Ok(Fetched {
                    role_name: "test-role".to_owned(),
                    credentials: Credentials {
                        access_key_id: format!("STS.gen{n}"),
                        access_key_secret: SecretString::from(format!("MARKER-secret-{n}")),
                        security_token: SecretString::from(format!("MARKER-token-{n}")),
                        expiration: issued + 6 * HOUR,
                        last_updated: issued,
                    },
                    service_time: None,
                })
            }
        }
    }

    fn label(&self) -> &str {
        "instance role"
    }
}

#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn logs_name_the_generation_but_never_a_secret() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let clock = Arc::new(PausedClock {
        base_wall: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        base: Instant::now(),
    });
    let calls = Arc::new(AtomicUsize::new(0));
    let script = Script {
        clock: Arc::clone(&clock),
        calls: Arc::clone(&calls),
    };
    let _refresher = Refresher::builder(script, RefreshPolicy::default(), clock).spawn();
    // Refresh within [3.6 h, 4 h], then two failures with backoffs under 1 s and 2 s.
    tokio::time::sleep(5 * HOUR).await;
    assert_eq!(calls.load(Ordering::SeqCst), 4);

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    for wanted in [
        "STS.gen0",
        "STS.gen3",
        "cannot connect",
        "no RAM role attached",
    ] {
        assert!(text.contains(wanted), "{wanted:?} not logged:\n{text}");
    }
    assert!(!text.contains("MARKER"), "a secret was logged:\n{text}");
}
