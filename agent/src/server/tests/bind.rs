//! Binding the socket safely.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::*;
use crate::server::SocketBindError;
use ecs_credential_client::UnsafeSocketPath;

fn cfg_in(dir: &Path) -> ServerConfig {
    test_config(dir)
}

fn mode_of(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

#[tokio::test]
async fn default_mode_is_0600_and_no_temporary_left() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = cfg_in(dir.path());
    let l = Listener::bind(&cfg).unwrap();
    assert!(l.created_socket());
    let meta = std::fs::symlink_metadata(&cfg.socket_path).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()));
    assert_eq!(mode_of(&cfg.socket_path), 0o600);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("agent.sock")]);
    UnixStream::connect(&cfg.socket_path)
        .await
        .expect("connectable after the rename");
}

#[tokio::test]
async fn mode_and_group_applied() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = cfg_in(dir.path());
    cfg.socket_mode = 0o660;
    cfg.socket_group = Some("1".to_owned());
    let _l = Listener::bind(&cfg).unwrap();
    assert_eq!(mode_of(&cfg.socket_path), 0o660);
    assert_eq!(std::fs::metadata(&cfg.socket_path).unwrap().gid(), 1);

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = cfg_in(dir.path());
    cfg.socket_group = Some("root".to_owned());
    let _l = Listener::bind(&cfg).unwrap();
    assert_eq!(std::fs::metadata(&cfg.socket_path).unwrap().gid(), 0);

    let mut cfg = cfg_in(tempfile::tempdir().unwrap().path());
    cfg.socket_group = Some("no-such-group-x7".to_owned());
    assert!(matches!(
        Listener::bind(&cfg),
        Err(SocketBindError::UnknownGroup { .. })
    ));
}

#[tokio::test]
async fn missing_parent_created_0755() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = cfg_in(dir.path());
    cfg.socket_path = dir.path().join("run").join("agent.sock");
    let _l = Listener::bind(&cfg).unwrap();
    assert_eq!(mode_of(&dir.path().join("run")), 0o755);
}

#[tokio::test]
async fn symlink_and_regular_file_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = cfg_in(dir.path());
    let target = dir.path().join("target");
    std::fs::write(&target, b"keep").unwrap();
    std::os::unix::fs::symlink(&target, &cfg.socket_path).unwrap();
    let err = Listener::bind(&cfg).unwrap_err();
    assert!(matches!(err, SocketBindError::Symlink(_)), "{err}");
    assert!(err.to_string().contains("agent.sock"), "{err}");
    std::fs::remove_file(&cfg.socket_path).unwrap();

    std::fs::write(&cfg.socket_path, b"data").unwrap();
    let err = Listener::bind(&cfg).unwrap_err();
    assert!(matches!(err, SocketBindError::NotASocket(_)), "{err}");
    assert_eq!(std::fs::read(&cfg.socket_path).unwrap(), b"data");
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");
}

#[tokio::test]
async fn writable_or_foreign_parent_refused() {
    for mode in [0o777, 0o1777, 0o775, 0o757] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        let err = Listener::bind(&cfg_in(dir.path())).unwrap_err();
        assert!(
            matches!(err, SocketBindError::ParentWritable { .. }),
            "{mode:o}: {err}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    nix::unistd::chown(dir.path(), Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    let err = Listener::bind(&cfg_in(dir.path())).unwrap_err();
    assert!(
        matches!(err, SocketBindError::ParentOwner { uid: 65534, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn stale_socket_replaced_live_one_kept() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = cfg_in(dir.path());
    drop(std::os::unix::net::UnixListener::bind(&cfg.socket_path).unwrap());
    let first = Listener::bind(&cfg).expect("stale socket replaced");
    let err = Listener::bind(&cfg).unwrap_err();
    assert!(matches!(err, SocketBindError::AlreadyServing(_)), "{err}");
    assert!(first.created_socket());
    UnixStream::connect(&cfg.socket_path)
        .await
        .expect("the first agent's socket is intact");
}

#[tokio::test]
async fn remove_socket_removes_only_our_own() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = cfg_in(dir.path());
    let ours = Listener::bind(&cfg).unwrap();
    assert!(ours.remove_socket().unwrap());
    assert!(!cfg.socket_path.exists());
    assert!(!ours.remove_socket().unwrap(), "already gone");

    // Another agent replaced the file: not ours any more.
    let ours = Listener::bind(&cfg).unwrap();
    std::fs::remove_file(&cfg.socket_path).unwrap();
    let _other = std::os::unix::net::UnixListener::bind(&cfg.socket_path).unwrap();
    assert!(!ours.remove_socket().unwrap());
    assert!(cfg.socket_path.exists());

    // A handed-over socket is never unlinked.
    let handed =
        Listener::from_std(_other.try_clone().unwrap(), Some(cfg.socket_path.clone())).unwrap();
    assert!(!handed.created_socket());
    assert!(!handed.remove_socket().unwrap());
    assert!(cfg.socket_path.exists());
}

#[tokio::test]
async fn no_parent_refused() {
    let cfg = ServerConfig {
        socket_path: PathBuf::from("/"),
        ..ServerConfig::default()
    };
    assert!(matches!(
        Listener::bind(&cfg),
        Err(SocketBindError::NoParent(_))
    ));
}

#[tokio::test]
async fn unsafe_ancestors_refused_even_through_a_symlink() {
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root to chown to 65534");
        return;
    }
    let top = tempfile::tempdir().unwrap();
    // A grandparent owned by another user: it could rename `sub` away.
    let foreign = top.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    let sub = foreign.join("sub");
    std::fs::create_dir(&sub).unwrap();
    nix::unistd::chown(&foreign, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    let err = Listener::bind(&cfg_in(&sub)).unwrap_err();
    assert!(
        matches!(&err, SocketBindError::UnsafePath { source: UnsafeSocketPath::ForeignOwner { path, uid: 65534, .. }, .. } if path == &foreign),
        "{err}"
    );
    // A group-writable grandparent without the sticky bit.
    let open = top.path().join("open");
    std::fs::create_dir_all(open.join("sub")).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o775)).unwrap();
    let err = Listener::bind(&cfg_in(&open.join("sub"))).unwrap_err();
    assert!(
        matches!(&err, SocketBindError::UnsafePath { source: UnsafeSocketPath::OpenDirectory { path, .. }, .. } if path == &open),
        "{err}"
    );
    // A symlinked parent that lives in a foreign directory.
    let real = top.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = sub.join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let err = Listener::bind(&cfg_in(&link)).unwrap_err();
    assert!(
        matches!(&err, SocketBindError::UnsafePath { source: UnsafeSocketPath::ForeignOwner { path, .. }, .. } if path == &foreign),
        "{err}"
    );
    // A sticky, world-writable ancestor (like /tmp) is fine, and so is a safe chain.
    let sticky = top.path().join("sticky");
    std::fs::create_dir_all(sticky.join("ok")).unwrap();
    std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let listener = Listener::bind(&cfg_in(&sticky.join("ok"))).unwrap();
    listener.remove_socket().unwrap();
}

/// Issue 10 item 6: every length the configuration accepts binds, up to the longest (107
/// bytes, `sun_path` without its NUL), with long and one-byte file names; one byte more is
/// refused by the configuration, saying why.
#[tokio::test]
async fn every_accepted_socket_path_length_binds() {
    use crate::server::config::{validate_socket_path, MAX_SOCKET_PATH_BYTES};
    use std::os::unix::ffi::OsStrExt;

    let top = tempfile::tempdir().unwrap();
    let mut bound = 0;
    for file in ["agent.sock", "s"] {
        for len in 80..=MAX_SOCKET_PATH_BYTES {
            // top/FILE-LEN/ddd…d/FILE, `len` bytes in all.
            let case = top.path().join(format!("{file}-{len}"));
            let used = case.as_os_str().as_bytes().len() + 2 + file.len();
            let Some(pad) = len.checked_sub(used).filter(|&p| p > 0) else {
                continue;
            };
            let parent = case.join("d".repeat(pad));
            std::fs::create_dir_all(parent.parent().unwrap()).unwrap();
            let mut cfg = cfg_in(&parent);
            cfg.socket_path = parent.join(file);
            assert_eq!(cfg.socket_path.as_os_str().as_bytes().len(), len);
            validate_socket_path(&cfg.socket_path).expect("accepted by the configuration");
            let listener = Listener::bind(&cfg)
                .unwrap_or_else(|e| panic!("{len} bytes ({file}) must bind: {e}"));
            UnixStream::connect(&cfg.socket_path)
                .await
                .unwrap_or_else(|e| panic!("{len} bytes ({file}): connect: {e}"));
            let names: Vec<_> = std::fs::read_dir(&parent)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(
                names,
                vec![std::ffi::OsString::from(file)],
                "no temporary left"
            );
            assert!(listener.remove_socket().unwrap());
            bound += 1;
        }
    }
    assert!(
        bound >= 2 * 20,
        "only {bound} lengths tried: temporary directory too long?"
    );

    let too_long = PathBuf::from(format!("/{}", "a".repeat(MAX_SOCKET_PATH_BYTES)));
    let err = validate_socket_path(&too_long).unwrap_err();
    assert!(
        err.contains("108 bytes") && err.contains("at most 107 bytes"),
        "{err}"
    );
}

/// Issue 10 item 4: root is asked to serve on `/tmp/ecsdir/agent.sock` where `/tmp/ecsdir` is
/// another user's link to a root-owned directory, which that user could later repoint at
/// their own directory holding a fake agent. Refused, naming the link; nothing is created.
/// A root-owned link in the same place is followed, and the socket is removed through it.
#[tokio::test]
async fn socket_directory_behind_another_users_link_refused() {
    use std::os::unix::fs::{lchown, symlink};
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root to give a link to uid 65534");
        return;
    }
    let top = tempfile::tempdir().unwrap();
    let tmp = top.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let real = top.path().join("real");
    std::fs::create_dir(&real).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ecsdir = tmp.join("ecsdir");
    symlink(&real, &ecsdir).unwrap();
    lchown(&ecsdir, Some(65534), None).unwrap();
    let err = Listener::bind(&cfg_in(&ecsdir)).unwrap_err();
    assert!(
        matches!(&err, SocketBindError::UnsafePath { source: UnsafeSocketPath::ForeignOwner { path, kind: "symbolic link", uid: 65534, .. }, .. } if path == &ecsdir),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&*ecsdir.to_string_lossy()) && text.contains("uid 65534"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_dir(&real).unwrap().count(),
        0,
        "nothing created"
    );

    // A link of root's own (only root may repoint it, even in a sticky directory) is fine.
    let rootdir = tmp.join("rootdir");
    symlink(&real, &rootdir).unwrap();
    let cfg = cfg_in(&rootdir);
    let listener = Listener::bind(&cfg).unwrap();
    UnixStream::connect(&cfg.socket_path).await.unwrap();
    // Root repoints it while the agent runs: at shutdown, the socket the path now leads to is
    // not touched, and the agent's own is removed from the directory it was created in.
    let other = top.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let _theirs = std::os::unix::net::UnixListener::bind(other.join("agent.sock")).unwrap();
    std::fs::remove_file(&rootdir).unwrap();
    symlink(&other, &rootdir).unwrap();
    assert!(listener.remove_socket().unwrap());
    assert!(other.join("agent.sock").exists());
    assert_eq!(std::fs::read_dir(&real).unwrap().count(), 0);
    assert!(!listener.remove_socket().unwrap(), "already gone");
}
