//! The rule of [`super`], one test per row and per attack. Ownership is set with `lchown(2)`
//! (`fchownat(AT_SYMLINK_NOFOLLOW)`), so these need root; they say SKIPPED otherwise.

use std::os::unix::fs::{lchown, symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use super::*;

/// `nobody`: another non-root user.
const OTHER: u32 = 65534;

fn is_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("SKIPPED: needs root to give files to uid {OTHER}");
    false
}

/// A private (root-owned, 0755) directory under the system's temporary directory, with a
/// directory `safe` holding a file `agent.sock`.
fn tree() -> (tempfile::TempDir, PathBuf) {
    let top = tempfile::tempdir().unwrap();
    std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let safe = top.path().join("safe");
    std::fs::create_dir(&safe).unwrap();
    std::fs::set_permissions(&safe, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(safe.join("agent.sock"), b"").unwrap();
    (top, safe)
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn safe_path_and_root_owned_link_to_a_safe_directory_accepted() {
    let (top, safe) = tree();
    check_socket_path(&safe.join("agent.sock")).unwrap();
    let link = top.path().join("link");
    symlink(&safe, &link).unwrap();
    check_socket_path(&link.join("agent.sock")).unwrap();
    // Relative targets and `..` resolve from the link's directory, as the kernel does.
    let rel = top.path().join("rel");
    symlink("safe", &rel).unwrap();
    check_socket_path(&rel.join("agent.sock")).unwrap();
    check_socket_path(&rel.join("..").join("safe").join("agent.sock")).unwrap();
}

#[test]
fn symlink_owned_by_another_user_refused() {
    if !is_root() {
        return;
    }
    let (top, safe) = tree();
    let link = top.path().join("link");
    symlink(&safe, &link).unwrap();
    lchown(&link, Some(OTHER), None).unwrap();
    // The link itself, not its target, was given away.
    assert_eq!(std::fs::metadata(&safe).unwrap().uid(), 0);
    let err = check_socket_path(&link.join("agent.sock")).unwrap_err();
    assert!(
        matches!(&err, UnsafeSocketPath::ForeignOwner { path, kind: "symbolic link", uid: OTHER, .. } if path == &link),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains(&*link.to_string_lossy()), "{text}");
    assert!(text.contains("uid 65534"), "{text}");
    // The same link at the last component (a link to the socket itself).
    let sock_link = safe.join("sock-link");
    symlink(safe.join("agent.sock"), &sock_link).unwrap();
    lchown(&sock_link, Some(OTHER), None).unwrap();
    let err = check_socket_path(&sock_link).unwrap_err();
    assert!(
        matches!(err, UnsafeSocketPath::ForeignOwner { .. }),
        "{err}"
    );
    // Trusted when it is this process's own user.
    check_as(&link.join("agent.sock"), OTHER).unwrap();
}

#[test]
fn directory_writable_by_others_without_sticky_bit_refused() {
    for mode in [0o777, 0o757, 0o775, 0o2775] {
        let (_top, safe) = tree();
        chmod(&safe, mode);
        let err = check_socket_path(&safe.join("agent.sock")).unwrap_err();
        assert!(
            matches!(&err, UnsafeSocketPath::OpenDirectory { path, mode: m } if path == &safe && *m == mode),
            "{mode:o}: {err}"
        );
        assert!(err.to_string().contains("chmod go-w"), "{err}");
    }
}

#[test]
fn directory_owned_by_another_user_refused() {
    if !is_root() {
        return;
    }
    let (_top, safe) = tree();
    std::os::unix::fs::chown(&safe, Some(OTHER), None).unwrap();
    let err = check_socket_path(&safe.join("agent.sock")).unwrap_err();
    assert!(
        matches!(&err, UnsafeSocketPath::ForeignOwner { path, kind: "directory", uid: OTHER, .. } if path == &safe),
        "{err}"
    );
}

/// The attack of issue 10 item 4: in a sticky, world-writable directory like `/tmp`, another
/// user's link to a root-owned directory can be repointed later; root's entries cannot.
#[test]
fn sticky_directory_trusts_only_entries_of_root_and_this_user() {
    if !is_root() {
        return;
    }
    let (top, safe) = tree();
    let tmp = top.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    chmod(&tmp, 0o1777);
    // A root-owned directory and link in it are fine.
    let dir = tmp.join("dir");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("agent.sock"), b"").unwrap();
    check_socket_path(&dir.join("agent.sock")).unwrap();
    let root_link = tmp.join("root-link");
    symlink(&safe, &root_link).unwrap();
    check_socket_path(&root_link.join("agent.sock")).unwrap();
    // Another user's link in it is refused, though it points at a safe directory.
    let ecsdir = tmp.join("ecsdir");
    symlink(&safe, &ecsdir).unwrap();
    lchown(&ecsdir, Some(OTHER), None).unwrap();
    let err = check_socket_path(&ecsdir.join("agent.sock")).unwrap_err();
    assert!(
        matches!(&err, UnsafeSocketPath::ForeignOwner { path, uid: OTHER, .. } if path == &ecsdir),
        "{err}"
    );
    // A socket right in the sticky directory: only if root's or ours.
    let sock = tmp.join("agent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    check_socket_path(&sock).unwrap();
    lchown(&sock, Some(OTHER), None).unwrap();
    let err = check_socket_path(&sock).unwrap_err();
    assert!(
        matches!(&err, UnsafeSocketPath::ForeignOwner { path, kind: "socket", .. } if path == &sock),
        "{err}"
    );
    // In a directory only root may write to, whoever owns the socket, root put it there.
    lchown(safe.join("agent.sock"), Some(OTHER), None).unwrap();
    check_socket_path(&safe.join("agent.sock")).unwrap();
}

#[test]
fn root_owned_link_into_an_unsafe_directory_refused() {
    let (top, safe) = tree();
    let open = top.path().join("open");
    std::fs::create_dir_all(open.join("sub")).unwrap();
    chmod(&open, 0o777);
    std::fs::write(open.join("sub").join("agent.sock"), b"").unwrap();
    let link = safe.join("link");
    symlink(open.join("sub"), &link).unwrap();
    let err = check_socket_path(&link.join("agent.sock")).unwrap_err();
    assert!(
        matches!(&err, UnsafeSocketPath::OpenDirectory { path, .. } if path == &open),
        "{err}"
    );
}

#[test]
fn relative_missing_non_directory_and_looping_paths_refused() {
    let (top, safe) = tree();
    let err = check_socket_path(Path::new("run/agent.sock")).unwrap_err();
    assert!(matches!(err, UnsafeSocketPath::Relative { .. }), "{err}");

    let missing = safe.join("nope").join("agent.sock");
    let err = check_socket_path(&missing).unwrap_err();
    assert!(
        matches!(&err, UnsafeSocketPath::Inspect { path, source } if path == &safe.join("nope") && source.kind() == io::ErrorKind::NotFound),
        "{err}"
    );

    let err = check_socket_path(&safe.join("agent.sock").join("x")).unwrap_err();
    assert!(
        matches!(err, UnsafeSocketPath::NotADirectory { .. }),
        "{err}"
    );

    let a = top.path().join("a");
    symlink(top.path().join("b"), &a).unwrap();
    symlink(&a, top.path().join("b")).unwrap();
    let err = check_socket_path(&a.join("agent.sock")).unwrap_err();
    assert!(
        matches!(err, UnsafeSocketPath::TooManyLinks { .. }),
        "{err}"
    );
}
