//! Logging: `tracing` with the usual formatted output, plus a small ring of the newest warnings
//! and errors ([`recent_problems`]) so a technician sees them in `/api/status` without shell
//! access to the journal.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;

/// Sets up logging: `RUST_LOG` wins, else `info` for vitrine and warnings for the rest.
/// Warnings and errors also go to the ring behind [`recent_problems`].
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,vitrine=info"));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_target(false))
        .with(ProblemRing)
        .try_init();
}

/// How many warnings and errors `/api/status` keeps: enough to see a pattern, small enough that
/// a flood costs nothing.
const PROBLEMS_KEPT: usize = 20;

/// The newest warnings and errors, oldest first. A process-wide global because logging is one:
/// the `tracing` subscriber is global too.
static PROBLEMS: Mutex<VecDeque<Problem>> = Mutex::new(VecDeque::new());

/// One logged warning or error.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    /// RFC 3339 time it was logged.
    pub at: String,
    pub level: String,
    /// The log message with its fields, as the journal shows it.
    pub message: String,
}

/// The newest warnings and errors the daemon logged, oldest first (at most 20).
pub fn recent_problems() -> Vec<Problem> {
    PROBLEMS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .cloned()
        .collect()
}

fn remember(p: Problem) {
    let mut g = PROBLEMS.lock().unwrap_or_else(|p| p.into_inner());
    if g.len() == PROBLEMS_KEPT {
        g.pop_front();
    }
    g.push_back(p);
}

/// The `tracing` layer that feeds [`recent_problems`].
pub struct ProblemRing;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ProblemRing {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        // More verbose levels compare greater: only WARN and ERROR are kept.
        if level > tracing::Level::WARN {
            return;
        }
        let mut v = MessageVisitor::default();
        event.record(&mut v);
        remember(Problem {
            at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            level: level.to_string(),
            message: v.text,
        });
    }
}

/// Formats an event like the journal line: the message, then `field=value` pairs.
#[derive(Default)]
struct MessageVisitor {
    text: String,
}

impl Visit for MessageVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.text.insert_str(0, value);
        } else {
            let _ = write!(self.text, " {}={value}", field.name());
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.text.insert_str(0, &format!("{value:?}"));
        } else {
            let _ = write!(self.text, " {}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_and_errors_are_kept_newest_last_and_bounded() {
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber = tracing_subscriber::registry().with(ProblemRing);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("not kept");
            for i in 0..(PROBLEMS_KEPT + 3) {
                tracing::warn!(frame = i, "camera hiccup");
            }
            tracing::error!(error = "boom", "frame failed");
        });
        let got = recent_problems();
        assert_eq!(got.len(), PROBLEMS_KEPT);
        let last = got.last().expect("one");
        assert_eq!(last.level, "ERROR");
        assert_eq!(last.message, "frame failed error=boom");
        assert!(got.iter().all(|p| p.message != "not kept"));
        assert!(
            got[0].message.starts_with("camera hiccup frame="),
            "{:?}",
            got[0]
        );
    }
}
