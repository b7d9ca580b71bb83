//! The channel's Prometheus families, declared once (prometheus-client). HQ's alert rules are
//! written against these exact names, so they are constants and tested.
//!
//! The poller ([`super::subscribe`]) is the only writer; `/metrics` reads them through
//! [`ChannelMetrics::register`]. Labels are bounded: refusal reasons and error kinds are fixed
//! lists, and `vitrine_channel_info` holds one series (cleared before each change), so neither a
//! long-running box nor a busy channel grows the scrape.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::doc::RefusalReason;

// prometheus-client adds `_total` to counters itself: the names below are the families' names.
pub const UP: &str = "vitrine_channel_up";
pub const LAST_CHECK: &str = "vitrine_channel_last_check_timestamp_seconds";
pub const LAST_SUCCESS: &str = "vitrine_channel_last_success_timestamp_seconds";
pub const BEHIND: &str = "vitrine_channel_behind_seconds";
pub const INFO: &str = "vitrine_channel_info";
pub const FETCHED_BYTES: &str = "vitrine_channel_fetched_bytes";
pub const REFUSALS: &str = "vitrine_channel_refusals";
pub const ERRORS: &str = "vitrine_channel_errors";

/// Why a poll or a download failed without a refusal: the `kind` label of
/// `vitrine_channel_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// No connection (refused, reset, DNS), or the connection dropped mid-transfer.
    Unreachable,
    /// The server answered with an error status (404, 403, 500, …).
    HttpStatus,
    /// Connecting or reading took longer than `catalog.channel.timeout_s`.
    Timeout,
    /// The box's own disk (the data folder) or a local (`file://`) channel.
    Io,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 4] = [Self::Unreachable, Self::HttpStatus, Self::Timeout, Self::Io];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::HttpStatus => "http_status",
            Self::Timeout => "timeout",
            Self::Io => "io",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct InfoLabels {
    /// The version label the channel offers ("" before the first document).
    pub offered: String,
    /// The version label this box serves.
    pub active: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The channel's metric handles; clones share the values.
#[derive(Debug, Clone, Default)]
pub struct ChannelMetrics {
    pub up: Gauge,
    pub last_check: FloatGauge,
    pub last_success: FloatGauge,
    pub behind: FloatGauge,
    info: Family<InfoLabels, Gauge>,
    pub fetched_bytes: Counter,
    refusals: Family<ReasonLabels, Counter>,
    errors: Family<KindLabels, Counter>,
}

impl ChannelMetrics {
    /// Every label value starts at 0, so a rate or an alert on a reason never sees a missing
    /// series before its first increment.
    pub fn new() -> Self {
        let m = Self::default();
        for r in RefusalReason::ALL {
            let _ = m
                .refusals
                .get_or_create(&ReasonLabels { reason: r.as_str() });
        }
        for k in ErrorKind::ALL {
            let _ = m.errors.get_or_create(&KindLabels { kind: k.as_str() });
        }
        m
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            UP,
            "1 when the last poll reached the channel and read its document, else 0",
            self.up.clone(),
        );
        registry.register(
            LAST_CHECK,
            "When the box last polled its catalog channel (Unix time)",
            self.last_check.clone(),
        );
        registry.register(
            LAST_SUCCESS,
            "When a poll last read the channel document, changed or not (Unix time)",
            self.last_success.clone(),
        );
        registry.register(
            BEHIND,
            "Seconds since the channel first offered this box a version it does not run yet; 0 when up to date",
            self.behind.clone(),
        );
        registry.register(
            INFO,
            "The version the channel offers and the version this box serves (labels); always 1",
            self.info.clone(),
        );
        registry.register(
            FETCHED_BYTES,
            "Bytes read from the channel: documents and bundles",
            self.fetched_bytes.clone(),
        );
        registry.register(
            REFUSALS,
            "Channel documents and bundles refused, by reason",
            self.refusals.clone(),
        );
        registry.register(
            ERRORS,
            "Polls and downloads that failed (unreachable, http_status, timeout, io)",
            self.errors.clone(),
        );
    }

    pub fn refused(&self, reason: RefusalReason) {
        self.refusals
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    pub fn error(&self, kind: ErrorKind) {
        self.errors
            .get_or_create(&KindLabels {
                kind: kind.as_str(),
            })
            .inc();
    }

    /// Replaces the one `vitrine_channel_info` series.
    pub fn set_info(&self, offered: &str, active: &str) {
        let labels = InfoLabels {
            offered: offered.into(),
            active: active.into(),
        };
        if self.info.get(&labels).is_some() {
            return;
        }
        self.info.clear();
        self.info.get_or_create(&labels).set(1);
    }

    /// The families in the Prometheus text format (0.0.4) that the rest of `/metrics` is served
    /// in, to be appended to it (see the bridge in `http/health.rs`). prometheus-client writes
    /// OpenMetrics, where a counter family `x` has samples `x_total`; the 0.0.4 format names the
    /// family `x_total` too (promtool reports the samples as undocumented otherwise), and has no
    /// `# EOF` line.
    /// The Prometheus text (0.0.4) of `registry`, as `/metrics` writes it.
    pub fn encode_text(registry: &Registry) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::prometheus_text::encode(&mut out, registry).is_err() {
            return String::new();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(m: &ChannelMetrics) -> String {
        let mut r = Registry::default();
        m.register(&mut r);
        ChannelMetrics::encode_text(&r)
    }

    #[test]
    fn the_families_carry_the_names_the_alert_rules_use() {
        let m = ChannelMetrics::new();
        m.up.set(1);
        m.fetched_bytes.inc_by(1234);
        m.refused(RefusalReason::Revoked);
        m.error(ErrorKind::Timeout);
        m.set_info("spring-2027", "winter-2026");
        m.behind.set(12.5);
        let t = text(&m);
        for line in [
            "vitrine_channel_up 1",
            "vitrine_channel_last_check_timestamp_seconds 0",
            "vitrine_channel_last_success_timestamp_seconds 0",
            "vitrine_channel_behind_seconds 12.5",
            "vitrine_channel_info{offered=\"spring-2027\",active=\"winter-2026\"} 1",
            "vitrine_channel_fetched_bytes_total 1234",
            "vitrine_channel_refusals_total{reason=\"revoked\"} 1",
            "vitrine_channel_refusals_total{reason=\"sequence_backwards\"} 0",
            "vitrine_channel_errors_total{kind=\"timeout\"} 1",
            "vitrine_channel_errors_total{kind=\"unreachable\"} 0",
        ] {
            assert!(t.contains(line), "missing {line:?} in:\n{t}");
        }
        assert!(!t.contains("# EOF"), "{t}");
        // The 0.0.4 text format names a counter family after its samples.
        assert!(
            t.contains("# TYPE vitrine_channel_refusals_total counter"),
            "{t}"
        );
        assert!(
            t.contains("# HELP vitrine_channel_fetched_bytes_total "),
            "{t}"
        );
    }

    #[test]
    fn the_info_family_keeps_one_series() {
        let m = ChannelMetrics::new();
        m.set_info("a", "x");
        m.set_info("b", "x");
        m.set_info("b", "b");
        let t = text(&m);
        let series: Vec<&str> = t
            .lines()
            .filter(|l| l.starts_with("vitrine_channel_info{"))
            .collect();
        assert_eq!(
            series,
            ["vitrine_channel_info{offered=\"b\",active=\"b\"} 1"]
        );
    }
}
