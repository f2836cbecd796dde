//! The documented protocol, against a started emulator on 127.0.0.1:0.

mod common;

use std::time::{Duration, SystemTime};

use common::{is_404_page, start, ROLE_LIST, TOKEN_PATH};
use ecs_metadata_emulator::{Counts, EmulatorConfig, ManualClock, FORWARDED_FOR_HEADER};

/// 2024-11-08T03:44:50Z, the documented example's `LastUpdated`.
fn example_time() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_731_037_490)
}

fn manual() -> (ManualClock, EmulatorConfig) {
    let clock = ManualClock::new(example_time());
    let config = EmulatorConfig {
        clock: std::sync::Arc::new(clock.clone()),
        ..EmulatorConfig::default()
    };
    (clock, config)
}

#[tokio::test]
async fn token_flow_reads_role_and_credentials() {
    let f = start(EmulatorConfig::default());
    let token = f.token().await;
    assert!(
        token.len() >= 32 && token.chars().all(|c| c.is_ascii_alphanumeric()),
        "{token}"
    );
    let role = f.get(ROLE_LIST, Some(&token)).await;
    assert_eq!((role.status, role.body.as_str()), (200, "EcsRamRoleDemo"));
    assert_eq!(role.content_type, "text/plain");
    // The same metadata token is reusable.
    let creds = f.get(&f.creds_path(), Some(&token)).await;
    assert_eq!(creds.status, 200);
}

#[tokio::test]
async fn token_ttl_validation() {
    let f = start(EmulatorConfig::default());
    for ttl in [
        None,
        Some("0"),
        Some("21601"),
        Some("abc"),
        Some("-5"),
        Some("+5"),
        Some(""),
        Some("99999999999999999999999"),
    ] {
        let a = f.put_token(ttl).await;
        assert_eq!(a.status, 400, "ttl {ttl:?}");
        assert!(
            a.body.contains("Missing or Invalid Parameters"),
            "ttl {ttl:?}: {}",
            a.body
        );
    }
    for ttl in ["1", "21600"] {
        assert_eq!(f.put_token(Some(ttl)).await.status, 200, "ttl {ttl}");
    }
    assert_eq!(f.emulator.counts().tokens_issued, 2);
}

#[tokio::test]
async fn header_names_are_case_insensitive() {
    let f = start(EmulatorConfig::default());
    let token = f
        .client
        .put(f.url(TOKEN_PATH))
        .header("X-Aliyun-Ecs-Metadata-Token-Ttl-Seconds", "60");
    let token = token.send().await.unwrap().text().await.unwrap();
    let a = f
        .client
        .get(f.url(ROLE_LIST))
        .header("X-ALIYUN-ECS-METADATA-TOKEN", token);
    assert_eq!(a.send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn forwarded_for_is_refused_on_put_and_get() {
    let f = start(EmulatorConfig {
        hardened_only: false,
        ..EmulatorConfig::default()
    });
    let put = f
        .client
        .put(f.url(TOKEN_PATH))
        .header("x-aliyun-ecs-metadata-token-ttl-seconds", "60")
        .header(FORWARDED_FOR_HEADER, "10.0.0.1");
    let put = common::answer(put.send().await.unwrap()).await;
    assert_eq!(put.status, 403);
    assert!(!put.body.is_empty() && put.body.contains("403"), "{put:?}");
    assert_eq!(f.emulator.counts().tokens_issued, 0);

    let token = f.token().await;
    let get = f
        .client
        .get(f.url(ROLE_LIST))
        .header("x-aliyun-ecs-metadata-token", token)
        .header("X-Forwarded-For", "10.0.0.1");
    assert_eq!(get.send().await.unwrap().status(), 403);
}

#[tokio::test]
async fn get_on_token_path_is_405() {
    let f = start(EmulatorConfig::default());
    assert_eq!(f.get(TOKEN_PATH, None).await.status, 405);
    let post = f
        .client
        .post(f.url(TOKEN_PATH))
        .header("x-aliyun-ecs-metadata-token-ttl-seconds", "60");
    assert_eq!(post.send().await.unwrap().status(), 405);
    assert_eq!(f.emulator.counts().tokens_issued, 0);
}

#[tokio::test]
async fn invalid_and_expired_tokens_are_401() {
    let (clock, config) = manual();
    let f = start(config);
    assert_eq!(f.get(ROLE_LIST, Some("not-a-token")).await.status, 401);

    let short = f.put_token(Some("60")).await.body;
    assert_eq!(f.get(ROLE_LIST, Some(&short)).await.status, 200);
    clock.advance(Duration::from_secs(59));
    assert_eq!(f.get(ROLE_LIST, Some(&short)).await.status, 200);
    clock.advance(Duration::from_secs(1));
    assert_eq!(f.get(ROLE_LIST, Some(&short)).await.status, 401, "TTL over");

    let long = f.token().await;
    assert_eq!(f.get(ROLE_LIST, Some(&long)).await.status, 200);
    f.emulator.expire_tokens();
    assert_eq!(
        f.get(ROLE_LIST, Some(&long)).await.status,
        401,
        "expire_tokens"
    );
    assert_eq!(f.emulator.counts().unauthorized, 3);
}

#[tokio::test]
async fn tokenless_is_403_hardened_and_200_normal() {
    let hardened = start(EmulatorConfig::default());
    assert_eq!(hardened.get(ROLE_LIST, None).await.status, 403);
    assert_eq!(hardened.get(&hardened.creds_path(), None).await.status, 403);
    assert_eq!(hardened.emulator.counts().forbidden, 2);

    let normal = start(EmulatorConfig {
        hardened_only: false,
        ..EmulatorConfig::default()
    });
    assert_eq!(normal.get(ROLE_LIST, None).await.body, "EcsRamRoleDemo");
    assert_eq!(normal.get(&normal.creds_path(), None).await.status, 200);
    // A bad token is still refused in normal mode.
    assert_eq!(normal.get(ROLE_LIST, Some("bad")).await.status, 401);
}

#[tokio::test]
async fn credentials_have_the_documented_shape() {
    let (_clock, config) = manual();
    let f = start(config);
    let v = f.credentials().await;
    let obj = v.as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "AccessKeyId",
            "AccessKeySecret",
            "Code",
            "Expiration",
            "LastUpdated",
            "SecurityToken"
        ]
    );
    assert!(v["AccessKeyId"].as_str().unwrap().starts_with("STS."));
    assert!(!v["AccessKeySecret"].as_str().unwrap().is_empty());
    let token_len = v["SecurityToken"].as_str().unwrap().len();
    assert!(
        (1000..=1500).contains(&token_len),
        "SecurityToken length {token_len}"
    );
    assert_eq!(v["Code"], "Success");
    assert_eq!(v["LastUpdated"], "2024-11-08T03:44:50Z");
    assert_eq!(v["Expiration"], "2024-11-08T09:44:50Z");
    // What the emulator says it serves is what it served.
    let served = f.emulator.current_credentials().unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&served.to_json()).unwrap(),
        v
    );
}

#[tokio::test]
async fn times_are_whole_seconds_with_z_on_the_real_clock() {
    let f = start(EmulatorConfig::default());
    let v = f.credentials().await;
    for field in ["Expiration", "LastUpdated"] {
        let t = v[field].as_str().unwrap();
        let shape: Vec<bool> = t.bytes().map(|b| b.is_ascii_digit()).collect();
        assert_eq!(t.len(), 20, "{field} = {t}");
        assert!(t.ends_with('Z') && &t[10..11] == "T", "{field} = {t}");
        assert_eq!(shape.iter().filter(|d| **d).count(), 14, "{field} = {t}");
    }
}

#[tokio::test]
async fn wrong_role_detach_and_unknown_paths_are_html_404() {
    let f = start(EmulatorConfig::default());
    let token = f.token().await;
    let wrong = f.get(&format!("{ROLE_LIST}NotMyRole"), Some(&token)).await;
    assert!(is_404_page(&wrong), "{wrong:?}");
    assert_eq!(wrong.content_type, "text/html");
    // An ECS metadata path the emulator does not serve (`instance-id` and `region-id` are
    // served now: `instance_facts_are_served_under_the_metadata_token_rules`).
    assert!(is_404_page(
        &f.get("/latest/meta-data/hostname", Some(&token)).await
    ));
    assert!(is_404_page(
        &f.get("/latest/meta-data/instance-id/", Some(&token)).await
    ));
    assert!(is_404_page(
        &f.get("/latest/meta-data/ram/security-credentials", Some(&token))
            .await
    ));

    let path = f.creds_path();
    f.emulator.detach_role();
    assert!(is_404_page(&f.get(ROLE_LIST, Some(&token)).await));
    assert!(is_404_page(&f.get(&path, Some(&token)).await));
    assert!(f.emulator.current_credentials().is_none());
    assert!(!f.emulator.rotate_now());

    f.emulator.attach_role("OtherRole");
    assert_eq!(f.get(ROLE_LIST, Some(&token)).await.body, "OtherRole");
    assert!(
        is_404_page(&f.get(&path, Some(&token)).await),
        "old role name after replace"
    );
    assert_eq!(
        f.get(&format!("{ROLE_LIST}OtherRole"), Some(&token))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn no_role_from_config() {
    let f = start(EmulatorConfig {
        role_name: None,
        ..EmulatorConfig::default()
    });
    assert!(is_404_page(&f.get_with_token(ROLE_LIST).await));
}

#[tokio::test]
async fn same_generation_until_rotate_after_then_a_new_one() {
    let (clock, config) = manual();
    let f = start(config);
    let first = f.credentials().await;
    clock.advance(Duration::from_secs(5 * 3600 - 1));
    assert_eq!(f.credentials().await, first, "before rotate_after");
    clock.advance(Duration::from_secs(1));
    let second = f.credentials().await;
    assert_ne!(second["AccessKeyId"], first["AccessKeyId"]);
    assert_ne!(second["AccessKeySecret"], first["AccessKeySecret"]);
    assert_ne!(second["SecurityToken"], first["SecurityToken"]);
    assert_eq!(second["LastUpdated"], "2024-11-08T08:44:50Z");
    assert_eq!(second["Expiration"], "2024-11-08T14:44:50Z");
    assert_eq!(f.credentials().await, second, "stable again after rotating");
}

#[tokio::test]
async fn configured_lifetime_and_rotate_now() {
    let (clock, mut config) = manual();
    config.credential_lifetime = Duration::from_secs(900);
    config.rotate_after = Some(Duration::from_secs(600));
    let f = start(config);
    let first = f.credentials().await;
    assert_eq!(first["Expiration"], "2024-11-08T03:59:50Z");
    clock.advance(Duration::from_secs(1));
    assert!(f.emulator.rotate_now());
    let rotated = f.credentials().await;
    assert_ne!(rotated["AccessKeyId"], first["AccessKeyId"]);
    assert_eq!(rotated["LastUpdated"], "2024-11-08T03:44:51Z");
    clock.advance(Duration::from_secs(599));
    assert_eq!(f.credentials().await, rotated);
    clock.advance(Duration::from_secs(1));
    assert_ne!(f.credentials().await["AccessKeyId"], rotated["AccessKeyId"]);
}

#[tokio::test]
async fn counts_by_endpoint_and_answer() {
    let f = start(EmulatorConfig::default());
    let token = f.token().await;
    f.put_token(None).await;
    f.get(ROLE_LIST, Some(&token)).await;
    f.get(ROLE_LIST, Some(&token)).await;
    f.get(&f.creds_path(), Some(&token)).await;
    f.get(&f.creds_path(), Some("bad")).await;
    f.get(ROLE_LIST, None).await;
    f.get("/elsewhere", Some(&token)).await;
    let want = Counts {
        total: 8,
        token_puts: 2,
        tokens_issued: 1,
        role_list_gets: 3,
        credential_gets: 2,
        unauthorized: 1,
        forbidden: 1,
    };
    assert_eq!(f.emulator.counts(), want);
    f.emulator.reset_counts();
    assert_eq!(f.emulator.counts(), Counts::default());
}

#[tokio::test]
async fn shutdown_closes_the_port() {
    let f = start(EmulatorConfig::default());
    let addr = f.emulator.addr();
    assert_eq!(f.emulator.endpoint(), format!("http://{addr}"));
    f.emulator.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn instance_facts_are_served_under_the_metadata_token_rules() {
    let f = start(EmulatorConfig::default());
    let region = f.get_with_token("/latest/meta-data/region-id").await;
    assert_eq!((region.status, region.body.as_str()), (200, "cn-hangzhou"));
    assert_eq!(region.content_type, "text/plain");
    let instance = f.get_with_token("/latest/meta-data/instance-id").await;
    assert_eq!(instance.status, 200);
    assert_eq!(
        instance.body,
        ecs_metadata_emulator::config::DEFAULT_INSTANCE_ID
    );
    // Hardened-only: tokenless 403, unknown metadata token 401, like the credential paths.
    for path in [
        "/latest/meta-data/region-id",
        "/latest/meta-data/instance-id",
    ] {
        assert_eq!(f.get(path, None).await.status, 403, "{path}");
        assert_eq!(f.get(path, Some("not-a-token")).await.status, 401, "{path}");
    }

    let custom = start(EmulatorConfig {
        region_id: "cn-beijing".to_owned(),
        instance_id: "i-2zeaaaaaaaaaaaaaaaaa".to_owned(),
        hardened_only: false,
        ..EmulatorConfig::default()
    });
    let region = custom.get("/latest/meta-data/region-id", None).await;
    assert_eq!((region.status, region.body.as_str()), (200, "cn-beijing"));
    let instance = custom.get("/latest/meta-data/instance-id", None).await;
    assert_eq!(
        (instance.status, instance.body.as_str()),
        (200, "i-2zeaaaaaaaaaaaaaaaaa")
    );
}
