//! End-to-end tests of `ecs-credential-agent` live in `tests/`; this package also builds the
//! agent's command line as the binary `e2e-agent` so the tests can run it as a real process.
