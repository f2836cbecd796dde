//! `Config::parse`: never panics, is deterministic, and an accepted configuration is within the
//! documented bounds; a rejected one lists at least one problem, each on one line.
#![no_main]

use ecs_credential_agent::config::Config;
use ecs_credential_agent::sources::metadata::client::parse_endpoint;
use ecs_credential_agent::sources::metadata::response::check_role_name;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let first = Config::parse("fuzz.toml", text);
    assert_eq!(first, Config::parse("fuzz.toml", text));
    match first {
        Ok(c) => {
            let ttl = c.metadata.token_ttl.as_secs();
            assert!((1..=21_600).contains(&ttl), "token_ttl {ttl}");
            assert!(c.server.max_connections >= 1);
            assert!(c.server.socket_path.as_os_str().len() <= 107);
            assert!(c.server.socket_mode <= 0o7777);
            assert!(c.credentials.backoff_initial > std::time::Duration::ZERO);
            assert!(
                parse_endpoint(&c.metadata.endpoint).is_ok(),
                "{:?}",
                c.metadata.endpoint
            );
            if let Some(r) = &c.metadata.role_name {
                assert!(check_role_name(r).is_ok(), "{r:?}");
            }
        }
        Err(e) => {
            assert!(!e.problems.is_empty());
            for p in &e.problems {
                assert!(!p.contains('\n'), "{p:?}");
            }
        }
    }
});
