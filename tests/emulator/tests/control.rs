//! The `/_emulator/` control API and the binary.

mod common;

use std::io::BufRead;
use std::process::{Command, Stdio};

use common::{is_404_page, start, Fixture, ROLE_LIST};
use ecs_metadata_emulator::EmulatorConfig;
use serde_json::Value;

async fn control(f: &Fixture, method: &str, route: &str) -> (u16, Value) {
    let url = f.url(&format!("/_emulator/{route}"));
    let req = match method {
        "GET" => f.client.get(url),
        _ => f.client.post(url),
    };
    let a = common::answer(req.send().await.expect("control request")).await;
    assert_eq!(a.content_type, "application/json", "{route}");
    (
        a.status,
        serde_json::from_str(&a.body).expect("control JSON"),
    )
}

#[tokio::test]
async fn counts_and_reset_counts() {
    let f = start(EmulatorConfig::default());
    f.get_with_token(ROLE_LIST).await;
    let (status, counts) = control(&f, "GET", "counts").await;
    assert_eq!(status, 200);
    assert_eq!(counts["token_puts"], 1);
    assert_eq!(counts["tokens_issued"], 1);
    assert_eq!(counts["role_list_gets"], 1);
    assert_eq!(counts["total"], 2, "control requests are not counted");
    assert_eq!(control(&f, "POST", "reset-counts").await.0, 200);
    assert_eq!(control(&f, "GET", "counts").await.1["total"], 0);
}

#[tokio::test]
async fn faults_through_the_control_api() {
    let f = start(EmulatorConfig::default());
    let path = f.creds_path();
    let (status, _) = control(&f, "POST", "fault?endpoint=credentials&status=503&times=2").await;
    assert_eq!(status, 200);
    assert_eq!(f.get_with_token(&path).await.status, 503);
    assert_eq!(f.get_with_token(&path).await.status, 503);
    assert_eq!(f.get_with_token(&path).await.status, 200);

    control(
        &f,
        "POST",
        "fault?endpoint=any&kind=missing-field&field=SecurityToken&times=always",
    )
    .await;
    assert!(f.credentials().await.get("SecurityToken").is_none());
    assert_eq!(control(&f, "POST", "clear").await.0, 200);
    assert!(f.credentials().await.get("SecurityToken").is_some());

    let (status, error) = control(&f, "POST", "fault?endpoint=credentials&kind=nope").await;
    assert_eq!(status, 400);
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("unknown fault kind"),
        "{error}"
    );
}

#[tokio::test]
async fn role_rotation_and_tokens_through_the_control_api() {
    let f = start(EmulatorConfig::default());
    let token = f.token().await;
    let (_, served) = control(&f, "GET", "credentials").await;
    assert_eq!(served, f.credentials().await);

    assert_eq!(control(&f, "POST", "rotate").await.0, 200);
    let (_, rotated) = control(&f, "GET", "credentials").await;
    assert_ne!(rotated["AccessKeyId"], served["AccessKeyId"]);

    control(&f, "POST", "detach").await;
    assert!(is_404_page(&f.get(ROLE_LIST, Some(&token)).await));
    assert_eq!(control(&f, "GET", "credentials").await.0, 404);
    assert_eq!(control(&f, "POST", "rotate").await.0, 409);

    assert_eq!(control(&f, "POST", "attach?role=Other-Role.1").await.0, 200);
    assert_eq!(f.get(ROLE_LIST, Some(&token)).await.body, "Other-Role.1");
    assert_eq!(control(&f, "POST", "attach").await.0, 400);
    assert_eq!(control(&f, "POST", "attach?role=a%2Fb").await.0, 400);

    control(&f, "POST", "expire-tokens").await;
    assert_eq!(f.get(ROLE_LIST, Some(&token)).await.status, 401);
}

#[tokio::test]
async fn wrong_method_and_unknown_route() {
    let f = start(EmulatorConfig::default());
    assert_eq!(control(&f, "POST", "counts").await.0, 405);
    assert_eq!(control(&f, "GET", "rotate").await.0, 405);
    assert_eq!(control(&f, "GET", "nothing-here").await.0, 404);
}

#[tokio::test]
async fn control_api_can_be_switched_off() {
    let f = start(EmulatorConfig {
        control_api: false,
        hardened_only: false,
        ..EmulatorConfig::default()
    });
    let a = f.get("/_emulator/counts", None).await;
    assert!(is_404_page(&a), "served as an unknown metadata path: {a:?}");
    assert_eq!(f.emulator.counts().total, 1);
}

/// Kills the child process on drop, so a failed assertion does not leak it.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn binary_prints_its_address_and_serves() {
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_ecs-metadata-emulator"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--normal-mode",
                "--role-name",
                "Scripted",
            ])
            .args(["--lifetime-secs", "900", "--rotate-after-secs", "600"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the emulator binary"),
    );
    let mut line = String::new();
    let stdout = child.0.stdout.take().unwrap();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .expect("address line")
        .to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{line}");

    let client = reqwest::Client::new();
    let role = client
        .get(format!("{base}{ROLE_LIST}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        role.text().await.unwrap(),
        "Scripted",
        "tokenless in --normal-mode"
    );
    let creds: Value = client
        .get(format!("{base}/_emulator/credentials"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    let parse = |k: &str| {
        let s = creds[k].as_str().unwrap();
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
    };
    assert_eq!(
        (parse("Expiration") - parse("LastUpdated")).whole_seconds(),
        900
    );
}

#[test]
fn binary_rejects_a_bad_listen_address() {
    let out = Command::new(env!("CARGO_BIN_EXE_ecs-metadata-emulator"))
        .args(["--listen", "not-an-address"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
}
