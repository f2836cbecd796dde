//! The loopback TCP listener (the "bridge"): the credentials-URI transport for the official SDKs
//! and the aliyun CLI, which cannot speak HTTP over a Unix socket
//! (`ALIBABA_CLOUD_CREDENTIALS_URI=http://127.0.0.1:17301/v1/credentials`).

pub mod config;
