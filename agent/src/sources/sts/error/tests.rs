//! The mapping table of [`from_answer`], one row per documented code: kind and words.

use super::*;

const ARN: &str = "acs:ram::123456789012:role/billing-app";
/// What STS may echo in `Message` for a signature mismatch: must never reach the error.
const ECHO: &str = "MARKER-SECURITY-TOKEN-ECHO";

fn body(code: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "RequestId": "6894B13B-6D71-4EF5-88FA-F32781734A7F",
        "HostId": "sts.aliyuncs.com",
        "Code": code,
        "Message": format!("server string to sign is: {ECHO}"),
        "Recommend": "https://api.aliyun.com/troubleshoot?q=x",
    }))
    .unwrap()
}

/// `(status, code, kind, words the Display must hold)`.
const TABLE: &[(u16, &str, &str, &[&str])] = &[
    (
        403,
        "NoPermission",
        "no_permission",
        &[
            ARN,
            "NoPermission",
            "do not grant sts:AssumeRole on that role ARN",
            "trust policy does not name the instance role",
            "RequestId 6894B13B-6D71-4EF5-88FA-F32781734A7F",
        ],
    ),
    (
        404,
        "EntityNotExist.Role",
        "role_not_found",
        &[ARN, "does not exist", "role_arn"],
    ),
    (
        400,
        "InvalidParameter",
        "invalid_parameter",
        &["InvalidParameter", "role_arn"],
    ),
    (
        400,
        "InvalidParameter.RoleArn",
        "invalid_parameter",
        &["role_arn is not acs:ram::"],
    ),
    (
        400,
        "InvalidParameter.RoleSessionName",
        "invalid_parameter",
        &["session name"],
    ),
    (
        400,
        "InvalidParameter.PolicyGrammar",
        "invalid_parameter",
        &["session policy is not a valid"],
    ),
    (
        400,
        "InvalidParameter.PolicySize",
        "invalid_parameter",
        &["session policy is too long"],
    ),
    (
        400,
        "InvalidParameter.DurationSeconds",
        "invalid_parameter",
        &["MaxSessionDuration"],
    ),
    (
        400,
        "InvalidTimeStamp.Expired",
        "clock_skew",
        &["clock", "15 minutes", "InvalidTimeStamp.Expired"],
    ),
    (
        400,
        "IllegalTimestamp",
        "clock_skew",
        &["clock", "IllegalTimestamp"],
    ),
    (
        400,
        "SignatureDoesNotMatch",
        "signature_rejected",
        &["signature does not match", "AccessKeySecret"],
    ),
    (
        404,
        "InvalidAccessKeyId.NotFound",
        "instance_credentials_rejected",
        &["InvalidAccessKeyId.NotFound", "AccessKeyId is unknown"],
    ),
    (
        400,
        "MissingSecurityToken",
        "instance_credentials_rejected",
        &["MissingSecurityToken", "SecurityToken"],
    ),
    (
        400,
        "InvalidSecurityToken.Expired",
        "instance_credentials_rejected",
        &["SecurityToken"],
    ),
    (
        400,
        "Throttling.User",
        "throttled",
        &["throttling", "Throttling.User", "rate limit"],
    ),
    (503, "Throttling", "throttled", &["throttling"]),
    (
        500,
        "InternalError",
        "sts_unavailable",
        &["HTTP 500", "InternalError"],
    ),
    (503, "ServiceUnavailable", "sts_unavailable", &["HTTP 503"]),
    (
        400,
        "SomethingNew",
        "rejected",
        &["HTTP 400", "SomethingNew", ARN],
    ),
];

#[test]
fn every_documented_code_maps_to_its_kind_and_words() {
    for (status, code, kind, words) in TABLE {
        let e = from_answer(*status, &body(code), ARN);
        assert_eq!(e.kind(), *kind, "{code}: {e:?}");
        let text = e.to_string();
        for w in *words {
            assert!(text.contains(w), "{code}: {w:?} missing from {text:?}");
        }
        assert!(!text.contains(ECHO), "{code}: Message leaked into {text:?}");
        assert!(!text.contains("troubleshoot"), "{code}: {text:?}");
    }
}

#[test]
fn user_flow_control_is_throttling_whatever_the_code() {
    let b = serde_json::to_vec(&serde_json::json!({
        "Code": "Forbidden", "Message": "Request was denied due to user flow control."
    }))
    .unwrap();
    let e = from_answer(400, &b, ARN);
    assert_eq!(e.kind(), "throttled", "{e:?}");
    let b = br#"{"Message":"Request was denied due to user flow control."}"#;
    let e = from_answer(400, b, ARN);
    assert_eq!(e.kind(), "throttled");
    assert!(e.to_string().contains("user flow control"), "{e}");
}

#[test]
fn status_alone_decides_when_the_body_is_not_json() {
    assert_eq!(from_answer(429, b"slow down", ARN).kind(), "throttled");
    assert_eq!(
        from_answer(502, b"<html>bad gateway</html>", ARN).kind(),
        "sts_unavailable"
    );
    assert_eq!(
        from_answer(403, b"<html>forbidden</html>", ARN).kind(),
        "rejected"
    );
    let e = from_answer(302, b"", ARN);
    assert_eq!(e.kind(), "invalid_response", "{e:?}");
}

#[test]
fn a_malformed_code_or_request_id_is_left_out() {
    let b = serde_json::to_vec(&serde_json::json!({
        "Code": "Bad\ncode\u{1b}[31m", "RequestId": "id with spaces"
    }))
    .unwrap();
    let e = from_answer(400, &b, ARN);
    assert_eq!(e.kind(), "rejected");
    let text = e.to_string();
    assert!(!text.contains('\n') && !text.contains('\u{1b}'), "{text:?}");
    assert!(!text.contains("spaces"), "{text:?}");
}

#[test]
fn only_duration_seconds_is_the_duration_rejection() {
    assert!(
        from_answer(400, &body("InvalidParameter.DurationSeconds"), ARN).is_duration_rejected()
    );
    assert!(!from_answer(400, &body("InvalidParameter.RoleArn"), ARN).is_duration_rejected());
    assert!(!from_answer(403, &body("NoPermission"), ARN).is_duration_rejected());
}
