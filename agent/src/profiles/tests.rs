//! The registry: one refresher per distinct (role, policy, duration), kept across reloads
//! while its key is unchanged.

use std::sync::{Arc, Mutex};

use super::*;
use crate::policy::Selector;
use crate::test_support::FixedSource;
use crate::time::SystemClock;

fn spec(name: &str, role: &str, policy: Option<&str>, duration_secs: u32) -> Spec {
    Spec {
        name: name.to_owned(),
        selector: Selector {
            uid: Some(1000),
            ..Selector::default()
        },
        role_arn: format!("acs:ram::123456789012:role/{role}"),
        policy: policy.map(str::to_owned),
        policy_file: None,
        duration_secs,
    }
}

/// A registry whose factory records every spec it is asked for; each refresher serves the
/// `AccessKeyId` `<profile>-<n>` (n counts the factory's calls).
fn registry() -> (Registry, Arc<Mutex<Vec<RoleSpec>>>) {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&asked);
    let time: SharedTimeSource = Arc::new(SystemClock);
    let make = move |spec: &RoleSpec| {
        let mut asked = seen.lock().unwrap();
        asked.push(spec.clone());
        FixedSource {
            key: format!("{}-{}", spec.profile, asked.len()),
            fail: None,
            time: Arc::clone(&time),
        }
    };
    let metrics = Metrics::new();
    let f = factory(
        make,
        RefreshPolicy::default(),
        Arc::new(SystemClock),
        metrics.clone(),
    );
    (Registry::new(f, metrics), asked)
}

#[tokio::test]
async fn profiles_with_one_key_share_a_refresher_and_a_reload_keeps_unchanged_keys() {
    let (mut r, asked) = registry();
    let a = spec("a", "app", None, 3600);
    let a_twin = spec("a-twin", "app", None, 3600);
    let b = spec("b", "other", Some("{}"), 3600);
    let set = r.reconcile(&[a.clone(), a_twin.clone(), b.clone()], Unmatched::Deny);
    assert_eq!(r.running(), 2);
    assert_eq!(asked.lock().unwrap().len(), 2);
    assert_eq!(set.unmatched, Unmatched::Deny);
    assert_eq!(set.specs.len(), 3);
    assert!(set.profiles[0].state.same_channel(&set.profiles[1].state));
    assert!(!set.profiles[0].state.same_channel(&set.profiles[2].state));
    assert_eq!(&*set.profiles[1].name, "a-twin");
    assert_eq!(
        asked.lock().unwrap()[1],
        RoleSpec {
            profile: "b".into(),
            role_arn: "acs:ram::123456789012:role/other".into(),
            policy: Some("{}".into()),
            duration_secs: 3600,
        }
    );

    // A reload: `a` unchanged (kept, no new refresher), `b`'s duration changed (a new one),
    // `a-twin` removed, `c` added with `a`'s key (shares it).
    let b2 = spec("b", "other", Some("{}"), 7200);
    let c = spec("c", "app", None, 3600);
    let again = r.reconcile(&[a.clone(), b2, c], Unmatched::InstanceRole);
    assert_eq!(asked.lock().unwrap().len(), 3, "only b's new key is built");
    assert_eq!(asked.lock().unwrap()[2].duration_secs, 7200);
    assert_eq!(r.running(), 2);
    assert!(again.profiles[0].state.same_channel(&set.profiles[0].state));
    assert!(again.profiles[2].state.same_channel(&set.profiles[0].state));
    assert!(!again.profiles[1].state.same_channel(&set.profiles[2].state));

    // The policy text is part of the key.
    let a_policy = spec("a", "app", Some(r#"{"Version":"1"}"#), 3600);
    let third = r.reconcile(&[a_policy], Unmatched::InstanceRole);
    assert_eq!(asked.lock().unwrap().len(), 4);
    assert_eq!(r.running(), 1);
    assert!(!third.profiles[0].state.same_channel(&set.profiles[0].state));
    // Nothing configured: nothing runs.
    assert!(r.reconcile(&[], Unmatched::Deny).profiles.is_empty());
    assert_eq!(r.running(), 0);
}

#[tokio::test]
async fn each_profile_reports_its_own_credentials_and_gauges() {
    let (mut r, _) = registry();
    let set = r.reconcile(
        &[spec("a", "app", None, 3600), spec("b", "other", None, 3600)],
        Unmatched::InstanceRole,
    );
    for (i, want) in ["a-1", "b-2"].iter().enumerate() {
        let mut rx = set.profiles[i].state.clone();
        let issued = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            crate::credentials::state::wait_for_credentials(
                &mut rx,
                std::time::Duration::from_secs(60),
            ),
        )
        .await
        .expect("credentials within 60 s")
        .expect("servable");
        assert_eq!(issued.access_key_id, *want);
    }
    let gauges = set.gauges(Instant::now());
    assert_eq!(gauges.len(), 2);
    assert_eq!(gauges[0].0, "a");
    assert!(gauges.iter().all(|(_, g)| g.ready), "{gauges:?}");
}
