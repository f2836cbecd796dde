//! The two request signatures STS accepts, computed as Alibaba Cloud documents them, written
//! for the emulator on its own (nothing shared with the agent's signer, so one cannot hide the
//! other's mistake). `docs/sts-emulator.md` names the sources.
//!
//! - **RPC V2** (`SignatureMethod=HMAC-SHA1`, `SignatureVersion=1.0`): every parameter but
//!   `Signature`, sorted by key bytes, RFC 3986-encoded, joined with `&`; `StringToSign =
//!   METHOD&%2F&pe(that)`; `Signature = Base64(HMAC-SHA1(AccessKeySecret + "&", StringToSign))`.
//! - **V3** (`ACS3-HMAC-SHA256`): `CanonicalRequest = METHOD\n/\nCanonicalQueryString\n
//!   CanonicalHeaders\nSignedHeaders\nHashedPayload`; `StringToSign = "ACS3-HMAC-SHA256\n" +
//!   hex(SHA256(CanonicalRequest))`; `Signature = hex(HMAC-SHA256(AccessKeySecret,
//!   StringToSign))`.
//!
//! Public so tests can sign requests to the emulator (and compare another signer with this
//! one); the emulator itself only verifies.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// RFC 3986 unreserved characters stay; everything else becomes `%XX` (upper-case hex).
const RFC3986: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The V3 algorithm name, first word of `Authorization` and of the string to sign.
pub const V3_ALGORITHM: &str = "ACS3-HMAC-SHA256";

/// Percent-encodes `s` as both signatures require: UTF-8, unreserved characters kept, the rest
/// `%XX` (space `%20`, `*` `%2A`, `~` kept).
pub fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, RFC3986).to_string()
}

/// `k=v` pairs, encoded, sorted by encoded key then value, joined by `&`.
pub fn canonical_query(params: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (percent_encode(k), percent_encode(v)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The V2 string to sign for `method` over `params` (which must not contain `Signature`).
pub fn v2_string_to_sign(method: &str, params: &[(String, String)]) -> String {
    format!(
        "{method}&{}&{}",
        percent_encode("/"),
        percent_encode(&canonical_query(params))
    )
}

/// `Base64(HMAC-SHA1(key, data))`.
pub fn hmac_sha1_base64(key: &[u8], data: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The V2 `Signature` for `params` signed with `access_key_secret`.
pub fn v2_signature(method: &str, params: &[(String, String)], secret: &str) -> String {
    let key = format!("{secret}&");
    hmac_sha1_base64(key.as_bytes(), &v2_string_to_sign(method, params))
}

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// What goes into a V3 canonical request (the path is always `/`, as for RPC APIs).
#[derive(Debug)]
pub struct V3Input<'a> {
    /// The HTTP method, upper-case.
    pub method: &'a str,
    /// Query parameters, decoded.
    pub query: &'a [(String, String)],
    /// The signed headers, names lower-case, values as sent; sorted here.
    pub headers: &'a [(String, String)],
    /// `x-acs-content-sha256` (hex SHA-256 of the body).
    pub hashed_payload: &'a str,
}

/// The V3 canonical request.
pub fn v3_canonical_request(input: &V3Input<'_>) -> String {
    let mut headers: Vec<(String, String)> = input
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    format!(
        "{}\n/\n{}\n{}\n{}\n{}",
        input.method,
        canonical_query(input.query),
        canonical_headers,
        signed.join(";"),
        input.hashed_payload
    )
}

/// The V3 `Signature` (lower-case hex) for `input` signed with `access_key_secret`.
pub fn v3_signature(input: &V3Input<'_>, secret: &str) -> String {
    let string_to_sign = format!(
        "{V3_ALGORITHM}\n{}",
        sha256_hex(v3_canonical_request(input).as_bytes())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(string_to_sign.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Compares two signatures without an early exit on the first differing byte.
pub(crate) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// Vector C: raw HMAC-SHA1 (credentials-go `utils_test.go`), key as given.
    #[test]
    fn vector_c_raw_hmac_sha1() {
        assert_eq!(
            hmac_sha1_base64(b"secret", "source"),
            "Jv4yi8SobFhg5t1C7nWLbhBSFZQ="
        );
        assert_eq!(
            hmac_sha1_base64(b"secret", "中文"),
            "CqCYIa39h9SSWuXnTz8F5hh9UPA="
        );
    }

    /// Vector A: the older RPC signature document's `DescribeRegions` example.
    #[test]
    fn vector_a_v2_describe_regions() {
        let params = pairs(&[
            ("Timestamp", "2016-02-23T12:46:24Z"),
            ("Format", "XML"),
            ("AccessKeyId", "testid"),
            ("Action", "DescribeRegions"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
            ("Version", "2014-05-26"),
            ("SignatureVersion", "1.0"),
        ]);
        assert_eq!(
            v2_string_to_sign("GET", &params),
            "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML\
             %26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf\
             %26SignatureVersion%3D1.0%26Timestamp%3D2016-02-23T12%253A46%253A24Z\
             %26Version%3D2014-05-26"
        );
        assert_eq!(
            v2_signature("GET", &params, "testsecret"),
            "OLeaidS1JvxuMvnyHOwuJ+uX5qY="
        );
    }

    /// Vector B: the current RPC-mechanism document's `DescribeDedicatedHosts` example.
    #[test]
    fn vector_b_v2_describe_dedicated_hosts() {
        let params = pairs(&[
            ("AccessKeyId", "testid"),
            ("Action", "DescribeDedicatedHosts"),
            ("Format", "JSON"),
            ("RegionId", "cn-beijing"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "edb2b34af0af9a6d14deaf7c1a5315eb"),
            ("SignatureVersion", "1.0"),
            ("Timestamp", "2023-03-13T08:34:30Z"),
            ("Version", "2014-05-26"),
        ]);
        assert_eq!(
            v2_signature("GET", &params, "testsecret"),
            "9NaGiOspFP5UPcwX8Iwt2YJXXuk="
        );
    }

    /// Vector F: the V3 document's `RunInstances` example.
    #[test]
    fn vector_f_v3_run_instances() {
        let query = pairs(&[
            (
                "ImageId",
                "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd",
            ),
            ("RegionId", "cn-shanghai"),
        ]);
        let empty = sha256_hex(b"");
        assert_eq!(
            empty,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let headers = pairs(&[
            ("host", "ecs.cn-shanghai.aliyuncs.com"),
            ("x-acs-action", "RunInstances"),
            ("x-acs-version", "2014-05-26"),
            ("x-acs-date", "2023-10-26T10:22:32Z"),
            ("x-acs-signature-nonce", "3156853299f313e23d1673dc12e1703d"),
            ("x-acs-content-sha256", &empty),
        ]);
        let input = V3Input {
            method: "POST",
            query: &query,
            headers: &headers,
            hashed_payload: &empty,
        };
        assert_eq!(
            sha256_hex(v3_canonical_request(&input).as_bytes()),
            "7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259"
        );
        assert_eq!(
            v3_signature(&input, "YourAccessKeySecret"),
            "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
        );
    }

    #[test]
    fn encoding_follows_rfc3986() {
        assert_eq!(percent_encode("a b*c~d+e/f:"), "a%20b%2Ac~d%2Be%2Ff%3A");
        assert_eq!(percent_encode("中"), "%E4%B8%AD");
    }

    #[test]
    fn comparison() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
    }
}
