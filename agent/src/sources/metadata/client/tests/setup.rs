//! Tests of what surrounds the requests: logs, construction, proxy variables.

use std::sync::Arc;

use super::script::Server;
use super::*;
use crate::test_logs::{capture_logs, logs};

#[tokio::test]
async fn logs_show_requests_and_token_shape_never_secrets() {
    let (buf, _guard) = capture_logs();
    let script = vec![
        token(TOKEN_1),
        status(401),
        token(TOKEN_2),
        role(),
        credentials(),
    ];
    let (result, _server) = fetch_with(script, |_| {}).await;
    let fetched = result.unwrap();
    let logs = logs(&buf);
    assert!(logs.contains("token_len=23"), "{logs}");
    assert!(
        logs.contains("status=401") && logs.contains("latency_ms"),
        "{logs}"
    );
    assert!(logs.contains(ROLE_PATH), "{logs}");
    for marker in [TOKEN_1, TOKEN_2, SECRET, STS_TOKEN, "MARKER"] {
        assert!(!logs.contains(marker), "{marker} in logs:\n{logs}");
    }
    let debug = format!("{fetched:?}");
    assert!(!debug.contains("MARKER"), "{debug}");
}

#[test]
fn invalid_endpoints_are_config_errors_naming_them() {
    for endpoint in [
        "https://100.100.100.200",
        "http://100.100.100.200/latest",
        "http://100.100.100.200?x=1",
        "http://user:pw@100.100.100.200",
        "100.100.100.200",
        "ftp://host",
        "http://",
    ] {
        let err = Client::new(&config(endpoint.to_owned()), Arc::new(FixedClock)).unwrap_err();
        assert!(
            matches!(
                &err,
                MetadataError::InvalidConfig {
                    key: "endpoint",
                    ..
                }
            ),
            "{endpoint}: {err:?}"
        );
        assert!(err.to_string().contains(&format!("{endpoint:?}")), "{err}");
    }
    for endpoint in [
        "http://100.100.100.200",
        "http://100.100.100.200/",
        "http://[::1]:8080",
    ] {
        assert!(Client::new(&config(endpoint.to_owned()), Arc::new(FixedClock)).is_ok());
    }
}

#[test]
fn implausible_configured_role_name_is_a_config_error() {
    let mut config = config("http://127.0.0.1:1".to_owned());
    // The type refuses such a name; the client checks again (defence in depth).
    config.role_name = Some(crate::sources::metadata::config::RoleName::unchecked("a/b"));
    let err = Client::new(&config, Arc::new(FixedClock)).unwrap_err();
    assert!(
        matches!(
            err,
            MetadataError::InvalidConfig {
                key: "role_name",
                ..
            }
        ),
        "{err:?}"
    );
}

/// Name of the variable that tells [`proxy_child`] where the metadata server is.
const CHILD_ENDPOINT: &str = "ECS_CREDENTIAL_AGENT_TEST_PROXY_CHILD_ENDPOINT";

#[tokio::test]
async fn proxy_environment_variables_are_ignored() {
    let proxy = Server::start(Vec::new()).await;
    let metadata = Server::start(vec![token(TOKEN_1), role(), credentials()]).await;
    let exe = std::env::current_exe().unwrap();
    let (proxy_url, endpoint) = (proxy.endpoint(), metadata.endpoint());
    // The test's name as the harness knows it: this module's path without the crate's name.
    let (_crate, module) = module_path!().split_once("::").unwrap();
    let child = format!("{module}::proxy_child");
    let output = tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new(exe);
        command.args([&child, "--exact", "--ignored", "--test-threads=1"]);
        for var in ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"] {
            command.env(var, &proxy_url);
        }
        for var in ["NO_PROXY", "no_proxy", "REQUEST_METHOD"] {
            command.env_remove(var);
        }
        command.env(CHILD_ENDPOINT, endpoint).output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "child did not run:\n{stdout}");
    assert_eq!(proxy.connections(), 0, "the proxy was used");
    assert_eq!(metadata.requests().len(), 3);
}

/// Run by [`proxy_environment_variables_are_ignored`] in a child process whose environment
/// names a proxy; on its own (variable unset) it does nothing.
#[tokio::test]
#[ignore = "run in a child process by proxy_environment_variables_are_ignored"]
async fn proxy_child() {
    let Ok(endpoint) = std::env::var(CHILD_ENDPOINT) else {
        return;
    };
    let fetched = client(&config(endpoint)).fetch().await.unwrap();
    assert_eq!(fetched.role_name, "EcsRole");
}
