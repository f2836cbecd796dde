//! A [`reqsign`](https://github.com/apache/opendal-reqsign) credential provider for Alibaba Cloud
//! OSS, so that `reqsign-aliyun-oss` (the signer OpenDAL's OSS service uses) signs with the
//! agent's credentials. Needs the cargo feature `reqsign`.
//!
//! [`AgentCredentialProvider`] implements [`reqsign_core::ProvideCredential`] with
//! [`reqsign_aliyun_oss::Credential`] as its credential: each call asks the crate's [`Client`],
//! which answers from its cache until shortly before `Expiration` (see [caching](crate#caching))
//! and otherwise fetches from the agent over its Unix socket. The provider needs nothing from
//! reqsign's [`Context`] (no HTTP client, file reader or environment).
//!
//! ```no_run
//! use ecs_credential_client::reqsign::AgentCredentialProvider;
//! use reqsign_aliyun_oss::RequestSigner;
//! use reqsign_core::{Context, Signer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> reqsign_core::Result<()> {
//! let signer = Signer::new(
//!     Context::new(),
//!     AgentCredentialProvider::new(),
//!     RequestSigner::new("examplebucket"),
//! );
//! let mut request = http::Request::get("https://examplebucket.oss-cn-hangzhou.aliyuncs.com/a.txt")
//!     .body(())
//!     .expect("a valid request")
//!     .into_parts()
//!     .0;
//! signer.sign(&mut request, None).await?; // sets Authorization and x-oss-security-token
//! # Ok(())
//! # }
//! ```
//!
//! # Secrets
//!
//! `reqsign_aliyun_oss::Credential` holds `AccessKeySecret` and `SecurityToken` as plain
//! `String`s (its `Debug` redacts them). This module is the one place the crate copies the
//! secrets out of their [`SecretString`](secrecy::SecretString)s, and only into that value,
//! which reqsign's `Signer` keeps and uses to sign.
//!
//! # Errors
//!
//! The provider never answers `Ok(None)` ("no credentials here, try the next provider"): when
//! the agent cannot serve, it returns a [`reqsign_core::Error`] whose message is this crate's
//! [`Error`] `Display` (one line saying what failed and what to do, never a secret) and whose
//! `source()` is that [`Error`]. So a chain that puts this provider first fails loudly instead
//! of silently falling back to other credentials. Kinds:
//!
//! | [`Error`] | [`ErrorKind`] | retryable |
//! | --- | --- | --- |
//! | [`Error::PermissionDenied`] | `PermissionDenied` | no |
//! | [`Error::UnsafeSocketPath`] | `ConfigInvalid` | no |
//! | [`Error::AgentNotRunning`] | `ConfigInvalid` | no |
//! | [`Error::Unavailable`] | `CredentialInvalid` | yes: the agent is starting or refreshing |
//! | [`Error::Protocol`] | `Unexpected` | no |

use reqsign_aliyun_oss::Credential;
use reqsign_core::time::Timestamp;
use reqsign_core::{Context, ErrorKind, ProvideCredential};
use secrecy::ExposeSecret;

use crate::{Client, Credentials, Error};

/// Provides `reqsign-aliyun-oss` [`Credential`]s from `ecs-credential-agent`, through a
/// [`Client`] (its cache, retries and socket path rules).
///
/// Cheap to clone: clones share the client's cache. Build one per process.
#[derive(Debug, Clone, Default)]
pub struct AgentCredentialProvider {
    client: Client,
}

impl AgentCredentialProvider {
    /// A provider over [`Client::new`]: the socket from `$ECS_CREDENTIAL_AGENT_SOCKET`, else
    /// [`DEFAULT_SOCKET_PATH`](crate::DEFAULT_SOCKET_PATH).
    pub fn new() -> AgentCredentialProvider {
        AgentCredentialProvider::default()
    }

    /// A provider over `client`, e.g. one built with [`Client::builder`] or shared with the
    /// rest of the application.
    pub fn with_client(client: Client) -> AgentCredentialProvider {
        AgentCredentialProvider { client }
    }

    /// The client this provider asks.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl From<Client> for AgentCredentialProvider {
    fn from(client: Client) -> AgentCredentialProvider {
        AgentCredentialProvider::with_client(client)
    }
}

impl ProvideCredential for AgentCredentialProvider {
    type Credential = Credential;

    /// `Ok(Some(credential))` with the agent's AccessKeyId, AccessKeySecret, SecurityToken and
    /// Expiration (as `expires_in`).
    ///
    /// # Errors
    ///
    /// See the [module's table](self#errors); never `Ok(None)`.
    async fn provide_credential(&self, _: &Context) -> reqsign_core::Result<Option<Credential>> {
        match self.client.credentials().await {
            Ok(credentials) => to_reqsign(&credentials).map(Some),
            Err(error) => Err(reqsign_error(error)),
        }
    }
}

/// Copies `credentials` into reqsign's type: the one place the secrets leave their wrappers.
fn to_reqsign(credentials: &Credentials) -> reqsign_core::Result<Credential> {
    let expiration = credentials.expiration;
    let expires_in = Timestamp::from_second(expiration.unix_timestamp()).map_err(|e| {
        reqsign_core::Error::unexpected(format!(
            "Expiration {} is out of reqsign's range",
            crate::format_utc(expiration)
        ))
        .with_source(e)
    })?;
    Ok(Credential {
        access_key_id: credentials.access_key_id.clone(),
        access_key_secret: credentials.access_key_secret.expose_secret().to_owned(),
        security_token: Some(credentials.security_token.expose_secret().to_owned()),
        expires_in: Some(expires_in),
    })
}

/// The reqsign error for `error`: our one-line message, our error as the source.
fn reqsign_error(error: Error) -> reqsign_core::Error {
    let (kind, retryable) = match &error {
        Error::PermissionDenied { .. } => (ErrorKind::PermissionDenied, false),
        Error::UnsafeSocketPath { .. } | Error::AgentNotRunning { .. } => {
            (ErrorKind::ConfigInvalid, false)
        }
        Error::Unavailable { .. } => (ErrorKind::CredentialInvalid, true),
        Error::Protocol { .. } => (ErrorKind::Unexpected, false),
    };
    reqsign_core::Error::new(kind, error.to_string())
        .with_source(error)
        .set_retryable(retryable)
}
