//! The agent's STS client against the STS emulator (`ecs-metadata-emulator`), whose V3
//! verifier is its own code: an independent check of the signature, the parameters and the
//! documented answers. The instance role's credentials come from the metadata emulator through
//! a real refresher, as in the daemon; the real clock (the emulator checks `x-acs-date`).

use std::sync::Arc;
use std::time::Duration;

use ecs_metadata_emulator::sts::{StsConfig, StsEmulator, TargetRole};
use ecs_metadata_emulator::{Emulator, EmulatorConfig};

use super::super::*;
use super::POLICY;
use crate::credentials::{RefreshPolicy, Refresher};
use crate::time::SystemClock;

const APP: &str = "acs:ram::123456789012:role/billing-app";
const OTHER: &str = "acs:ram::123456789012:role/untrusted-app";

struct Both {
    metadata: Emulator,
    sts: StsEmulator,
    _dir: tempfile::TempDir,
    _instance: Refresher,
    assumer: Arc<Assumer>,
}

async fn both() -> Both {
    let metadata = Emulator::start_local(EmulatorConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("sts-ca.pem");
    let untrusted = TargetRole {
        trusted: vec!["SomeoneElse".to_owned()],
        ..TargetRole::new(OTHER, "EcsRamRoleDemo")
    };
    let sts = StsEmulator::start(StsConfig {
        keys: metadata.key_store(),
        roles: vec![TargetRole::new(APP, "EcsRamRoleDemo"), untrusted],
        ca_file: Some(ca_file.clone()),
        ..StsConfig::default()
    })
    .unwrap();
    let metadata_config = metadata::config::Config {
        endpoint: metadata.endpoint().parse().unwrap(),
        connect_timeout: Duration::from_secs(10),
        read_timeout: Duration::from_secs(10),
        ..Default::default()
    };
    let client = Arc::new(metadata::Client::new(&metadata_config, Arc::new(SystemClock)).unwrap());
    let instance = Refresher::builder(
        Arc::clone(&client),
        RefreshPolicy::default(),
        Arc::new(SystemClock),
    )
    .spawn();
    let mut rx = instance.subscribe();
    tokio::time::timeout(
        Duration::from_secs(60),
        rx.wait_for(|s| s.credentials.is_some()),
    )
    .await
    .expect("instance role credentials within 60 s")
    .unwrap();
    let config = config::Config {
        endpoint: Some(sts.endpoint().parse().unwrap()),
        ca_file: Some(ca_file),
        ..Default::default()
    };
    let assumer =
        Assumer::new(&config, client, instance.subscribe(), Arc::new(SystemClock)).unwrap();
    Both {
        metadata,
        sts,
        _dir: dir,
        _instance: instance,
        assumer,
    }
}

fn role(both: &Both, arn: &str, duration_secs: u32, policy: Option<&str>) -> AssumedRole {
    let spec = RoleSpec {
        profile: "billing".to_owned(),
        role_arn: arn.to_owned(),
        policy: policy.map(str::to_owned),
        duration_secs,
    };
    AssumedRole::new(Arc::clone(&both.assumer), spec)
}

#[tokio::test]
async fn the_emulator_accepts_the_v3_signature_with_a_session_policy() {
    let both = both().await;
    let fetched = role(&both, APP, 3600, Some(POLICY)).fetch().await.unwrap();
    assert_eq!(fetched.role_name, "billing-app");
    assert!(
        fetched.credentials.access_key_id.starts_with("STS."),
        "{fetched:?}"
    );
    let lifetime = fetched.credentials.expiration - fetched.credentials.last_updated;
    assert!(
        (3590..=3610).contains(&lifetime.whole_seconds()),
        "{lifetime}"
    );
    let counts = both.sts.counts();
    assert_eq!(
        (counts.accepted_v3, counts.role(APP).accepted),
        (1, 1),
        "{counts:?}"
    );
    assert!(
        both.metadata.counts().total >= 5,
        "token, role list, credentials, region, instance id"
    );
}

#[tokio::test]
async fn above_max_session_duration_is_retried_with_3600_and_accepted() {
    let both = both().await;
    let source = role(&both, APP, 43_200, None);
    let fetched = source.fetch().await.unwrap();
    let lifetime = fetched.credentials.expiration - fetched.credentials.last_updated;
    assert!(lifetime.whole_seconds() <= 3610, "{lifetime}");
    let counts = both.sts.counts();
    assert_eq!(
        counts.code("InvalidParameter.DurationSeconds"),
        1,
        "{counts:?}"
    );
    assert_eq!(counts.role(APP).accepted, 1, "{counts:?}");
    // The refusal is remembered: the next refresh asks for 3600 at once (one call).
    source.fetch().await.unwrap();
    let counts = both.sts.counts();
    assert_eq!(
        counts.code("InvalidParameter.DurationSeconds"),
        1,
        "{counts:?}"
    );
    assert_eq!(counts.role(APP).accepted, 2, "{counts:?}");
    assert_eq!(counts.role(APP).calls, 3, "{counts:?}");
}

#[tokio::test]
async fn a_role_whose_trust_policy_does_not_name_the_instance_role_is_no_permission() {
    let both = both().await;
    let e = role(&both, OTHER, 3600, None).fetch().await.unwrap_err();
    assert_eq!(e.kind(), "no_permission", "{e:?}");
    assert!(e.to_string().contains("trust policy"), "{e}");
}

/// The daemon's path: the profile registry's factory ([`crate::profiles::factory`]) over
/// [`AssumedRole`], as `cli.rs` is to wire it, publishes the profile's credentials.
#[tokio::test]
async fn the_profiles_factory_over_assumed_role_publishes_a_profiles_credentials() {
    let both = both().await;
    let assumer = Arc::clone(&both.assumer);
    let mut factory = crate::profiles::factory(
        move |spec: &RoleSpec| AssumedRole::new(Arc::clone(&assumer), spec.clone()),
        RefreshPolicy::default(),
        Arc::new(SystemClock),
        crate::metrics::Metrics::new(),
    );
    let spec = RoleSpec {
        profile: "billing".to_owned(),
        role_arn: APP.to_owned(),
        policy: None,
        duration_secs: 3600,
    };
    let refresher = factory(&spec);
    let mut rx = refresher.subscribe();
    let state = tokio::time::timeout(
        Duration::from_secs(60),
        rx.wait_for(|s| s.credentials.is_some()),
    )
    .await
    .expect("the profile's credentials within 60 s")
    .unwrap()
    .clone();
    let issued = state.credentials.unwrap();
    assert_eq!(issued.role_name, "billing-app");
    assert!(issued.access_key_id.starts_with("STS."), "{issued:?}");
    assert_eq!(both.sts.counts().role(APP).accepted, 1);
}
