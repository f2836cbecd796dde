//! Tests of [`super`]: the fixed words of [`MetadataError::kind`], what the refresher drops on
//! which error, and how the metadata source's refresh outcomes reach the metrics.

use super::*;
use crate::credentials::{RecordRefresh, RefreshError};
use crate::metrics::Metrics;

/// One value of every variant, with its word.
fn every_variant() -> Vec<(MetadataError, &'static str)> {
    vec![
        (MetadataError::TokenRefused { path: "/t" }, "token_refused"),
        (
            MetadataError::HardenedModeRequired,
            "hardened_mode_required",
        ),
        (MetadataError::TokenRejected, "token_rejected"),
        (
            MetadataError::RoleNotAttached {
                role_name: Some("r".into()),
            },
            "role_not_attached",
        ),
        (
            MetadataError::Rejected {
                method: "GET",
                path: "/p".into(),
                status: 400,
            },
            "rejected",
        ),
        (
            MetadataError::Unavailable {
                path: "/p".into(),
                status: 503,
            },
            "unavailable",
        ),
        (
            MetadataError::Unreachable {
                endpoint: "http://127.0.0.1:1".into(),
                reason: "refused".into(),
            },
            "unreachable",
        ),
        (
            MetadataError::NotMetadataService {
                endpoint: "http://127.0.0.1:1".into(),
                method: "PUT",
                path: "/latest/api/token".into(),
                shape: "not HTTP (invalid HTTP version parsed)".into(),
            },
            "not_metadata_service",
        ),
        (
            MetadataError::Timeout {
                path: "/p".into(),
                after: Duration::from_secs(1),
            },
            "timeout",
        ),
        (
            MetadataError::InvalidResponse {
                path: "/p".into(),
                what: "bad".into(),
            },
            "invalid_response",
        ),
        (
            MetadataError::InvalidConfig {
                key: "endpoint",
                value: "x".into(),
                reason: "bad".into(),
            },
            "invalid_config",
        ),
        (
            MetadataError::ExpiredOnArrival {
                expiration: "x".into(),
            },
            "expired_on_arrival",
        ),
    ]
}

#[test]
fn every_variant_has_its_fixed_word() {
    for (error, word) in every_variant() {
        assert_eq!(error.kind(), word, "{error}");
        assert_eq!(SourceError::kind(&error), word, "{error}");
    }
}

#[test]
fn only_role_not_attached_withdraws_the_credentials() {
    for (error, word) in every_variant() {
        let want = (word == "role_not_attached").then(|| Unavailable::RoleNotAttached {
            role_name: Some("r".into()),
        });
        assert_eq!(error.withdrawn(), want, "{error}");
    }
    let unnamed = MetadataError::RoleNotAttached { role_name: None };
    assert_eq!(
        unnamed.withdrawn(),
        Some(Unavailable::RoleNotAttached { role_name: None })
    );
}

#[test]
fn refresh_outcomes_reach_the_metric_by_their_word() {
    let metrics = Metrics::new();
    let record = |o: Result<bool, &RefreshError<MetadataError>>| metrics.record(o);
    record(Ok(true));
    record(Ok(false));
    record(Err(&RefreshError::Source(MetadataError::TokenRejected)));
    record(Err(&RefreshError::ExpiredOnArrival {
        expiration: "2024-11-08T09:44:50Z".into(),
    }));
    let text = metrics.encode();
    for result in [
        "success",
        "unchanged",
        "token_rejected",
        "expired_on_arrival",
    ] {
        let line = format!("ecs_credential_agent_refreshes_total{{result=\"{result}\"}} 1");
        assert!(text.contains(&line), "{line} missing:\n{text}");
    }
}
