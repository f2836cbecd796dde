//! `Config::parse`: never panics, is deterministic, and an accepted configuration is within the
//! bounds its key declarations give (`Config::bounded_values`, not restated here) and reads back
//! to itself from `Config::to_toml` (every checked value — endpoint, role name, socket path and
//! mode, addresses — survives its own check again); a rejected one lists at least one problem,
//! each on one line.
#![no_main]

use ecs_credential_agent::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let first = Config::parse("fuzz.toml", text);
    assert_eq!(first, Config::parse("fuzz.toml", text));
    match first {
        Ok(c) => {
            for (key, value, min, max) in c.bounded_values() {
                assert!((min..=max).contains(&value), "{key} = {value}");
            }
            let again = Config::parse("rendered", &c.to_toml())
                .unwrap_or_else(|e| panic!("{e}\n{}", c.to_toml()));
            assert_eq!(again, c);
        }
        Err(e) => {
            assert!(!e.problems.is_empty());
            for p in &e.problems {
                assert!(!p.contains('\n'), "{p:?}");
            }
        }
    }
});
