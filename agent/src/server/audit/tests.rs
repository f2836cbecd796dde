use std::time::Duration;

use super::*;
use crate::identity::TcpOwner;
use crate::test_support::issued;

fn peer(pid: i32, uid: u32) -> Caller {
    Caller::new(uid, uid, Vec::new(), Some(pid)).with_exe(std::path::Path::new("/usr/bin/app"))
}

fn generation(n: u64) -> Issued {
    issued(
        n,
        &format!("STS.gen{n}"),
        Duration::from_secs(21_600),
        Duration::from_secs(60),
    )
}

const SEC: Duration = Duration::from_secs(1);

#[test]
fn first_issuance_logged_then_repeats_summarised_once_a_minute() {
    let mut a = Audit::default();
    let t0 = Instant::now();
    let (p, g1) = (peer(100, 1000), generation(1));
    let first = a.record_issuance(&p, &g1, t0);
    assert_eq!(
        first,
        vec![AuditEvent::Issued {
            pid: 100,
            cgroup_id: None,
            uid: 1000,
            gid: 1000,
            exe: "/usr/bin/app".to_owned(),
            transport: "unix",
            role: "EcsRole".to_owned(),
            profile: None,
            access_key_id: "STS.gen1".to_owned(),
            generation: 1,
        }]
    );
    for i in 1..=5 {
        assert!(a.record_issuance(&p, &g1, t0 + i * SEC).is_empty());
    }
    assert!(a.flush(t0 + 30 * SEC).is_empty(), "not yet a minute");
    let repeats = |count| AuditEvent::Repeats {
        pid: 100,
        cgroup_id: None,
        uid: 1000,
        access_key_id: "STS.gen1".to_owned(),
        generation: 1,
        count,
    };
    // The request a minute later reports itself and the five before it.
    assert_eq!(a.record_issuance(&p, &g1, t0 + 61 * SEC), vec![repeats(6)]);
    assert!(a.record_issuance(&p, &g1, t0 + 62 * SEC).is_empty());
    assert!(
        a.flush(t0 + 100 * SEC).is_empty(),
        "a minute since the last summary not yet passed"
    );
    assert_eq!(a.flush(t0 + 125 * SEC), vec![repeats(1)]);
    assert!(a.flush(t0 + 200 * SEC).is_empty(), "nothing pending");
}

#[test]
fn new_generation_is_a_new_first_issuance_and_closes_the_old_count() {
    let mut a = Audit::default();
    let t0 = Instant::now();
    let p = peer(7, 0);
    a.record_issuance(&p, &generation(1), t0);
    a.record_issuance(&p, &generation(1), t0 + SEC);
    let events = a.record_issuance(&p, &generation(2), t0 + 2 * SEC);
    assert!(
        matches!(
            events[0],
            AuditEvent::Repeats {
                generation: 1,
                count: 1,
                ..
            }
        ),
        "{events:?}"
    );
    assert!(
        matches!(events[1], AuditEvent::Issued { generation: 2, .. }),
        "{events:?}"
    );
    assert_eq!(events.len(), 2);
}

#[test]
fn callers_are_told_apart_by_pid_and_uid() {
    let mut a = Audit::default();
    let t0 = Instant::now();
    let g = generation(1);
    assert_eq!(a.record_issuance(&peer(1, 0), &g, t0).len(), 1);
    assert_eq!(a.record_issuance(&peer(2, 0), &g, t0).len(), 1);
    assert_eq!(a.record_issuance(&peer(1, 5), &g, t0).len(), 1);
    assert_eq!(a.record_issuance(&peer(1, 0), &g, t0).len(), 0);
}

/// Regression (issue 12): TCP callers have no pid, so every TCP caller of a uid was one
/// (pid 0, uid) caller: a second service of the same user got no `issued` event. They are
/// told apart by their socket's cgroup id, which their events name.
#[test]
fn tcp_callers_are_told_apart_by_cgroup_and_uid() {
    let tcp = |uid, cgroup_id| {
        Caller::of_tcp_owner(&TcpOwner {
            uid,
            inode: 1,
            cgroup_id,
        })
    };
    let mut a = Audit::default();
    let t0 = Instant::now();
    let g = generation(1);
    let first = a.record_issuance(&tcp(1000, Some(7)), &g, t0);
    assert!(
        matches!(
            first.as_slice(),
            [AuditEvent::Issued {
                pid: 0,
                cgroup_id: Some(7),
                uid: 1000,
                transport: "tcp",
                ..
            }]
        ),
        "{first:?}"
    );
    assert_eq!(
        a.record_issuance(&tcp(1000, Some(8)), &g, t0).len(),
        1,
        "another cgroup"
    );
    assert_eq!(
        a.record_issuance(&tcp(1001, Some(7)), &g, t0).len(),
        1,
        "another uid"
    );
    assert!(
        a.record_issuance(&tcp(1000, Some(7)), &g, t0).is_empty(),
        "a repeat"
    );
    // A socket caller with pid 0 is not a TCP caller.
    assert_eq!(a.record_issuance(&peer(0, 1000), &g, t0).len(), 1);
    let summary = a.flush_all(t0 + SEC);
    assert!(
        summary.contains(&AuditEvent::Repeats {
            pid: 0,
            cgroup_id: Some(7),
            uid: 1000,
            access_key_id: g.access_key_id.clone(),
            generation: 1,
            count: 1,
        }),
        "{summary:?}"
    );
    let denied = a.record_denial(&tcp(1002, Some(9)), t0);
    assert!(
        matches!(
            denied.as_slice(),
            [AuditEvent::Denied {
                cgroup_id: Some(9),
                ..
            }]
        ),
        "{denied:?}"
    );
}

#[test]
fn shutdown_flush_reports_every_pending_count() {
    let mut a = Audit::default();
    let t0 = Instant::now();
    let g = generation(1);
    a.record_issuance(&peer(1, 0), &g, t0);
    a.record_issuance(&peer(1, 0), &g, t0 + SEC);
    a.record_issuance(&peer(1, 0), &g, t0 + 2 * SEC);
    a.record_denial(&peer(9, 65534), t0);
    a.record_denial(&peer(9, 65534), t0 + SEC);
    let mut events = a.flush_all(t0 + 3 * SEC);
    events.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events.contains(&AuditEvent::DenialsSuppressed {
        uid: 65534,
        count: 1
    }));
    assert!(events
        .iter()
        .any(|e| matches!(e, AuditEvent::Repeats { count: 2, .. })));
    assert!(
        a.flush_all(t0 + 4 * SEC).is_empty(),
        "counts are not reported twice"
    );
}

#[test]
fn denials_first_at_once_then_suppressed_for_a_minute() {
    let mut a = Audit::default();
    let t0 = Instant::now();
    let p = peer(50, 65534);
    let denied = AuditEvent::Denied {
        pid: 50,
        cgroup_id: None,
        uid: 65534,
        gid: 65534,
        exe: "/usr/bin/app".to_owned(),
        transport: "unix",
    };
    assert_eq!(a.record_denial(&p, t0), vec![denied.clone()]);
    for i in 1..=3 {
        assert!(
            a.record_denial(&peer(51, 65534), t0 + i * SEC).is_empty(),
            "same uid, other pid"
        );
    }
    assert_eq!(
        a.record_denial(&peer(60, 1), t0 + 4 * SEC).len(),
        1,
        "another uid logged at once"
    );
    // After the window, the next denial reports the suppressed ones and is logged itself.
    let later = a.record_denial(&p, t0 + 61 * SEC);
    assert_eq!(
        later,
        vec![
            AuditEvent::DenialsSuppressed {
                uid: 65534,
                count: 3
            },
            denied
        ]
    );
    // The periodic flush closes finished windows.
    a.record_denial(&p, t0 + 62 * SEC);
    assert_eq!(a.flush(t0 + 90 * SEC), vec![]);
    assert_eq!(
        a.flush(t0 + 122 * SEC),
        vec![AuditEvent::DenialsSuppressed {
            uid: 65534,
            count: 1
        }]
    );
    assert_eq!(
        a.record_denial(&p, t0 + 123 * SEC).len(),
        1,
        "a new window logs at once"
    );
}

#[test]
fn memory_is_bounded_and_overflow_counted() {
    let mut a = Audit::with_limits(2, 1);
    let t0 = Instant::now();
    let g = generation(1);
    a.record_issuance(&peer(1, 0), &g, t0);
    a.record_issuance(&peer(2, 0), &g, t0);
    assert!(
        a.record_issuance(&peer(3, 0), &g, t0).is_empty(),
        "full: counted, not tracked"
    );
    assert!(a.record_issuance(&peer(3, 0), &g, t0).is_empty());
    assert_eq!(a.tracked_callers(), 2);
    a.record_denial(&peer(8, 8), t0);
    assert!(a.record_denial(&peer(9, 9), t0).is_empty());
    assert_eq!(
        a.flush(t0 + SEC),
        vec![AuditEvent::Untracked {
            issuances: 2,
            denials: 1
        }]
    );
    // A new generation evicts callers of the old one, reporting their counts.
    a.record_issuance(&peer(1, 0), &g, t0 + SEC);
    let g2 = generation(2);
    let events = a.record_issuance(&peer(4, 0), &g2, t0 + 2 * SEC);
    assert!(events.contains(&AuditEvent::Repeats {
        pid: 1,
        cgroup_id: None,
        uid: 0,
        access_key_id: "STS.gen1".to_owned(),
        generation: 1,
        count: 1
    }));
    assert!(matches!(
        events.last(),
        Some(AuditEvent::Issued {
            pid: 4,
            cgroup_id: None,
            generation: 2,
            ..
        })
    ));
    assert_eq!(a.tracked_callers(), 1);
}

#[test]
fn idle_callers_are_forgotten() {
    let mut a = Audit::default();
    let t0 = Instant::now();
    let g = generation(1);
    a.record_issuance(&peer(1, 0), &g, t0);
    a.flush(t0 + FORGET_AFTER - SEC);
    assert_eq!(a.tracked_callers(), 1);
    a.flush(t0 + FORGET_AFTER);
    assert_eq!(a.tracked_callers(), 0);
}

#[test]
fn events_never_hold_secrets() {
    let mut a = Audit::default();
    let t0 = Instant::now();
    let g = generation(1);
    let mut events = a.record_issuance(&peer(1, 0), &g, t0);
    a.record_issuance(&peer(1, 0), &g, t0);
    events.extend(a.record_denial(&peer(2, 2), t0));
    events.extend(a.flush_all(t0));
    let text = format!("{events:?}");
    assert!(
        !text.contains(crate::server::tests::SECRET) && !text.contains(crate::server::tests::TOKEN)
    );
}

#[test]
fn batched_repeats_are_all_accounted_for() {
    let mut a = Audit::default();
    let t0 = Instant::now();
    let (p, g1, g2) = (peer(100, 1000), generation(1), generation(2));
    assert_eq!(a.record_issuance(&p, &g1, t0).len(), 1);
    // A connection reports 5 repeats, then 3: counted, summarised once the minute is over.
    assert!(a.record_repeats(&p, 1, "STS.gen1", 5, t0 + SEC).is_empty());
    assert!(a.record_repeats(&p, 1, "STS.gen1", 0, t0 + SEC).is_empty());
    let due = a.record_repeats(&p, 1, "STS.gen1", 3, t0 + 61 * SEC);
    let repeats = |generation: u64, count: u64| AuditEvent::Repeats {
        pid: 100,
        cgroup_id: None,
        uid: 1000,
        access_key_id: format!("STS.gen{generation}"),
        generation,
        count,
    };
    assert_eq!(due, vec![repeats(1, 8)]);
    // The caller moved on to generation 2: a late batch of generation 1 is reported at once.
    assert_eq!(a.record_issuance(&p, &g2, t0 + 62 * SEC).len(), 1);
    assert_eq!(
        a.record_repeats(&p, 1, "STS.gen1", 4, t0 + 62 * SEC),
        vec![repeats(1, 4)]
    );
    // An untracked caller's repeats are counted in aggregate.
    let mut full = Audit::with_limits(0, 0);
    assert!(full.record_issuance(&p, &g1, t0).is_empty());
    assert!(full.record_repeats(&p, 1, "STS.gen1", 6, t0).is_empty());
    assert_eq!(
        full.flush(t0 + SEC),
        vec![AuditEvent::Untracked {
            issuances: 7,
            denials: 0
        }]
    );
}

#[test]
fn a_forged_executable_name_cannot_forge_an_audit_line() {
    let (buf, _guard) = crate::test_logs::capture_logs();
    let forged = "/tmp/app\n2026-01-01T00:00:00Z INFO audit: credentials issued to caller uid=0";
    let caller =
        Caller::new(1000, 1000, Vec::new(), Some(5)).with_exe(std::path::Path::new(forged));
    let mut a = Audit::default();
    let t0 = Instant::now();
    a.record_issuance(&caller, &generation(1), t0)
        .iter()
        .chain(&a.record_denial(&caller, t0))
        .for_each(AuditEvent::emit);
    let logs = crate::test_logs::logs(&buf);
    assert_eq!(logs.lines().count(), 2, "{logs}");
    assert!(logs.contains(r#"exe="/tmp/app\n2026-01-01"#), "{logs}");
}

#[test]
fn values_from_the_caller_the_metadata_service_and_sts_are_quoted_and_escaped() {
    // A role name and an AccessKeyId are validated where they arrive; the audit does not rely
    // on it. Each value carries a complete forged line, a terminal escape and a forged field.
    let forged = |what: &str| format!("{what}\nINFO audit: event=\"issued\" uid=0\x1b[2J x=y");
    let event = AuditEvent::Issued {
        pid: 7,
        cgroup_id: None,
        uid: 1000,
        gid: 1000,
        exe: forged("/tmp/app"),
        transport: "unix",
        role: forged("EcsRole"),
        profile: None,
        access_key_id: forged("STS.A"),
        generation: 1,
    };
    let (buf, guard) = crate::test_logs::capture_logs();
    event.emit();
    drop(guard);
    let logs = crate::test_logs::logs(&buf);
    assert_eq!(logs.lines().count(), 1, "{logs}");
    assert!(!logs.contains('\x1b'), "{logs:?}");
    let escaped = r#"\nINFO audit: event=\"issued\" uid=0\u{1b}[2J x=y""#;
    for field in [
        r#"exe="/tmp/app"#,
        r#"role="EcsRole"#,
        r#"access_key_id="STS.A"#,
    ] {
        assert!(
            logs.contains(&format!("{field}{escaped}")),
            "{field}: {logs}"
        );
    }
    assert!(logs.contains(" generation=1"), "{logs}");
}

#[test]
fn the_executable_is_wanted_at_accept_only_when_an_event_will_name_it() {
    let mut a = Audit::default();
    let t0 = Instant::now();
    let p = peer(100, 1000);
    assert!(a.would_be_first_issuance(&p, None), "no credentials yet");
    assert!(a.would_be_first_issuance(&p, Some(1)), "a new caller");
    a.record_issuance(&p, &generation(1), t0);
    assert!(
        !a.would_be_first_issuance(&p, Some(1)),
        "a repeat names no executable"
    );
    assert!(a.would_be_first_issuance(&p, Some(2)), "a new generation");
    assert!(
        a.would_be_first_issuance(&peer(101, 1000), Some(1)),
        "another pid"
    );
    assert!(a.would_log_denial(1000, t0));
    a.record_denial(&p, t0);
    assert!(
        !a.would_log_denial(1000, t0 + SEC),
        "suppressed within the window"
    );
    assert!(a.would_log_denial(1000, t0 + SUMMARY_INTERVAL));
    assert!(a.would_log_denial(1001, t0 + SEC));
}

#[test]
fn a_known_caller_is_one_pid_uid_and_generation() {
    let known = KnownCaller::default();
    let (a, b) = (peer(10, 1000), peer(10, 1001));
    assert!(!known.is(&a, 1), "nothing known at first");
    known.set(&a, 1);
    assert!(known.is(&a, 1));
    assert!(!known.is(&a, 2), "another generation is not known");
    assert!(!known.is(&b, 1), "same pid, another uid");
    assert!(!known.is(&peer(11, 1000), 1), "same uid, another pid");
    // A pid and a uid that would collide if packed carelessly stay apart.
    let (c, d) = (peer(1, 0), peer(0, 1));
    known.set(&c, 1);
    assert!(known.is(&c, 1) && !known.is(&d, 1));
    // TCP callers (no pid) of one uid in two cgroups are two callers, neither a pid-0 one.
    let tcp = |cgroup_id| {
        Caller::of_tcp_owner(&TcpOwner {
            uid: 1000,
            inode: 1,
            cgroup_id: Some(cgroup_id),
        })
    };
    known.set(&tcp(7), 1);
    assert!(known.is(&tcp(7), 1));
    assert!(!known.is(&tcp(8), 1), "same uid, another cgroup");
    assert!(
        !known.is(&peer(0, 1000), 1),
        "a socket caller without a pid"
    );
}
