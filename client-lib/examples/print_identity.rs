//! Prints the AccessKeyId the agent serves and the time left before it expires; never the
//! secret.
//!
//! ```text
//! cargo run -p ecs-credential-client --example print_identity [-- SOCKET_PATH]
//! ```
//!
//! The socket is the first argument, else `$ECS_CREDENTIAL_AGENT_SOCKET`, else
//! `/run/ecs-credential-agent/agent.sock`. The loop shows how an application uses the client:
//! one `Client` for the process, `credentials()` before each request it signs (served from the
//! cache until shortly before `Expiration`).

use std::process::ExitCode;
use std::time::Duration;

use ecs_credential_client::{Client, Error};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Stand-in for an application's requests to Alibaba Cloud.
const REQUESTS: u32 = 3;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut builder = Client::builder();
    if let Some(path) = std::env::args_os().nth(1) {
        builder = builder.socket_path(path);
    }
    let client = builder.build();
    match client.health().await {
        Ok(health) => println!(
            "agent at {}: HTTP {}",
            client.socket_path().display(),
            health.status
        ),
        Err(e) => eprintln!("health check failed: {e}"),
    }
    for request in 1..=REQUESTS {
        if let Err(e) = handle_request(&client, request).await {
            eprintln!("request {request}: {e}");
            if let Some(cause) = std::error::Error::source(&e) {
                eprintln!("  caused by: {cause}");
            }
            return ExitCode::FAILURE;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    ExitCode::SUCCESS
}

/// What an application does per request: ask for credentials, then sign with them.
async fn handle_request(client: &Client, request: u32) -> Result<(), Error> {
    let credentials = client.credentials().await?;
    let left = credentials.expires_in(OffsetDateTime::now_utc());
    println!(
        "request {request}: AccessKeyId {} expires at {} (in {} min {} s)",
        credentials.access_key_id,
        credentials
            .expiration
            .format(&Rfc3339)
            .unwrap_or_else(|_| credentials.expiration.to_string()),
        left.whole_minutes(),
        left.whole_seconds() % 60
    );
    // Here the application would sign its request with `credentials.access_key_secret` and
    // `credentials.security_token` (via `ExposeSecret::expose_secret`), never printing them.
    Ok(())
}
