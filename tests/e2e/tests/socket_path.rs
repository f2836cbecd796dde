//! End-to-end: a socket path another user could redirect (issue 10 item 4). A user made
//! `/tmp/ecsdir -> <a root-owned directory>` before root started the agent on
//! `/tmp/ecsdir/agent.sock`, then repointed the link at a directory of their own holding a fake
//! agent, and root's `ecs-credential-agent get` took the fake credentials. Now the agent refuses
//! to start on such a path, and `get` refuses to connect through it (exit 78), while a
//! root-owned link in the same sticky directory works end to end.

use std::os::unix::fs::{lchown, symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ecs_credential_agent_e2e::*;
use nix::sys::signal::Signal;

/// `get`'s exit status for an unsafe socket path (`EX_CONFIG`).
const EXIT_UNSAFE_SOCKET_PATH: i32 = 78;

/// A 0755 directory holding `tmp` (mode 1777, like `/tmp`) and `real` (root-owned, 0755).
struct Scene {
    top: tempfile::TempDir,
}

impl Scene {
    fn new() -> Scene {
        let top = tempfile::tempdir().unwrap();
        std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let scene = Scene { top };
        for (name, mode) in [("tmp", 0o1777), ("real", 0o755)] {
            std::fs::create_dir(scene.path(name)).unwrap();
            std::fs::set_permissions(scene.path(name), std::fs::Permissions::from_mode(mode))
                .unwrap();
        }
        scene
    }

    fn path(&self, name: &str) -> PathBuf {
        self.top.path().join(name)
    }

    /// `tmp/NAME -> target`, owned by `uid`.
    fn link(&self, name: &str, target: &Path, uid: u32) -> PathBuf {
        let link = self.path("tmp").join(name);
        symlink(target, &link).unwrap();
        lchown(&link, Some(uid), None).unwrap();
        link
    }
}

fn get(socket: &Path) -> std::process::Output {
    std::process::Command::new(agent_bin!())
        .args(["get", "--socket"])
        .arg(socket)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_refuses_a_socket_directory_behind_another_users_link() {
    require_root!();
    let scene = Scene::new();
    let ecsdir = scene.link("ecsdir", &scene.path("real"), NOBODY);
    let emu = emulator(Default::default()).await;
    let mut agent = TestAgent::builder(agent_bin!(), &AgentConfig::new(&emu.endpoint()))
        .socket(ecsdir.join("agent.sock"))
        .spawn();
    let status = agent
        .wait_exit(Duration::from_secs(30))
        .expect("the agent refuses to start");
    assert!(!status.success(), "{status:?}");
    let logs = agent.logs();
    assert!(
        logs.contains(&*ecsdir.to_string_lossy()) && logs.contains("uid 65534"),
        "the message names the link and its owner: {logs}"
    );
    let created: Vec<_> = std::fs::read_dir(scene.path("real")).unwrap().collect();
    assert!(
        created.is_empty(),
        "nothing created behind the link: {created:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_refuses_a_fake_agent_behind_another_users_link() {
    require_root!();
    let scene = Scene::new();
    // The user's own directory, with a "fake agent" that would answer anything.
    let theirs = scene.path("theirs");
    std::fs::create_dir(&theirs).unwrap();
    nix::unistd::chown(&theirs, Some(nix::unistd::Uid::from_raw(NOBODY)), None).unwrap();
    let fake = std::os::unix::net::UnixListener::bind(theirs.join("agent.sock")).unwrap();
    fake.set_nonblocking(true).unwrap();
    let ecsdir = scene.link("ecsdir", &theirs, NOBODY);

    let out = get(&ecsdir.join("agent.sock"));
    assert_eq!(out.status.code(), Some(EXIT_UNSAFE_SOCKET_PATH), "{out:?}");
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&*ecsdir.to_string_lossy()) && stderr.contains("uid 65534"),
        "{stderr}"
    );
    match fake.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the fake agent was contacted: {other:?}"),
    }

    // Through a root-owned link to the user's directory: the directory is refused instead.
    let rootlink = scene.link("rootlink", &theirs, 0);
    let out = get(&rootlink.join("agent.sock"));
    assert_eq!(out.status.code(), Some(EXIT_UNSAFE_SOCKET_PATH), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&*theirs.to_string_lossy()));
    assert!(fake.accept().is_err(), "still never contacted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_owned_link_in_a_sticky_directory_serves_and_cleans_up() {
    require_root!();
    let scene = Scene::new();
    let rundir = scene.link("rundir", &scene.path("real"), 0);
    let socket = rundir.join("agent.sock");
    let emu = emulator(Default::default()).await;
    let mut agent = TestAgent::builder(agent_bin!(), &AgentConfig::new(&emu.endpoint()))
        .socket(&socket)
        .start()
        .await;
    let out = get(&socket);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let served: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(served, agent.credentials().await);

    assert!(agent.stop(Signal::SIGTERM).success());
    assert!(
        !scene.path("real").join("agent.sock").exists(),
        "the socket is removed at shutdown: {}",
        agent.logs()
    );
}
