//! The blocking client against a fake agent served by a runtime on other threads.

use std::path::Path;
use std::time::Duration;

use super::fake_agent::{credentials_body, error_body, FakeAgent, TestClock};
use crate::{blocking, Client, Error};

fn server_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn blocking_client(path: &Path, clock: &TestClock) -> blocking::Client {
    let inner = Client::builder()
        .socket_path(path)
        .retry_backoff(Duration::from_millis(1))
        .clock(clock.as_clock())
        .build_with_env(None);
    blocking::Client::from_async_for_test(inner)
}

#[test]
fn blocking_client_fetches_caches_and_reports_health() {
    let t0 = time::macros::datetime!(2030-01-01 00:00:00 UTC);
    let server = server_runtime();
    let agent = server.block_on(FakeAgent::start(move |_, path| match path {
        "/v1/credentials" => (
            200,
            credentials_body("STS.blocking", t0 + time::Duration::hours(1)),
        ),
        _ => (200, r#"{"RoleName":"web"}"#.to_owned()),
    }));
    let clock = TestClock::at(t0);
    let client = blocking_client(&agent.path, &clock);
    let from_thread = {
        let client = client.clone();
        std::thread::spawn(move || client.credentials().map(|c| c.access_key_id))
    };
    assert_eq!(from_thread.join().unwrap().unwrap(), "STS.blocking");
    assert_eq!(client.credentials().unwrap().access_key_id, "STS.blocking");
    assert_eq!(agent.hits(), 1, "the clone shares the cache");
    assert_eq!(client.health().unwrap().role_name.as_deref(), Some("web"));
}

#[test]
fn blocking_client_reports_errors() {
    let server = server_runtime();
    let agent = server.block_on(FakeAgent::start(|_, _| {
        (403, error_body("Forbidden", "gid 50 not allowed"))
    }));
    let client = blocking_client(&agent.path, &TestClock::at(time::OffsetDateTime::now_utc()));
    let err = client.credentials().unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
}

#[test]
fn blocking_client_refuses_to_run_inside_a_runtime() {
    let client = blocking::Client::builder()
        .socket_path("/nonexistent/agent.sock")
        .build()
        .unwrap();
    let outer = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let panic = outer.block_on(async {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| client.credentials()))
    });
    let message = panic.unwrap_err();
    let message = message
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| message.downcast_ref::<String>().cloned())
        .unwrap();
    assert!(message.contains("within an async runtime"), "{message}");
}

#[tokio::test]
async fn dropping_a_blocking_client_inside_a_runtime_does_not_panic() {
    let client = blocking::Client::builder()
        .socket_path("/nonexistent/agent.sock")
        .build()
        .unwrap();
    drop(client.clone());
    drop(client);
}
