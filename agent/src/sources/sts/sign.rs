//! `ACS3-HMAC-SHA256`: the V3 request signature of Alibaba Cloud APIs ("V3 request structure
//! and signature", Alibaba Cloud SDK documentation), as STS verifies it.
//!
//! 1. `CanonicalRequest = METHOD \n / \n CanonicalQueryString \n CanonicalHeaders \n
//!    SignedHeaders \n HashedPayload`, where
//!    - `CanonicalQueryString`: each key and value percent-encoded ([`percent_encode`]), pairs
//!      sorted by key (byte-wise), joined as `k=v` with `&`; encoded once, not twice as in V2;
//!    - `CanonicalHeaders`: `host`, `content-type` and every `x-acs-*` header, names lower-cased,
//!      sorted, each `name:trimmed value\n`;
//!    - `SignedHeaders`: those names joined by `;`;
//!    - `HashedPayload`: hex SHA-256 of the body (of the empty string for an empty body), also
//!      sent as `x-acs-content-sha256`.
//! 2. `StringToSign = "ACS3-HMAC-SHA256\n" + hex(SHA-256(CanonicalRequest))`.
//! 3. `Signature = hex(HMAC-SHA256(AccessKeySecret, StringToSign))` (the secret as the key, no
//!    `&` appended, unlike V2).
//! 4. `Authorization: ACS3-HMAC-SHA256 Credential=<AccessKeyId>,SignedHeaders=<list>,
//!    Signature=<hex>`.
//!
//! Tested against the documentation's published example (RunInstances, `YourAccessKeyId` /
//! `YourAccessKeySecret`). The cryptography is the `sha2` and `hmac` crates'.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// The algorithm's name, first in `StringToSign` and in `Authorization`.
pub const ALGORITHM: &str = "ACS3-HMAC-SHA256";

/// Percent-encodes `s` as RFC 3986 and the V3 document require: UTF-8 bytes, `A–Z a–z 0–9 - _
/// . ~` kept, every other byte `%XX` in upper-case hex (space is `%20`, `*` is `%2A`, `+` is
/// `%2B`, `/` is `%2F`).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `CanonicalQueryString` of `params`: sorted by key (byte-wise, then by value), each key
/// and value [percent-encoded](percent_encode), joined as `k=v` with `&`. Empty for no params.
pub fn canonical_query(params: &[(&str, &str)]) -> String {
    let mut sorted: Vec<&(&str, &str)> = params.iter().collect();
    sorted.sort();
    sorted
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Hex SHA-256 of `data` (lower-case), the form of `HashedPayload` and `x-acs-content-sha256`.
pub fn hex_sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Whether the header `name` (any case) is signed: `host`, `content-type` and every `x-acs-*`.
pub fn is_signed_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name == "host" || name == "content-type" || name.starts_with("x-acs-")
}

/// One request to sign. `headers` holds every header to be sent that the signature covers (at
/// least `host` and the `x-acs-*` ones, `x-acs-content-sha256` included); others are ignored.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `GET` or `POST`.
    pub method: &'a str,
    /// The query parameters, unencoded.
    pub query: &'a [(&'a str, &'a str)],
    /// Header names (any case) and values.
    pub headers: &'a [(&'a str, &'a str)],
    /// Hex SHA-256 of the body ([`hex_sha256`]).
    pub hashed_payload: &'a str,
}

/// The `CanonicalRequest` of `request` and its `SignedHeaders` list.
pub fn canonical_request(request: &Request<'_>) -> (String, String) {
    let mut headers: Vec<(String, &str)> = request
        .headers
        .iter()
        .filter(|(name, _)| is_signed_header(name))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim()))
        .collect();
    headers.sort();
    let canonical_headers: String = headers
        .iter()
        .map(|(name, value)| format!("{name}:{value}\n"))
        .collect();
    let signed_headers = headers
        .iter()
        .map(|(name, _)| name.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical = format!(
        "{}\n/\n{}\n{}\n{}\n{}",
        request.method,
        canonical_query(request.query),
        canonical_headers,
        signed_headers,
        request.hashed_payload
    );
    (canonical, signed_headers)
}

/// `StringToSign` for a `CanonicalRequest`: the algorithm and the request's hex SHA-256.
pub fn string_to_sign(canonical_request: &str) -> String {
    format!("{ALGORITHM}\n{}", hex_sha256(canonical_request.as_bytes()))
}

/// `Signature`: hex HMAC-SHA256 of `string_to_sign` keyed with the AccessKeySecret as is.
pub fn signature(access_key_secret: &str, string_to_sign: &str) -> String {
    // HMAC takes a key of any length: this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(access_key_secret.as_bytes())
        .expect("HMAC accepts any key length");
    mac.update(string_to_sign.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The `Authorization` header value for `request`, signed with the AccessKeyId and
/// AccessKeySecret given. Contains no secret (the signature is a MAC of the request).
pub fn authorization(
    request: &Request<'_>,
    access_key_id: &str,
    access_key_secret: &str,
) -> String {
    let (canonical, signed_headers) = canonical_request(request);
    let sig = signature(access_key_secret, &string_to_sign(&canonical));
    format!("{ALGORITHM} Credential={access_key_id},SignedHeaders={signed_headers},Signature={sig}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// The V3 document's example: RunInstances, POST, empty body.
    fn vector_f_headers() -> Vec<(&'static str, &'static str)> {
        vec![
            ("host", "ecs.cn-shanghai.aliyuncs.com"),
            ("x-acs-action", "RunInstances"),
            ("x-acs-version", "2014-05-26"),
            ("x-acs-date", "2023-10-26T10:22:32Z"),
            ("x-acs-signature-nonce", "3156853299f313e23d1673dc12e1703d"),
            ("x-acs-content-sha256", EMPTY_SHA256),
        ]
    }

    const VECTOR_F_QUERY: &[(&str, &str)] = &[
        ("RegionId", "cn-shanghai"),
        (
            "ImageId",
            "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd",
        ),
    ];

    #[test]
    fn published_v3_vector_f() {
        let headers = vector_f_headers();
        let request = Request {
            method: "POST",
            query: VECTOR_F_QUERY,
            headers: &headers,
            hashed_payload: &hex_sha256(b""),
        };
        let (canonical, signed) = canonical_request(&request);
        assert_eq!(
            signed,
            "host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version"
        );
        assert_eq!(
            hex_sha256(canonical.as_bytes()),
            "7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259",
            "{canonical}"
        );
        let sig = signature("YourAccessKeySecret", &string_to_sign(&canonical));
        assert_eq!(
            sig,
            "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
        );
        assert_eq!(
            authorization(&request, "YourAccessKeyId", "YourAccessKeySecret"),
            format!("ACS3-HMAC-SHA256 Credential=YourAccessKeyId,SignedHeaders={signed},Signature={sig}")
        );
    }

    #[test]
    fn vector_f_does_not_depend_on_header_case_order_or_unsigned_headers() {
        let mut headers: Vec<(&str, &str)> = vector_f_headers()
            .into_iter()
            .rev()
            .map(|(n, v)| (if n == "host" { "Host" } else { n }, v))
            .collect();
        headers.push(("accept", "application/json"));
        headers.push(("user-agent", "ecs-credential-agent"));
        let request = Request {
            method: "POST",
            query: VECTOR_F_QUERY,
            headers: &headers,
            hashed_payload: EMPTY_SHA256,
        };
        let (canonical, _) = canonical_request(&request);
        assert_eq!(
            hex_sha256(canonical.as_bytes()),
            "7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259"
        );
    }

    #[test]
    fn a_changed_byte_changes_the_signature() {
        let headers = vector_f_headers();
        let query = [("RegionId", "cn-shanghai"), ("ImageId", "win2019")];
        let request = Request {
            method: "POST",
            query: &query,
            headers: &headers,
            hashed_payload: EMPTY_SHA256,
        };
        let (canonical, _) = canonical_request(&request);
        assert_ne!(
            signature("YourAccessKeySecret", &string_to_sign(&canonical)),
            "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
        );
    }

    #[test]
    fn encoding_follows_rfc_3986_as_the_document_requires() {
        assert_eq!(percent_encode("a b"), "a%20b");
        assert_eq!(percent_encode("*"), "%2A");
        assert_eq!(percent_encode("~"), "~");
        assert_eq!(percent_encode("+"), "%2B");
        assert_eq!(percent_encode("-_.AZaz09"), "-_.AZaz09");
        assert_eq!(
            percent_encode("acs:ram::1:role/x"),
            "acs%3Aram%3A%3A1%3Arole%2Fx"
        );
        assert_eq!(percent_encode("{\"a\":1}"), "%7B%22a%22%3A1%7D");
        assert_eq!(percent_encode("中"), "%E4%B8%AD");
        assert_eq!(percent_encode("=&%"), "%3D%26%25");
    }

    #[test]
    fn canonical_query_sorts_by_key_and_encodes_once() {
        let params = [
            ("RoleSessionName", "i-1.app"),
            ("DurationSeconds", "3600"),
            ("RoleArn", "acs:ram::1:role/a b"),
            ("Policy", "{\"x\":\"*+~\"}"),
        ];
        assert_eq!(
            canonical_query(&params),
            "DurationSeconds=3600&Policy=%7B%22x%22%3A%22%2A%2B~%22%7D\
             &RoleArn=acs%3Aram%3A%3A1%3Arole%2Fa%20b&RoleSessionName=i-1.app"
        );
        assert_eq!(canonical_query(&[]), "");
    }

    #[test]
    fn only_host_content_type_and_x_acs_headers_are_signed() {
        for signed in [
            "host",
            "Host",
            "content-type",
            "x-acs-security-token",
            "X-Acs-Date",
        ] {
            assert!(is_signed_header(signed), "{signed}");
        }
        for unsigned in [
            "authorization",
            "accept",
            "user-agent",
            "content-length",
            "x-ac",
        ] {
            assert!(!is_signed_header(unsigned), "{unsigned}");
        }
    }

    #[test]
    fn header_values_are_trimmed() {
        let headers = [("host", " h "), ("x-acs-a", "v\t")];
        let request = Request {
            method: "GET",
            query: &[],
            headers: &headers,
            hashed_payload: EMPTY_SHA256,
        };
        let (canonical, signed) = canonical_request(&request);
        assert_eq!(
            canonical,
            format!("GET\n/\n\nhost:h\nx-acs-a:v\n\nhost;x-acs-a\n{EMPTY_SHA256}")
        );
        assert_eq!(signed, "host;x-acs-a");
    }
}
