//! The README's "The emulator on its own" block works as written: the emulator's command line
//! runs this binary with flags it accepts and serves hardened-mode credentials, and the agent's
//! `serve` line and the `curl` line point at that emulator and at one socket.

mod common;

use std::io::BufRead;
use std::process::{Command, Stdio};

use common::{ROLE_LIST, TOKEN_PATH};
use ecs_metadata_emulator::{TOKEN_HEADER, TOKEN_TTL_HEADER};

const README: &str = include_str!("../../../README.md");

/// The lines of the `sh` block between the emulator-usage markers.
fn usage_block() -> Vec<&'static str> {
    let start = README
        .find("<!-- emulator-usage:begin")
        .expect("README has no emulator-usage block");
    let end = README[start..]
        .find("<!-- emulator-usage:end")
        .map(|n| start + n)
        .expect("the emulator-usage block has no end marker");
    README[start..end]
        .lines()
        .skip_while(|l| !l.starts_with("```sh"))
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .collect()
}

/// The words after `prefix` on the block's line that starts with it.
fn args_after(block: &[&'static str], prefix: &str) -> Vec<&'static str> {
    let line = block
        .iter()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in {block:#?}"));
    line[prefix.len()..].split_whitespace().collect()
}

fn value_of<'a>(args: &[&'a str], flag: &str) -> &'a str {
    let at = args.iter().position(|a| *a == flag);
    at.and_then(|i| args.get(i + 1))
        .unwrap_or_else(|| panic!("{flag} not in {args:?}"))
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
async fn the_readme_s_emulator_command_runs_and_the_agent_lines_match_it() {
    let block = usage_block();
    let mut emulator_args = args_after(&block, "cargo run -p ecs-metadata-emulator -- ");
    let serve_args = args_after(&block, "cargo run -p ecs-credential-agent -- serve ");
    let curl_args = args_after(&block, "curl ");

    let listen = value_of(&emulator_args, "--listen");
    assert_eq!(
        value_of(&serve_args, "--endpoint"),
        format!("http://{listen}")
    );
    assert_eq!(
        value_of(&curl_args, "--unix-socket"),
        value_of(&serve_args, "--socket")
    );

    // The README's flags as written, on a free port instead of its fixed one.
    let at = emulator_args.iter().position(|a| *a == "--listen").unwrap();
    emulator_args[at + 1] = "127.0.0.1:0";
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_ecs-metadata-emulator"))
            .args(&emulator_args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the emulator binary"),
    );
    let mut line = String::new();
    std::io::BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("no address line from {emulator_args:?}: {line:?}"))
        .to_owned();

    let client = reqwest::Client::new();
    let token = client
        .put(format!("{base}{TOKEN_PATH}"))
        .header(TOKEN_TTL_HEADER, "60")
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 200);
    let token = token.text().await.unwrap();
    let role = client
        .get(format!("{base}{ROLE_LIST}"))
        .header(TOKEN_HEADER, &token)
        .send()
        .await
        .unwrap();
    assert_eq!(role.status(), 200);
    assert!(!role.text().await.unwrap().is_empty());
}

/// The line of the `sh` block between the STS-emulator-usage markers.
fn sts_usage_line() -> Vec<&'static str> {
    let start = README
        .find("<!-- sts-emulator-usage:begin")
        .expect("README has no sts-emulator-usage block");
    let end = README[start..]
        .find("<!-- sts-emulator-usage:end")
        .map(|n| start + n)
        .expect("the sts-emulator-usage block has no end marker");
    let block: Vec<&str> = README[start..end]
        .lines()
        .skip_while(|l| !l.starts_with("```sh"))
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .collect();
    args_after(&block, "cargo run -p ecs-metadata-emulator -- ")
}

#[tokio::test]
async fn the_readme_s_sts_emulator_command_serves_https_with_its_ca_file() {
    let mut args: Vec<String> = sts_usage_line().into_iter().map(String::from).collect();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("sts-ca.pem");
    let ca_arg = ca_file.to_str().unwrap().to_owned();
    // The README's flags as written, on free ports and a private CA path.
    for (flag, value) in [
        ("--listen", "127.0.0.1:0"),
        ("--sts-listen", "127.0.0.1:0"),
        ("--sts-ca-file", ca_arg.as_str()),
    ] {
        let at = args
            .iter()
            .position(|a| a == flag)
            .unwrap_or_else(|| panic!("{flag} not in {args:?}"));
        args[at + 1] = value.to_owned();
    }
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_ecs-metadata-emulator"))
            .args(&args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the emulator binary"),
    );
    let mut lines = std::io::BufReader::new(child.0.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("listening on http://"), "{first:?}");
    let second = lines.next().unwrap().unwrap();
    let endpoint = second
        .strip_prefix("sts listening on ")
        .unwrap_or_else(|| panic!("no STS address line from {args:?}: {second:?}"));
    let addr: std::net::SocketAddr = endpoint.strip_prefix("https://").unwrap().parse().unwrap();

    // HTTPS trusting only the CA file: an unsigned request gets STS's JSON refusal.
    let pem = std::fs::read(&ca_file).expect("the CA file is written");
    let answer = common::sts::send_unsigned(addr, &pem).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.code(), "IncompleteSignature");
}
