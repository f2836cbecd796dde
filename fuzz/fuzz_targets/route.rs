//! `server::routes::route`: never panics, and agrees with a reference model of the routing
//! table (only `GET` of the three paths, no proxy header, no body); every error answer is the
//! documented JSON with a stable code.
#![no_main]

use ecs_credential_agent::server::routes::{route, ApiError, Route};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    method: &'a [u8],
    path: &'a str,
    headers: Vec<(&'a [u8], &'a [u8])>,
}

fuzz_target!(|input: Input<'_>| {
    let Ok(method) = Method::from_bytes(input.method) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for (name, value) in &input.headers {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    let got = route(&method, input.path, &headers);
    assert_eq!(got, model(&method, input.path, &headers), "{input:?}");
    if let Err(e) = got {
        let body: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(body["Code"], e.code());
        let resp = e.to_response();
        assert_eq!(resp.status(), e.status());
        assert!(resp.status().is_client_error());
    }
});

/// The routing table of the README, written independently.
fn model(method: &Method, path: &str, headers: &HeaderMap) -> Result<Route, ApiError> {
    // README: `X-Forwarded-*`, `X-Real-IP`, `Forwarded`, `Via` (header names are lowercase in
    // a `HeaderMap`).
    let proxied = headers.keys().any(|k| {
        let k = k.as_str();
        ["x-real-ip", "forwarded", "via"].contains(&k) || k.starts_with("x-forwarded-")
    });
    if proxied {
        return Err(ApiError::BadRequest(
            "proxy headers (X-Forwarded-*, X-Real-IP, Forwarded, Via) are not accepted",
        ));
    }
    let body = headers.keys().any(|k| k.as_str() == "transfer-encoding")
        || headers
            .iter()
            .any(|(k, v)| k.as_str() == "content-length" && v != "0");
    if body {
        return Err(ApiError::BadRequest("requests must not have a body"));
    }
    let r = match path {
        "/v1/credentials" => Route::Credentials,
        "/v1/health" => Route::Health,
        "/metrics" => Route::Metrics,
        _ => return Err(ApiError::NotFound),
    };
    if method.as_str() != "GET" {
        return Err(ApiError::MethodNotAllowed);
    }
    Ok(r)
}
