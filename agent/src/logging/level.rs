//! Checking a log filter: `[log] level`, `--log-level` and `RUST_LOG`.
//!
//! The filter is `tracing_subscriber`'s `EnvFilter` syntax: comma-separated directives, each a
//! level (`info`) or a target with a level (`hyper=warn`, `ecs_credential_agent::server=debug`,
//! `audit=debug`). `EnvFilter` itself reads a bare word that is not a level as a *target* to
//! log at every level, so `warning` or `verbose` would silence every other line; here every
//! directive must carry one of [`LEVELS`] (any letter case), so a misspelt level is an error.

use tracing_subscriber::EnvFilter;

/// The levels a directive may name, most detailed first (`off` logs nothing but the audit
/// trail, which is written whatever the filter says).
pub const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Checks a log filter and returns it unchanged.
///
/// # Errors
/// A directive without one of [`LEVELS`], e.g. `"warning" is not a log level; expected one of
/// trace, debug, info, warn, error, off, or target=level directives such as "hyper=warn,info"`;
/// or a filter `EnvFilter` does not parse.
pub fn parse_level(filter: &str) -> Result<String, String> {
    for directive in filter.split(',') {
        let level = level_part(directive);
        if !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level)) {
            let what = if level == directive {
                format!("{level:?} is not a log level")
            } else {
                format!("{level:?} in {directive:?} is not a log level")
            };
            return Err(format!(
                "{what}; expected one of {}, or target=level directives such as \
                 \"hyper=warn,info\", got {filter:?}",
                LEVELS.join(", ")
            ));
        }
    }
    EnvFilter::builder()
        .parse(filter)
        .map(|_| filter.to_owned())
        .map_err(|e| format!("not a valid log filter ({e}), got {filter:?}"))
}

/// The level a directive names: what follows its last `=` outside a span filter
/// (`target[span{field=value}]=level`), or the whole directive when it has none.
fn level_part(directive: &str) -> &str {
    let mut depth = 0usize;
    let mut at = None;
    for (i, c) in directive.char_indices() {
        match c {
            '[' | '{' => depth += 1,
            ']' | '}' => depth = depth.saturating_sub(1),
            '=' if depth == 0 => at = Some(i),
            _ => {}
        }
    }
    at.map_or(directive, |i| &directive[i + 1..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_word_that_is_not_a_level_is_refused() {
        for bad in [
            "warning",
            "verbose",
            "hyper=warning",
            "info,hyper=loud",
            "hyper",
            "",
            "info,",
            "3",
        ] {
            let e = parse_level(bad).unwrap_err();
            assert!(
                e.contains("expected one of trace, debug, info, warn, error, off"),
                "{bad:?}: {e}"
            );
        }
        assert_eq!(
            parse_level("warning").unwrap_err(),
            "\"warning\" is not a log level; expected one of trace, debug, info, warn, error, \
             off, or target=level directives such as \"hyper=warn,info\", got \"warning\""
        );
        assert!(parse_level("hyper=warning")
            .unwrap_err()
            .starts_with("\"warning\" in \"hyper=warning\" is not a log level"));
    }

    #[test]
    fn levels_and_target_directives_are_accepted() {
        for good in [
            "info",
            "WARN",
            "off",
            "hyper=warn,info",
            "info,audit=debug",
            "ecs_credential_agent::server=debug",
            "info,h[span{field=value}]=debug",
        ] {
            assert_eq!(parse_level(good).as_deref(), Ok(good), "{good:?}");
        }
    }
}
