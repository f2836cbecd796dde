//! Socket path resolution: builder → environment variable → default.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::{resolve_socket_path, Client, DEFAULT_SOCKET_PATH};

#[test]
fn builder_wins_then_env_then_default() {
    let explicit = Some(PathBuf::from("/explicit.sock"));
    let env = Some(OsString::from("/from-env.sock"));
    let cases = [
        (explicit.clone(), env.clone(), "/explicit.sock"),
        (explicit, None, "/explicit.sock"),
        (None, env, "/from-env.sock"),
        (None, Some(OsString::new()), DEFAULT_SOCKET_PATH),
        (None, None, DEFAULT_SOCKET_PATH),
    ];
    for (explicit, env, want) in cases {
        let got = resolve_socket_path(explicit.clone(), env.clone());
        assert_eq!(got, Path::new(want), "{explicit:?} {env:?}");
    }
}

#[test]
fn the_builder_uses_the_env_value() {
    let client = Client::builder().build_with_env(Some("/from-env.sock".into()));
    assert_eq!(client.socket_path(), Path::new("/from-env.sock"));
    let client = Client::builder()
        .socket_path("/explicit.sock")
        .build_with_env(Some("/from-env.sock".into()));
    assert_eq!(client.socket_path(), Path::new("/explicit.sock"));
}
