//! `ecs-ak-audit`: finds long-term AccessKeys still in use, so they can be replaced by the
//! instance's RAM role (through `ecs-credential-agent`) and then disabled in RAM.
//!
//! Kept out of the agent: a separate package and binary, so the daemon's dependencies and attack
//! surface stay as they are.
//!
//! # Layout
//!
//! - [`cli`]: the command line (`actiontrail`, `scan`), exit statuses.
//! - [`actiontrail`]: reads ActionTrail events (OSS delivery, Log Service exports, `LookupEvents`
//!   pages), groups long-term AccessKey calls by AccessKeyId, VPC and source IP, attributes them
//!   to instances, and reports them; prints and reads back the equivalent Log Service queries.
//! - [`scan`]: finds AccessKeys written into files and running processes' environments.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod actiontrail;
pub mod cli;
pub mod scan;
