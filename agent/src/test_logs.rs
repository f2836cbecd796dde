//! Test-only: captures `tracing` output, to check what is (and is not) logged.

use std::io::Write;
use std::sync::{Arc, Mutex};

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

use crate::logging::{fmt_layer, Style};

/// Captures every `tracing` line (all levels) for the current thread while the guard lives,
/// in the journal style: the production formatter (escaping included), without timestamps.
pub(crate) fn capture_logs() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
    #[derive(Clone)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = Sink(Arc::clone(&buf));
    let layer = fmt_layer(Style::Journal, move || sink.clone()).with_filter(LevelFilter::TRACE);
    let subscriber = tracing_subscriber::registry().with(layer);
    (buf, tracing::subscriber::set_default(subscriber))
}

pub(crate) fn logs(buf: &Arc<Mutex<Vec<u8>>>) -> String {
    String::from_utf8(buf.lock().unwrap().clone()).unwrap()
}
