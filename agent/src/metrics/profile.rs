//! The per-profile series: each profile's credential gauges (read at scrape time) and its
//! served counter, labelled `profile`.

use std::sync::Mutex;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;
use tokio::time::Instant;

use super::CredentialGauges;

/// Labels of the per-profile series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ProfileLabels {
    pub(super) profile: String,
}

/// One profile's `profile_credentials_served_total` series ([`Metrics::profile_served`]).
#[derive(Debug, Clone)]
pub struct Served(pub(super) Counter);

impl Served {
    /// Counts one answer.
    pub fn inc(&self) {
        self.0.inc();
    }
}

/// One per-profile gauge: name, help, unit, and its value from the gauges.
type GaugeRow<'a> = (
    &'a str,
    &'a str,
    Option<&'a Unit>,
    fn(&CredentialGauges) -> f64,
);

/// Reads the profiles' credential gauges at a scrape.
pub(super) type ReadProfileGauges =
    Box<dyn Fn(Instant) -> Vec<(String, CredentialGauges)> + Send + Sync>;

/// The profiles' credential gauges, computed at scrape time by the installed function.
#[derive(Default)]
pub(super) struct ProfileGauges {
    pub(super) read: Mutex<Option<ReadProfileGauges>>,
}

impl std::fmt::Debug for ProfileGauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProfileGauges")
    }
}

impl Collector for ProfileGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rows = match self.read.lock() {
            Ok(read) => read.as_ref().map(|read| read(Instant::now())),
            Err(_) => None,
        }
        .unwrap_or_default();
        if rows.is_empty() {
            return Ok(());
        }
        let seconds = Some(&Unit::Seconds);
        let gauges: [GaugeRow<'_>; 4] = [
            (
                "profile_credentials_expires_in",
                "Seconds until Expiration of the profile's held credentials (0 when none are held).",
                seconds,
                |g| g.expires_in.as_secs_f64(),
            ),
            (
                "profile_credentials_generation",
                "Generation number of the profile's held credentials (0 when none are held).",
                None,
                |g| g.generation as f64,
            ),
            (
                "profile_ready",
                "1 while the profile's valid credentials are held and served, else 0.",
                None,
                |g| f64::from(u8::from(g.ready)),
            ),
            (
                "profile_credentials_stale",
                "1 while the profile's credentials are served although its last refresh failed, else 0.",
                None,
                |g| f64::from(u8::from(g.stale)),
            ),
        ];
        for (name, help, unit, value) in gauges {
            let kind = ConstGauge::new(0.0).metric_type();
            let mut family = encoder.encode_descriptor(name, help, unit, kind)?;
            for (profile, g) in &rows {
                let labels = ProfileLabels {
                    profile: profile.clone(),
                };
                ConstGauge::new(value(g)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
