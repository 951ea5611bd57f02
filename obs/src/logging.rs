//! A daemon's `tracing` subscriber, with a filter that can be replaced
//! while it runs (`petrelctl log-level debug`).
//!
//! The filter is a [`Targets`] list: `LEVEL`, `TARGET=LEVEL` or both,
//! comma-separated (`info`, `petrel_vhost_user=debug,info`); a target is a
//! module path prefix (`petrel_dataplane::ctl`). Replacing it rebuilds
//! `tracing`'s per-call-site interest cache, so call sites that were
//! disabled start logging at once, and ones that become disabled cost a
//! branch again.
//!
//! Invariant: [`LogControl::filter`] is the text of the filter in force; a
//! filter that does not parse changes nothing.

use std::sync::{Arc, Mutex};

use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Registry;

/// Why a filter could not be set.
#[derive(Debug, thiserror::Error, displaydoc::Display)]
pub enum LogError {
    /// log filter {0:?}: {1} (expected LEVEL, TARGET=LEVEL or a comma-separated list of them)
    BadFilter(String, tracing_subscriber::filter::ParseError),
    /// log filter is empty (use `off` to log nothing)
    EmptyFilter,
    /// replacing the log filter: {0}
    Reload(#[from] reload::Error),
    /// installing the log subscriber: {0}
    Init(#[from] tracing_subscriber::util::TryInitError),
}

/// Changes the filter of a subscriber made by [`subscriber`] or [`init`];
/// cheap to clone, usable from any thread.
#[derive(Debug, Clone)]
pub struct LogControl {
    handle: reload::Handle<Targets, Registry>,
    /// The text of the filter in force (a `Targets` does not print back).
    current: Arc<Mutex<String>>,
}

fn parse(filter: &str) -> Result<Targets, LogError> {
    let f = filter.trim();
    if f.is_empty() {
        return Err(LogError::EmptyFilter);
    }
    f.parse().map_err(|e| LogError::BadFilter(f.to_owned(), e))
}

impl LogControl {
    /// The filter in force.
    pub fn filter(&self) -> String {
        self.current.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Replaces the filter; returns the one it replaced.
    ///
    /// # Errors
    /// The filter does not parse (nothing changes), or the subscriber is gone.
    pub fn set(&self, filter: &str) -> Result<String, LogError> {
        let targets = parse(filter)?;
        // Under the lock, so the text and the filter in force change together.
        let mut cur = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.handle.reload(targets)?;
        Ok(std::mem::replace(&mut *cur, filter.trim().to_owned()))
    }
}

/// A subscriber formatting events to `writer` (with colours if `ansi`)
/// through `filter`, and the handle that changes the filter.
///
/// # Errors
/// [`LogError::BadFilter`], [`LogError::EmptyFilter`].
pub fn subscriber<W>(
    filter: &str,
    writer: W,
    ansi: bool,
) -> Result<(impl tracing::Subscriber + Send + Sync + 'static, LogControl), LogError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let targets = parse(filter)?;
    let (layer, handle) = reload::Layer::new(targets);
    let sub = tracing_subscriber::registry()
        .with(layer)
        .with(tracing_subscriber::fmt::layer().with_writer(writer).with_ansi(ansi));
    Ok((sub, LogControl { handle, current: Arc::new(Mutex::new(filter.trim().to_owned())) }))
}

/// Installs the process's subscriber: standard error, colours when it is
/// a terminal, `filter` until changed.
///
/// # Errors
/// A bad filter, or a subscriber is already installed.
pub fn init(filter: &str) -> Result<LogControl, LogError> {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (sub, ctl) = subscriber(filter, std::io::stderr, ansi)?;
    sub.try_init()?;
    Ok(ctl)
}

/// What a test subscriber wrote.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct Captured(Arc<Mutex<Vec<u8>>>);

#[cfg(test)]
impl Captured {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("test writer")).into_owned()
    }
}

#[cfg(test)]
impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("test writer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
impl<'w> MakeWriter<'w> for Captured {
    type Writer = Captured;
    fn make_writer(&'w self) -> Captured {
        self.clone()
    }
}

/// A subscriber writing plain text into memory.
#[cfg(test)]
pub(crate) fn test_writer(filter: &str) -> (impl tracing::Subscriber + Send + Sync, LogControl, Captured) {
    let out = Captured::default();
    let (sub, ctl) = subscriber(filter, out.clone(), false).expect("test filter parses");
    (sub, ctl, out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn test_filter_changes_what_is_written_at_once() {
        let (sub, ctl, out) = test_writer("info");
        tracing::subscriber::with_default(sub, || {
            let emit = |n: u32| {
                tracing::debug!(target: "petrel_vhost_user::backend", n, "vhost debug");
                tracing::debug!(target: "petrel_dataplane::ctl", n, "ctl debug");
                tracing::info!(target: "petrel_dataplane::ctl", n, "ctl info");
            };
            emit(1);
            assert_eq!(ctl.set("petrel_vhost_user=debug,info").unwrap(), "info");
            assert_eq!(ctl.filter(), "petrel_vhost_user=debug,info");
            emit(2);
            assert_eq!(ctl.set("warn").unwrap(), "petrel_vhost_user=debug,info");
            emit(3);
        });
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].contains("ctl info") && lines[0].contains("n=1"), "{text}");
        assert!(lines[1].contains("vhost debug") && lines[1].contains("n=2"), "{text}");
        assert!(lines[2].contains("ctl info") && lines[2].contains("n=2"), "{text}");
    }

    #[test]
    fn test_a_bad_filter_changes_nothing() {
        let (sub, ctl, out) = test_writer("info");
        tracing::subscriber::with_default(sub, || {
            assert!(matches!(ctl.set("petrel=loud"), Err(LogError::BadFilter(..))));
            assert!(matches!(ctl.set("  "), Err(LogError::EmptyFilter)));
            assert_eq!(ctl.filter(), "info");
            tracing::info!("still info");
            tracing::debug!("still not debug");
        });
        assert!(out.text().contains("still info"));
        assert!(!out.text().contains("still not debug"));
        assert!(subscriber("nope=nope", std::io::sink, false).is_err());
    }
}
