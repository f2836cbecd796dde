//! Tests of [`authorize`](super::authorize) and the profile selectors.

use std::path::Path;

use super::*;

fn caller(uid: u32, gid: u32, groups: &[u32]) -> Caller {
    Caller::new(uid, gid, groups.to_vec(), Some(1234))
}

fn rules<'a>(uids: &'a [u32], gids: &'a [u32]) -> Rules<'a> {
    Rules {
        trusted: Trusted::agent_uid(999),
        allowed_uids: uids,
        allowed_gids: gids,
        profiles: &[],
        unmatched: Unmatched::InstanceRole,
    }
}

#[test]
fn authorize_table() {
    use Decision::{Denied, InstanceRole};
    let default = crate::server::config::Config::default();
    let defaults = rules(&default.allowed_uids, &default.allowed_gids);
    let untrusting = Rules {
        trusted: Trusted::nobody(),
        ..rules(&[], &[])
    };
    let rows: &[(&str, Caller, Rules<'_>, Decision)] = &[
        (
            "root by default",
            caller(0, 0, &[]),
            defaults,
            InstanceRole(Grounds::Trusted),
        ),
        (
            "the agent's own uid by default",
            caller(999, 999, &[]),
            defaults,
            InstanceRole(Grounds::Trusted),
        ),
        (
            "root when the lists are empty",
            caller(0, 0, &[0]),
            rules(&[], &[]),
            InstanceRole(Grounds::Trusted),
        ),
        (
            "another user by default",
            caller(1000, 1000, &[1000]),
            defaults,
            Denied,
        ),
        (
            "uid listed",
            caller(1000, 1000, &[]),
            rules(&[1000], &[]),
            InstanceRole(Grounds::Uid),
        ),
        (
            "primary gid",
            caller(1000, 50, &[]),
            rules(&[], &[50]),
            InstanceRole(Grounds::PrimaryGid(50)),
        ),
        (
            "supplementary gid",
            caller(1000, 1000, &[10, 60]),
            rules(&[], &[60]),
            InstanceRole(Grounds::SupplementaryGid(60)),
        ),
        (
            "nobody denied",
            caller(65534, 65534, &[65534]),
            defaults,
            Denied,
        ),
        (
            "gid not uid",
            caller(50, 1000, &[]),
            rules(&[], &[50]),
            Denied,
        ),
        (
            "root judged by the rules when nothing is trusted (tests)",
            caller(0, 0, &[0]),
            untrusting,
            Denied,
        ),
    ];
    for (name, c, r, want) in rows {
        assert_eq!(authorize(c, *r), *want, "{name}");
        assert_eq!(want.is_allowed(), *want != Denied);
    }
}

#[test]
fn this_process_trusts_root_and_itself_only() {
    let me = nix::unistd::geteuid().as_raw();
    let t = Trusted::this_process();
    assert!(t.contains(0) && t.contains(me));
    if me != 65533 {
        assert!(!t.contains(65533));
    }
    assert!(!Trusted::nobody().contains(0));
}

/// A loopback TCP caller's gid and groups come from the user database (microseconds per
/// connection): a caller the uid alone decides for never reads it.
#[test]
fn a_tcp_caller_judged_by_its_uid_reads_no_user_database() {
    use crate::identity::TcpOwner;
    let owner = TcpOwner {
        uid: 1000,
        inode: 1,
        cgroup_id: None,
    };
    let rows: &[(Rules<'_>, Decision)] = &[
        (rules(&[1000], &[]), Decision::InstanceRole(Grounds::Uid)),
        (rules(&[1000], &[50]), Decision::InstanceRole(Grounds::Uid)),
        (rules(&[], &[]), Decision::Denied),
    ];
    for (r, want) in rows {
        let c = Caller::of_tcp_owner(&owner);
        assert_eq!(authorize(&c, *r), *want);
        assert!(!c.user_database_read(), "{want:?}");
    }
    // Gids to match and the uid not allowed: the user database decides.
    let c = Caller::of_tcp_owner(&owner);
    let _ = authorize(&c, rules(&[], &[50]));
    assert!(c.user_database_read());
}

fn profile(name: &str, selector: Selector) -> Spec {
    Spec {
        name: name.to_owned(),
        selector,
        role_arn: "acs:ram::1:role/r".to_owned(),
        policy: None,
        policy_file: None,
        duration_secs: 3600,
    }
}

fn with_profiles<'a>(profiles: &'a [Spec], uids: &'a [u32], unmatched: Unmatched) -> Rules<'a> {
    Rules {
        profiles,
        unmatched,
        ..rules(uids, &[])
    }
}

/// The selector keys, each against callers that match and callers that look alike.
#[test]
fn selector_table() {
    let unit = "/system.slice/billing.service";
    let by = |f: fn(&mut Selector)| {
        let mut s = Selector::default();
        f(&mut s);
        s
    };
    let uid = by(|s| s.uid = Some(1001));
    let user = by(|s| s.user = Some(("billing".into(), 1001)));
    let gid = by(|s| s.gid = Some(50));
    let group = by(|s| s.group = Some(("staff".into(), 50)));
    let unit_sel = by(|s| s.unit = Some("/system.slice/billing.service".into()));
    let exe = by(|s| s.exe = Some("/usr/bin/billing".into()));
    let both = by(|s| {
        s.uid = Some(1001);
        s.exe = Some("/usr/bin/billing".into());
    });
    let rows: Vec<(&str, &Selector, Caller, bool)> = vec![
        ("uid", &uid, caller(1001, 1, &[]), true),
        ("uid other", &uid, caller(1002, 1, &[]), false),
        ("user", &user, caller(1001, 1, &[]), true),
        ("user other", &user, caller(0, 0, &[]), false),
        ("gid primary", &gid, caller(7, 50, &[]), true),
        ("gid supplementary", &gid, caller(7, 1, &[3, 50]), true),
        ("gid none", &gid, caller(7, 1, &[3]), false),
        ("group primary", &group, caller(7, 50, &[]), true),
        ("group supplementary", &group, caller(7, 1, &[50]), true),
        ("group none", &group, caller(50, 1, &[]), false),
        (
            "unit exact",
            &unit_sel,
            caller(7, 7, &[]).with_cgroup(unit),
            true,
        ),
        (
            "unit look-alike in a delegated user tree",
            &unit_sel,
            caller(7, 7, &[]).with_cgroup(
                "/user.slice/user-1000.slice/user@1000.service/app.slice/billing.service",
            ),
            false,
        ),
        (
            "unit prefix",
            &unit_sel,
            caller(7, 7, &[]).with_cgroup("/system.slice/billing.service/child"),
            false,
        ),
        ("unit unknown", &unit_sel, caller(7, 7, &[]), false),
        (
            "exe",
            &exe,
            caller(7, 7, &[]).with_exe(Path::new("/usr/bin/billing")),
            true,
        ),
        (
            "exe other",
            &exe,
            caller(7, 7, &[]).with_exe(Path::new("/usr/bin/billing2")),
            false,
        ),
        ("exe unknown", &exe, caller(7, 7, &[]), false),
        (
            "every key must match",
            &both,
            caller(1002, 7, &[]).with_exe(Path::new("/usr/bin/billing")),
            false,
        ),
        (
            "every key matches",
            &both,
            caller(1001, 7, &[]).with_exe(Path::new("/usr/bin/billing")),
            true,
        ),
    ];
    for (name, selector, c, want) in rows {
        assert_eq!(selector.matches(&c), want, "{name}");
    }
}

/// Over TCP, `unit` matches through the cgroup id (the inode of the unit's cgroup directory),
/// and `exe` and `exe_sha256` never match: there is no process.
#[test]
fn a_tcp_caller_matches_unit_by_cgroup_id_and_never_exe() {
    use crate::identity::TcpOwner;
    use std::os::unix::fs::MetadataExt;
    let root = tempfile::tempdir().unwrap();
    let unit_dir = root.path().join("system.slice/billing.service");
    std::fs::create_dir_all(&unit_dir).unwrap();
    let alike = root
        .path()
        .join("user.slice/user@1000.service/billing.service");
    std::fs::create_dir_all(&alike).unwrap();
    let inode = |p: &Path| std::fs::metadata(p).unwrap().ino();
    let tcp = |cgroup_id| {
        Caller::of_tcp_owner(&TcpOwner {
            uid: 1000,
            inode: 1,
            cgroup_id,
        })
    };
    let unit = Selector {
        unit: Some("/system.slice/billing.service".into()),
        ..Selector::default()
    };
    assert!(unit.matches_under(&tcp(Some(inode(&unit_dir))), root.path()));
    assert!(!unit.matches_under(&tcp(Some(inode(&alike))), root.path()));
    assert!(!unit.matches_under(&tcp(None), root.path()));
    // The unit restarted: its directory is new, and so is its id.
    let old = inode(&unit_dir);
    std::fs::remove_dir(&unit_dir).unwrap();
    assert!(!unit.matches_under(&tcp(Some(old)), root.path()));
    let exe = Selector {
        exe: Some("/usr/bin/billing".into()),
        ..Selector::default()
    };
    let sha = Selector {
        exe_sha256: Some([0; 32]),
        ..Selector::default()
    };
    let c = tcp(Some(1));
    assert!(!exe.matches(&c) && !sha.matches(&c));
    // A uid-only selector decides without the user database.
    let uid = Selector {
        uid: Some(1000),
        ..Selector::default()
    };
    assert!(uid.matches(&c));
    assert!(!c.user_database_read());
}

/// `exe_sha256` hashes the executable of the process that connected (here, this test
/// process through a socket pair), and a second match reads the cached hash.
#[test]
fn exe_sha256_hashes_the_connected_process_executable_once() {
    use sha2::{Digest, Sha256};
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let (me, _lent) = Caller::of_unix_peer(&a).unwrap();
    let bytes = std::fs::read("/proc/self/exe").unwrap();
    let want: [u8; 32] = Sha256::digest(&bytes).into();
    let right = Selector {
        exe_sha256: Some(want),
        ..Selector::default()
    };
    let wrong = Selector {
        exe_sha256: Some([0; 32]),
        ..Selector::default()
    };
    assert!(right.matches(&me));
    let cached = super::selector::cached_hashes();
    assert!(cached >= 1);
    assert!(!wrong.matches(&me));
    assert!(right.matches(&me));
    assert_eq!(super::selector::cached_hashes(), cached, "hashed again");
    // Its unit: the cgroup this process is in, compared whole.
    if let Some(cgroup) = me.process().and_then(|p| p.cgroup()).map(str::to_owned) {
        let unit = Selector {
            unit: Some(cgroup.clone()),
            ..Selector::default()
        };
        assert!(unit.matches(&me), "{cgroup}");
    }
}

/// The order of judgement: the first matching profile (root included, whatever the lists
/// say), then root and the agent's uid, then the lists under `unmatched`.
#[test]
fn precedence_table() {
    use Decision::{Denied, InstanceRole, Profile, Unmatched as NoProfile};
    let uid = |u| Selector {
        uid: Some(u),
        ..Selector::default()
    };
    let profiles = [
        profile("first", uid(1000)),
        profile("second", uid(1000)),
        profile("root", uid(0)),
        profile(
            "group",
            Selector {
                gid: Some(50),
                ..Selector::default()
            },
        ),
    ];
    let rows: Vec<(&str, Caller, Rules<'_>, Decision)> = vec![
        (
            "first match wins",
            caller(1000, 1000, &[]),
            with_profiles(&profiles, &[], Unmatched::Deny),
            Profile(0),
        ),
        (
            "a profile admits a caller the lists do not",
            caller(1000, 1000, &[]),
            with_profiles(&profiles, &[], Unmatched::InstanceRole),
            Profile(0),
        ),
        (
            "root matched by a profile gets the profile",
            caller(0, 0, &[]),
            with_profiles(&profiles, &[], Unmatched::InstanceRole),
            Profile(2),
        ),
        (
            "root matched by none gets the instance role, even under deny",
            caller(0, 0, &[]),
            with_profiles(&profiles[..2], &[], Unmatched::Deny),
            InstanceRole(Grounds::Trusted),
        ),
        (
            "the agent's uid under deny",
            caller(999, 999, &[]),
            with_profiles(&profiles[..2], &[], Unmatched::Deny),
            InstanceRole(Grounds::Trusted),
        ),
        (
            "a supplementary group selects a profile",
            caller(1001, 1, &[50]),
            with_profiles(&profiles, &[], Unmatched::Deny),
            Profile(3),
        ),
        (
            "listed, unmatched, instance-role",
            caller(1002, 1002, &[]),
            with_profiles(&profiles, &[1002], Unmatched::InstanceRole),
            InstanceRole(Grounds::Uid),
        ),
        (
            "listed, unmatched, deny",
            caller(1002, 1002, &[]),
            with_profiles(&profiles, &[1002], Unmatched::Deny),
            NoProfile,
        ),
        (
            "not listed, unmatched",
            caller(1002, 1002, &[]),
            with_profiles(&profiles, &[], Unmatched::InstanceRole),
            Denied,
        ),
    ];
    for (name, c, r, want) in rows {
        assert_eq!(authorize(&c, r), want, "{name}");
        assert_eq!(
            want.is_allowed(),
            !matches!(want, Denied | NoProfile),
            "{name}"
        );
    }
}

#[test]
fn the_probe_refuses_process_selectors_it_cannot_serve_and_names_the_drop_in() {
    let uid_only = [profile(
        "ids",
        Selector {
            uid: Some(1),
            ..Selector::default()
        },
    )];
    let by_unit = [
        uid_only[0].clone(),
        profile(
            "web",
            Selector {
                unit: Some("/system.slice/web.service".into()),
                ..Selector::default()
            },
        ),
    ];
    // No process selector: nothing to check, even against a process that does not exist.
    assert!(probe::check_process_selectors_on(&uid_only, u32::MAX).is_ok());
    let e = probe::check_process_selectors_on(&by_unit, u32::MAX).unwrap_err();
    assert!(e.contains("[[profile]] \"web\" match"), "{e}");
    assert!(e.contains(probe::PROCESS_SELECTORS_DROP_IN), "{e}");
    // This process can read its own /proc entries.
    assert!(probe::check_process_selectors_on(&by_unit, std::process::id()).is_ok());
}

/// Over several processes the probe passes at the first readable one (an unreadable pid 1, as
/// in some sandboxes, does not make it refuse), and refuses when none is readable or there is
/// none to try.
#[test]
fn the_probe_passes_at_the_first_readable_process() {
    let by_exe = [profile(
        "app",
        Selector {
            exe: Some("/usr/bin/app".into()),
            ..Selector::default()
        },
    )];
    let me = std::process::id();
    assert!(probe::check_process_selectors_among(&by_exe, [u32::MAX, me]).is_ok());
    let e = probe::check_process_selectors_among(&by_exe, [u32::MAX, u32::MAX - 1]).unwrap_err();
    assert!(e.contains(&format!("/proc/{}/exe", u32::MAX)), "{e}");
    let e = probe::check_process_selectors_among(&by_exe, []).unwrap_err();
    assert!(e.contains("no other user's process is visible"), "{e}");
}

/// The cgroup v2 mount is found in `mountinfo` on unified and hybrid layouts.
#[test]
fn the_cgroup2_mount_is_read_from_mountinfo() {
    use crate::policy::selector::cgroup2_mount_in;
    let hybrid = "30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                  31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n\
                  32 30 0:28 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n";
    assert_eq!(
        cgroup2_mount_in(hybrid).as_deref(),
        Some(std::path::Path::new("/sys/fs/cgroup/unified"))
    );
    let unified = "29 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw\n";
    assert_eq!(
        cgroup2_mount_in(unified).as_deref(),
        Some(std::path::Path::new("/sys/fs/cgroup"))
    );
    assert_eq!(
        cgroup2_mount_in("1 0 0:1 / / rw - ext4 /dev/vda rw\n"),
        None
    );
}
