//! The STS emulator against independent signers: Alibaba Cloud's Python SDKs, unmodified.
//! `tests/sdk/python/sts_check.py` calls `AssumeRole` on the emulator with the generated client
//! `alibabacloud-sts20150401` (V3, `ACS3-HMAC-SHA256`) using the instance role's credentials
//! from the metadata emulator, and with `alibabacloud-credentials`' RAM-role provider (RPC V2,
//! `HMAC-SHA1`) using a long-term AccessKey and the instance role's STS credentials; then shows
//! a request with one altered byte refused with `SignatureDoesNotMatch`. This test checks the
//! program's report against what the emulator saw.
//!
//! The SDKs come from `tests/sdk/setup.sh` (pinned: `tests/sdk/python/requirements.txt`, into
//! `tests/sdk/python/.venv`; `ECA_SDK_PYTHON` names another interpreter). Without them the test
//! prints `SKIPPED: …` and passes, unless `ECA_SDK_TESTS=required` (as `.ci/run` sets), where a
//! missing SDK fails it. Everything stays on loopback: both SDKs get explicit endpoints.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::sts::{INSTANCE_ROLE, ROLE_ARN};
use ecs_metadata_emulator::sts::{Principal, StsConfig, StsEmulator, TargetRole};
use ecs_metadata_emulator::{Emulator, EmulatorConfig};
use serde_json::Value;

/// How long the whole Python program may take (it takes about 1–2 s; generous for a loaded
/// machine and a cold interpreter).
const PROGRAM_WITHIN: Duration = Duration::from_secs(180);
const USER_KEY_ID: &str = "FAKE-SDK-SIGNER-ACCESS-KEY-ID";
const USER_KEY_SECRET: &str = "sdk-signer-check-secret";

fn required() -> bool {
    std::env::var("ECA_SDK_TESTS").as_deref() == Ok("required")
}

/// The venv's Python with both SDKs, or why there is none.
fn python() -> Result<PathBuf, String> {
    let python = std::env::var_os("ECA_SDK_PYTHON").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk/python/.venv/bin/python"),
        PathBuf::from,
    );
    if !python.exists() {
        return Err(format!(
            "no Python at {} (or ECA_SDK_PYTHON)",
            python.display()
        ));
    }
    let imports = std::process::Command::new(&python)
        .args([
            "-c",
            "import alibabacloud_credentials, alibabacloud_sts20150401",
        ])
        .output()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    if !imports.status.success() {
        return Err(format!(
            "{} cannot import alibabacloud_credentials and alibabacloud_sts20150401",
            python.display()
        ));
    }
    Ok(python)
}

#[tokio::test]
async fn official_sdk_signers_are_accepted_and_an_altered_byte_is_refused() {
    let python = match python() {
        Ok(python) => python,
        Err(why) => {
            assert!(
                !required(),
                "{why} (ECA_SDK_TESTS=required; run tests/sdk/setup.sh)"
            );
            eprintln!("SKIPPED: sdk_signers: {why} (tests/sdk/setup.sh installs the SDKs)");
            return;
        }
    };
    let metadata = Emulator::start_local(EmulatorConfig::default()).unwrap();
    let keys = metadata.key_store();
    keys.add_long_term("alice", USER_KEY_ID, USER_KEY_SECRET);
    let mut role = TargetRole::new(ROLE_ARN, INSTANCE_ROLE);
    role.permitted.push("alice".into());
    role.trusted.push("alice".into());
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("sts-ca.pem");
    let sts = StsEmulator::start(StsConfig {
        keys: keys.clone(),
        roles: vec![role],
        ca_file: Some(ca_file.clone()),
        ..StsConfig::default()
    })
    .unwrap();

    let program = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk/python/sts_check.py");
    let child = tokio::process::Command::new(&python)
        .arg(program)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .env("ECA_METADATA_ENDPOINT", metadata.endpoint())
        .env("ECA_STS_ENDPOINT", sts.addr().to_string())
        .env("ECA_STS_CA_FILE", &ca_file)
        .env("ECA_STS_ROLE_ARN", ROLE_ARN)
        .env(
            "ECA_STS_USER_AK",
            format!("{USER_KEY_ID}:{USER_KEY_SECRET}"),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run the Python check");
    let output = tokio::time::timeout(PROGRAM_WITHIN, child.wait_with_output())
        .await
        .expect("the Python check finishes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "sts_check.py failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let reports: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let report = |check: &str| {
        reports
            .iter()
            .find(|r| r["check"] == check)
            .unwrap_or_else(|| panic!("no {check} line in:\n{stdout}"))
    };
    report("done");

    // Every key the SDKs obtained is one this emulator issued for billing-app.
    for check in ["v3-sts20150401", "v2-ram-role-arn", "v2-chained"] {
        let id = report(check)["access_key_id"].as_str().unwrap().to_owned();
        let key = keys
            .get(&id)
            .unwrap_or_else(|| panic!("{check}: {id} not issued"));
        assert_eq!(
            key.principal,
            Principal::Role("billing-app".into()),
            "{check}"
        );
    }
    assert_eq!(
        report("instance-role")["access_key_id"],
        metadata.current_credentials().unwrap().access_key_id
    );
    for check in ["v3-tampered", "v2-tampered-signature", "v2-tampered-param"] {
        assert_eq!(report(check)["code"], "SignatureDoesNotMatch", "{check}");
        assert_eq!(report(check)["status"], 400, "{check}");
    }

    // What the emulator saw: one V3 success, three V2 ones (user, chained, the control), and
    // exactly the three altered requests refused.
    let counts = sts.counts();
    assert_eq!(counts.accepted_v3, 1, "{counts:?}");
    assert_eq!(counts.accepted_v2, 3, "{counts:?}");
    assert_eq!(counts.code("SignatureDoesNotMatch"), 3, "{counts:?}");
    assert_eq!(counts.total.refused, 3, "{counts:?}");
    assert_eq!(counts.role(ROLE_ARN).calls, 7, "{counts:?}");
}
