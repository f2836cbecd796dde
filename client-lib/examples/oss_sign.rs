//! Signs an OSS request with `reqsign-aliyun-oss` and the agent's credentials, then prints the
//! shape of the headers it set; never the AccessKeySecret, the SecurityToken or the signature.
//! Nothing is sent to OSS.
//!
//! ```text
//! cargo run -p ecs-credential-client --features reqsign --example oss_sign [-- SOCKET_PATH [BUCKET]]
//! ```
//!
//! The socket is the first argument, else `$ECS_CREDENTIAL_AGENT_SOCKET`, else
//! `/run/ecs-credential-agent/agent.sock`; the bucket defaults to `examplebucket`. An
//! application builds the `Signer` once and calls `sign` before each request: reqsign keeps
//! the credentials until about 2 minutes before `Expiration`, and the provider's `Client`
//! answers from its cache until shortly before that.

use std::process::ExitCode;

use ecs_credential_client::reqsign::AgentCredentialProvider;
use ecs_credential_client::Client;
use reqsign_aliyun_oss::RequestSigner;
use reqsign_core::{Context, Signer};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let mut builder = Client::builder();
    if let Some(path) = args.next() {
        builder = builder.socket_path(path);
    }
    let bucket = args
        .next()
        .map(|b| b.to_string_lossy().into_owned())
        .unwrap_or_else(|| "examplebucket".to_owned());

    let provider = AgentCredentialProvider::with_client(builder.build());
    // The provider needs nothing from the context: no HTTP client, file reader or environment.
    let signer = Signer::new(Context::new(), provider, RequestSigner::new(&bucket));
    let url = format!("https://{bucket}.oss-cn-hangzhou.aliyuncs.com/hello.txt");
    let mut request = match http::Request::get(&url).body(()) {
        Ok(request) => request.into_parts().0,
        Err(e) => {
            eprintln!("bucket {bucket:?} does not make a valid URL: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = signer.sign(&mut request, None).await {
        // reqsign's message is the client's one-line error, whose source is that error.
        eprintln!("signing failed: {e}");
        let mut previous = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            let message = cause.to_string();
            if message != previous {
                eprintln!("  caused by: {message}");
            }
            previous = message;
            source = cause.source();
        }
        return ExitCode::FAILURE;
    }
    println!("GET {url}");
    for (name, value) in &request.headers {
        println!("  {name}: {}", shape(name.as_str(), value.as_bytes()));
    }
    ExitCode::SUCCESS
}

/// What may be printed of a header: `Authorization` as `OSS <AccessKeyId>:<signature, N bytes>`
/// (the AccessKeyId is not secret), the SecurityToken as its length, anything else as is.
fn shape(name: &str, value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    match name {
        "authorization" => match text.split_once(':') {
            Some((scheme_and_id, signature)) => {
                format!("{scheme_and_id}:<signature, {} bytes>", signature.len())
            }
            None => format!("<{} bytes>", value.len()),
        },
        "x-oss-security-token" => format!("<SecurityToken, {} bytes>", value.len()),
        _ => text.into_owned(),
    }
}
