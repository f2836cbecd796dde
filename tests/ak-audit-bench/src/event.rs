//! One ActionTrail event, written as OSS delivers it (the fields of the reference's
//! "Management event structure"), and the fixed set of callers events come from.

use std::fmt::Write as _;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use time::macros::format_description;
use time::OffsetDateTime;

const ALNUM: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Where a long-term key's calls come from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// Through a VPC endpoint: the `vpcId` and the instance's private IP.
    Vpc(String, String),
    /// Through a public endpoint: the public IP.
    Public(String),
}

/// A program holding a long-term AccessKey, calling from one to three places.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The AccessKeyId (fake).
    pub key: String,
    /// `ltai` or `legacy`.
    pub kind: &'static str,
    /// Where its calls come from.
    pub origins: Vec<Origin>,
}

/// What an event written by [`write`] was, for the expected grouping.
#[derive(Debug)]
pub struct Written<'a> {
    /// The long-term key, its kind and its origin; `None` for STS and keyless events.
    pub long_term: Option<(&'a String, &'static str, &'a Origin)>,
    /// Whether it has an `errorCode`.
    pub error: bool,
    /// `serviceName`.
    pub service: &'static str,
    /// `eventName`.
    pub event: &'static str,
}

fn alnum(rng: &mut SmallRng, n: usize) -> String {
    (0..n)
        .map(|_| ALNUM[rng.random_range(0..ALNUM.len())] as char)
        .collect()
}

fn hex(rng: &mut SmallRng, n: usize) -> String {
    (0..n)
        .map(|_| b"0123456789abcdef"[rng.random_range(0..16)] as char)
        .collect()
}

/// The long-term callers of a run: 12 `LTAI` ids of 24 characters, 6 of 16, 6 legacy ids of
/// 16 characters without the prefix; each calls from one to three origins.
pub fn callers(seed: u64) -> Vec<Caller> {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x0ca1_1e75);
    (0..24)
        .map(|i| {
            let (key, kind) = match i {
                0..12 => (format!("LTAI5t{}", alnum(&mut rng, 18)), "ltai"),
                12..18 => (format!("LTAI{}", alnum(&mut rng, 12)), "ltai"),
                // Legacy: no prefix; a lowercase first letter keeps it from reading as LTAI.
                _ => (format!("k{}", alnum(&mut rng, 15)), "legacy"),
            };
            let origins = (0..rng.random_range(1..=3))
                .map(|_| {
                    if rng.random_bool(0.6) {
                        let vpc = format!("vpc-bp1{}", hex(&mut rng, 17));
                        Origin::Vpc(
                            vpc,
                            format!(
                                "172.16.{}.{}",
                                rng.random_range(0..255),
                                rng.random_range(1..255)
                            ),
                        )
                    } else {
                        Origin::Public(format!(
                            "47.{}.{}.{}",
                            rng.random_range(0..255),
                            rng.random_range(0..255),
                            rng.random_range(1..255)
                        ))
                    }
                })
                .collect();
            Caller { key, kind, origins }
        })
        .collect()
}

/// `YYYY-MM-DDTHH:MM:SSZ` of a Unix time.
pub fn format_time(unix: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp(unix).expect("a time in range");
    t.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
    ))
    .expect("formattable")
}

/// `YYYYMMDDHHMMSS` of a Unix time (the delivery file name's stamp).
pub fn format_stamp(unix: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp(unix).expect("a time in range");
    t.format(format_description!(
        "[year][month][day][hour][minute][second]"
    ))
    .expect("formattable")
}

const APIS: &[(&str, &str, &str)] = &[
    ("Ecs", "DescribeInstances", "Read"),
    ("Ecs", "DescribeDisks", "Read"),
    ("Oss", "GetObject", "Read"),
    ("Oss", "PutObject", "Write"),
    ("Sts", "AssumeRole", "Write"),
    ("Kms", "GetSecretValue", "Read"),
    ("Slb", "DescribeLoadBalancers", "Read"),
];
const USER_AGENTS: &[&str] = &[
    "AlibabaCloud (Linux 5.10.134-16.al8.x86_64; x86_64) Python/3.9.16 Core/2.13.36 python-requests/2.31.0",
    "aliyun-sdk-java/4.6.4 Java/1.8.0_372 HotSpot(TM)",
    "Aliyun-CLI/3.0.188",
    "aliyun-sdk-go/1.62.0 (linux; amd64) Go/1.21.5",
    "aliyun-sdk-php/1.8.1",
    "ossutil/1.7.16 (linux/amd64)",
];
const ERRORS: &[&str] = &[
    "Forbidden.RAM",
    "InvalidAccessKeyId.NotFound",
    "Throttling.User",
    "NoPermission",
];

/// Appends one event (a JSON object, no separator) at `time` in `region` and says what it was:
/// 20 % from a long-term caller, 70 % with an STS id, 10 % without `accessKeyId` (service
/// calls from `ecs.aliyuncs.com`, `Internal`); 4 % carry an `errorCode`.
pub fn write<'a>(
    out: &mut Vec<u8>,
    rng: &mut SmallRng,
    region: &str,
    time: &str,
    callers: &'a [Caller],
) -> Written<'a> {
    let (service, event, rw) = APIS[rng.random_range(0..APIS.len())];
    let ua = USER_AGENTS[rng.random_range(0..USER_AGENTS.len())];
    let error = rng
        .random_bool(0.04)
        .then(|| ERRORS[rng.random_range(0..ERRORS.len())]);
    let roll = rng.random_range(0..100u32);
    let mut long_term = None;
    let (identity, source, vpc) = if roll < 20 {
        let c = &callers[rng.random_range(0..callers.len())];
        let o = &c.origins[rng.random_range(0..c.origins.len())];
        long_term = Some((&c.key, c.kind, o));
        let (ip, vpc) = match o {
            Origin::Vpc(v, ip) => (ip.clone(), Some(v.clone())),
            Origin::Public(ip) => (ip.clone(), None),
        };
        let id = format!(
            r#"{{"type":"ram-user","principalId":"2{}","accountId":"1{}","accessKeyId":"{}","userName":"app-{}"}}"#,
            digits(rng, 15),
            digits(rng, 15),
            c.key,
            &c.key[c.key.len() - 3..]
        );
        (id, ip, vpc)
    } else if roll < 90 {
        let sts = format!("STS.N{}", alnum(rng, 24));
        let id = format!(
            r#"{{"type":"assumed-role","principalId":"3{}:ecs-role","accountId":"1{}","accessKeyId":"{sts}","userName":"ecs-role","sessionContext":{{"attributes":{{"creationDate":"{time}","mfaAuthenticated":"false"}}}}}}"#,
            digits(rng, 17),
            digits(rng, 15)
        );
        let private = rng.random_bool(0.7);
        let ip = if private {
            format!(
                "10.{}.{}.{}",
                rng.random_range(0..255),
                rng.random_range(0..255),
                rng.random_range(1..255)
            )
        } else {
            format!(
                "121.40.{}.{}",
                rng.random_range(0..255),
                rng.random_range(1..255)
            )
        };
        (id, ip, private.then(|| format!("vpc-bp1{}", hex(rng, 17))))
    } else {
        let id = format!(
            r#"{{"type":"system","principalId":"1{}","accountId":"1{}"}}"#,
            digits(rng, 15),
            digits(rng, 15)
        );
        let source = if rng.random_bool(0.5) {
            "ecs.aliyuncs.com"
        } else {
            "Internal"
        };
        (id, source.to_string(), None)
    };
    let mut s = String::with_capacity(1100);
    let _ = write!(
        s,
        r#"{{"eventId":"{}-{}-{}-{}-{}","eventVersion":1,"eventSource":"{}.{region}.aliyuncs.com","#,
        hex(rng, 8),
        hex(rng, 4),
        hex(rng, 4),
        hex(rng, 4),
        hex(rng, 12),
        service.to_lowercase()
    );
    let _ = write!(
        s,
        r#""sourceIpAddress":"{source}","userAgent":"{ua}","eventRW":"{rw}","eventType":"ApiCall","#
    );
    let _ = write!(
        s,
        r#""referencedResources":{{"ACS::ECS::Instance":["i-bp1{}"]}},"userIdentity":{identity},"#,
        hex(rng, 17)
    );
    let _ = write!(
        s,
        r#""serviceName":"{service}","requestId":"{}","eventTime":"{time}","isGlobal":false,"acsRegion":"{region}","eventName":"{event}","#,
        hex(rng, 32).to_uppercase()
    );
    if let Some(v) = vpc {
        let _ = write!(s, r#""vpcId":"{v}","#);
    }
    let _ = write!(
        s,
        r#""requestParameters":{{"RegionId":"{region}","PageSize":50,"PageNumber":{},"AcsHost":"{}-vpc.{region}.aliyuncs.com","HostId":"{}.{region}.aliyuncs.com"}}"#,
        rng.random_range(1..20),
        service.to_lowercase(),
        service.to_lowercase()
    );
    if let Some(code) = error {
        let _ = write!(
            s,
            r#","errorCode":"{code}","errorMessage":"The request was denied ({code})."}}"#
        );
    } else {
        s.push('}');
    }
    out.extend_from_slice(s.as_bytes());
    Written {
        long_term,
        error: error.is_some(),
        service,
        event,
    }
}

fn digits(rng: &mut SmallRng, n: usize) -> String {
    (0..n)
        .map(|_| (b'0' + rng.random_range(0..10u8)) as char)
        .collect()
}
