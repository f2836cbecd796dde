//! Secrets stay secret: no `Debug` of a type that can hold one prints it; no log line on any path
//! (errors, denials, metadata faults, a panic caught at the task boundary) carries one; and,
//! seen from outside the process, the agent writes no core file and is not dumpable.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ecs_credential_agent::credentials::{Issued, Source, State};
use ecs_credential_agent::sources::metadata::token::TokenCache;
use ecs_credential_agent_e2e::http::tcp_get;
use ecs_credential_agent_e2e::*;
use ecs_metadata_emulator::{Endpoint, Fault, Times};
use nix::sys::signal::Signal;
use secrecy::{ExposeSecret, SecretString};

/// The secrets of the emulator's current generation and every metadata token it issued.
fn emulator_secrets(emu: &ecs_metadata_emulator::Emulator, into: &mut Vec<String>) {
    if let Some(c) = emu.current_credentials() {
        into.push(c.access_key_secret.clone());
        into.push(c.security_token.clone());
    }
    into.extend(emu.issued_tokens());
    into.sort();
    into.dedup();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_of_every_type_that_can_hold_a_secret_never_prints_it() {
    let emu = emulator(Default::default()).await;
    // The agent's metadata client, with a metadata token cached and credentials fetched.
    let cfg = ecs_credential_agent::sources::metadata::config::Config {
        endpoint: emu.endpoint().parse().unwrap(),
        ..Default::default()
    };
    let time = Arc::new(ecs_credential_agent::time::SystemClock);
    let client = ecs_credential_agent::sources::metadata::Client::new(&cfg, time).unwrap();
    let fetched = client.fetch().await.expect("fetch from the emulator");
    let issued = Arc::new(
        Issued::new(
            1,
            fetched.role_name.clone(),
            &fetched.credentials,
            SystemTime::now(),
            tokio::time::Instant::now(),
            Duration::from_secs(60),
        )
        .unwrap(),
    );
    let state = State {
        credentials: Some(Arc::clone(&issued)),
        ..State::default()
    };
    let cache = TokenCache::new(Duration::from_secs(60));
    let marker_token = "TOKEN-MARKER-0f9e8d7c6b5a";
    cache
        .get_or_put(|| async { Ok(SecretString::from(marker_token)) })
        .await
        .unwrap();

    // The client library, with credentials cached, from a real agent.
    let agent = TestAgent::builder(agent_bin!(), &AgentConfig::new(&emu.endpoint()))
        .start()
        .await;
    let lib = ecs_credential_client::Client::builder()
        .socket_path(&agent.socket)
        .build();
    let lib_creds = lib.credentials().await.expect("credentials from the agent");
    let socket = agent.socket.clone();
    // A plain thread: the blocking client refuses to run inside a tokio runtime.
    let (blocking, blocking_creds) = std::thread::spawn(move || {
        let c = ecs_credential_client::blocking::Client::builder()
            .socket_path(socket)
            .build()
            .unwrap();
        let creds = c.credentials().unwrap();
        (c, creds)
    })
    .join()
    .unwrap();

    let mut secrets = vec![marker_token.to_owned()];
    emulator_secrets(&emu, &mut secrets);
    secrets.push(lib_creds.access_key_secret.expose_secret().to_owned());
    secrets.push(lib_creds.security_token.expose_secret().to_owned());
    let emulated = emu.current_credentials().unwrap();
    let shown = [
        ("agent Credentials", format!("{:?}", fetched.credentials)),
        ("agent Fetched", format!("{fetched:?}")),
        ("agent Issued", format!("{issued:?}")),
        ("agent State", format!("{state:?}")),
        ("agent metadata Client", format!("{client:?}")),
        ("agent TokenCache", format!("{cache:?}")),
        ("client-lib Credentials", format!("{lib_creds:?}")),
        ("client-lib Client", format!("{lib:?}")),
        ("client-lib blocking Client", format!("{blocking:?}")),
        (
            "client-lib blocking Credentials",
            format!("{blocking_creds:?}"),
        ),
        ("emulator EmulatedCredentials", format!("{emulated:?}")),
        ("emulator Emulator", format!("{emu:?}")),
    ];
    for (what, text) in &shown {
        assert!(text.len() > 20, "{what}: Debug printed almost nothing");
        assert_no_secret(text, &secrets, &format!("Debug of {what}"));
    }
    // What the redaction keeps: the non-secret fields are there.
    assert!(shown[2].1.contains(&issued.access_key_id), "{}", shown[2].1);
    assert!(shown[5].1.contains("redacted"));
    std::thread::spawn(move || drop(blocking)).join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_logs_on_any_path() {
    const PANIC_PATH: &str = "/test/panic";
    // Rotates every second, so many generations pass through every path.
    let emu = emulator(short_lived(4, 1)).await;
    let mut allowed = AgentConfig::new(&emu.endpoint());
    // Both transports: the socket and the loopback listener.
    let port_a = ecs_credential_agent_e2e::http::free_loopback_port();
    allowed
        .set("bridge", "listen", &format!("\"127.0.0.1:{port_a}\""))
        .env("RUST_LOG", "trace")
        .env("E2E_AGENT_PANIC_ON_PATH", PANIC_PATH)
        .set("metadata", "token_ttl_secs", "2");
    let mut a = TestAgent::builder(agent_bin!(), &allowed).start().await;
    // Every caller of this one is denied: no uid of ours is 4242, no gid is allowed, and root
    // and the agent's own uid are judged by those rules too (a test hook). It has an emulator
    // of its own, so every fault below is served to `a`.
    let emu_b = emulator(short_lived(4, 1)).await;
    let mut denying = allowed.clone();
    let port_b = ecs_credential_agent_e2e::http::free_loopback_port();
    denying
        .set("bridge", "listen", &format!("\"127.0.0.1:{port_b}\""))
        .set("metadata", "endpoint", &format!("{:?}", emu_b.endpoint()))
        .set("server", "allowed_uids", "[4242]")
        .env("E2E_AGENT_JUDGE_EVERY_UID", "1");
    let mut b = TestAgent::builder(agent_bin!(), &denying).start().await;
    let tcp_a: std::net::SocketAddr = format!("127.0.0.1:{port_a}").parse().unwrap();
    let tcp_b: std::net::SocketAddr = format!("127.0.0.1:{port_b}").parse().unwrap();

    let faults = [
        (Endpoint::Credentials, Fault::MalformedJson),
        (Endpoint::Credentials, Fault::HtmlWith200),
        (
            Endpoint::Credentials,
            Fault::MissingField("SecurityToken".into()),
        ),
        (
            Endpoint::Credentials,
            Fault::EmptyField("AccessKeySecret".into()),
        ),
        (Endpoint::Credentials, Fault::CodeNotSuccess),
        (Endpoint::Credentials, Fault::ExpiredCredentials),
        (Endpoint::Credentials, Fault::FractionalSecondsExpiration),
        (Endpoint::Credentials, Fault::NumericOffsetExpiration),
        (Endpoint::Credentials, Fault::OversizedBody(70_000)),
        (Endpoint::Credentials, Fault::Status(401)),
        (Endpoint::Credentials, Fault::Status(404)),
        (Endpoint::Credentials, Fault::Status(500)),
        (Endpoint::Credentials, Fault::Reset),
        (Endpoint::Token, Fault::Status(403)),
        (Endpoint::Token, Fault::Status(500)),
        (Endpoint::RoleList, Fault::Status(503)),
    ];
    let mut secrets = Vec::new();
    let mut answers = String::new();
    for (endpoint, fault) in faults {
        let served = |c: &ecs_metadata_emulator::Counts| match endpoint {
            Endpoint::Credentials => c.credential_gets,
            Endpoint::Token => c.token_puts,
            Endpoint::RoleList => c.role_list_gets,
            _ => unreachable!("no fault on {endpoint:?} here"),
        };
        let before = served(&emu.counts());
        emu.set_fault(endpoint, fault.clone(), Times::Next(2));
        for path in ["/v1/credentials", "/v1/health", "/metrics", "/nope"] {
            let r = a.get(path).await;
            if path == "/v1/credentials" && r.status == 200 {
                let v = r.json();
                secrets.push(v["AccessKeySecret"].as_str().unwrap().to_owned());
                secrets.push(v["SecurityToken"].as_str().unwrap().to_owned());
            } else {
                answers.push_str(&r.body);
            }
            let denied = b.get(path).await;
            assert_eq!(denied.status, 403, "{denied:?}");
            answers.push_str(&denied.body);
            // The same over the loopback listener.
            let r = tcp_get(tcp_a, path).await;
            if path == "/v1/credentials" && r.status == 200 {
                let v = r.json();
                secrets.push(v["AccessKeySecret"].as_str().unwrap().to_owned());
                secrets.push(v["SecurityToken"].as_str().unwrap().to_owned());
            } else {
                answers.push_str(&r.body);
            }
            let denied = tcp_get(tcp_b, path).await;
            assert_eq!(denied.status, 403, "over TCP: {denied:?}");
            answers.push_str(&denied.body);
        }
        let panicked = a.get(PANIC_PATH).await;
        assert_eq!(panicked.status, 500, "{panicked:?}");
        answers.push_str(&panicked.body);
        // Both faulty answers go to the agent's refresher (on its schedule and retries) before
        // the next fault replaces them.
        let taken = eventually(Duration::from_secs(60), || async {
            (served(&emu.counts()) >= before + 2).then_some(())
        })
        .await;
        assert!(
            taken.is_some(),
            "{fault:?} on {endpoint:?} not served twice within 60 s"
        );
        emulator_secrets(&emu, &mut secrets);
    }
    emu.clear_faults();
    // Serving again after all that (the last faults may have outlived the credentials, so the
    // refresher's next retry brings them back).
    let served = eventually(Duration::from_secs(60), || async {
        (a.get("/v1/credentials").await.status == 200).then_some(())
    })
    .await;
    assert!(
        served.is_some(),
        "no credentials within 60 s of the faults ending"
    );
    a.stop(Signal::SIGTERM);
    b.stop(Signal::SIGTERM);
    emulator_secrets(&emu, &mut secrets);
    emulator_secrets(&emu_b, &mut secrets);
    let (logs_a, logs_b) = (a.logs(), b.logs());

    // Every path was taken.
    for (needle, logs) in [
        ("request handler panicked", &logs_a),
        ("panicked at", &logs_a),    // the default panic hook's line
        ("** redacted **", &logs_a), // the held State's Debug, in the panic message
        ("invalid response", &logs_a),
        ("renewing metadata token", &logs_a),
        ("denied", &logs_b),
    ] {
        assert!(logs.contains(needle), "no {needle:?} in the logs:\n{logs}");
    }
    // How many distinct values are seen depends on timing (rotations, token renewals); what
    // matters is that credentials and several metadata tokens are among them.
    let tokens = emu.issued_tokens().len();
    secrets.sort();
    secrets.dedup();
    assert!(tokens >= 2, "only {tokens} metadata tokens issued");
    assert!(
        secrets.len() >= tokens + 2,
        "only {} distinct secrets seen",
        secrets.len()
    );
    assert_no_secret(&logs_a, &secrets, "the allowed agent's logs");
    assert_no_secret(&logs_b, &secrets, "the denying agent's logs");
    assert_no_secret(&answers, &secrets, "an error, health or metrics answer");
    println!(
        "secrets: {} log lines and {} answer bytes scanned for {} secrets, secrets in logs 0",
        logs_a.lines().count() + logs_b.lines().count(),
        answers.len(),
        secrets.len()
    );
}

/// The values of `Max core file size` in `/proc/<pid>/limits` (soft, hard).
fn core_limit(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect("a core limit line");
    let mut fields = line["Max core file size".len()..].split_whitespace();
    (
        fields.next().unwrap().to_owned(),
        fields.next().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_core_dumps_and_not_dumpable_seen_from_outside() {
    require_root!();
    use std::os::unix::fs::MetadataExt;
    if !nobody::have_setpriv() {
        return;
    }
    let emu = emulator(Default::default()).await;
    // The agent runs as nobody, so it needs a socket directory nobody can write.
    let (dir, socket) = nobody::socket_dir_for_nobody();
    let mut config = AgentConfig::new(&emu.endpoint());
    config.set("server", "allowed_uids", "[0]");
    // The builder writes the configuration file world-readable (0644), as nobody must read it.
    let agent = TestAgent::builder(agent_bin!(), &config)
        .dir(dir)
        .socket(socket)
        .via(nobody::setpriv())
        .start()
        .await;
    // Root (allowed) gets credentials from the non-root agent.
    agent.credentials().await;

    let pid = agent.child.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == "65534"),
        "the agent is not running as nobody: {uid_line}"
    );
    assert_eq!(core_limit(pid), ("0".to_owned(), "0".to_owned()));
    // A dumpable process's /proc/<pid> files belong to its own uid; a non-dumpable one's to root.
    for file in ["status", "environ", "mem", "maps"] {
        let meta = std::fs::metadata(format!("/proc/{pid}/{file}")).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (0, 0),
            "/proc/{pid}/{file} is not owned by root: the agent is dumpable"
        );
    }
    // The control: an ordinary process as nobody owns its /proc files.
    let mut control = nobody::setpriv().args(["sleep", "60"]).spawn().unwrap();
    // setpriv drops to nobody, then execs sleep: once the process is `sleep`, it is nobody's.
    let comm = format!("/proc/{}/comm", control.id());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&comm).unwrap_or_default().trim() != "sleep" {
        assert!(
            std::time::Instant::now() < deadline,
            "setpriv did not exec sleep within 30 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let meta = std::fs::metadata(format!("/proc/{}/status", control.id())).unwrap();
    let _ = control.kill();
    let _ = control.wait();
    assert_eq!(meta.uid(), NOBODY, "the control process's /proc files");
    println!("secrets: agent pid {pid} as uid 65534: Max core file size 0 0, /proc/{pid} owned by root (not dumpable)");
}
