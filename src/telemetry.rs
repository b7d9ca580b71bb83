//! Telemetry declared in one place: every metric's name, its help text and its labels live here,
//! and the rest of the daemon only bumps typed fields.
//!
//! Labels are bounded (stage, route, status, provider) and never carry a track id or anything a
//! shopper could be traced by. Counters and histograms are plain atomics: the pipeline thread
//! records without locks, and `/metrics` renders the Prometheus text format on request.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histograms: 1 ms to 2.5 s covers every stage.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (b, bound) in self.buckets.iter().zip(BUCKETS) {
            if s <= bound {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, bound) in self.buckets.iter().zip(BUCKETS) {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {}",
                b.load(Ordering::Relaxed)
            );
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(
            out,
            "{name}_sum{braces} {}",
            self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9
        );
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// Pipeline stages with their own latency histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Decode,
    Detect,
    Embed,
    Search,
    Publish,
}

impl Stage {
    pub const ALL: [Stage; 5] = [
        Stage::Decode,
        Stage::Detect,
        Stage::Embed,
        Stage::Search,
        Stage::Publish,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Detect => "detect",
            Stage::Embed => "embed",
            Stage::Search => "search",
            Stage::Publish => "publish",
        }
    }
}

/// All metrics of one daemon.
#[derive(Default)]
pub struct Metrics {
    pub frames_captured: Counter,
    pub frames_processed: Counter,
    pub frames_dropped: Counter,
    pub frames_corrupt: Counter,
    pub camera_reconnects: Counter,
    pub crops_embedded: Counter,
    pub embeddings_reused: Counter,
    pub pipeline_errors: Counter,
    pub stage_seconds: [Histogram; 5],
    pub frame_to_publish_seconds: Histogram,
    pub shoppers_in_view: Gauge,
    pub catalog_items: Gauge,
    pub display_clients: Gauge,
    /// Camera state as a number: 1 streaming, 0 otherwise.
    pub camera_streaming: Gauge,
    /// (route, status) → count. Routes are the router's matched paths, a small fixed set.
    pub http_requests: Mutex<Vec<((String, u16), u64)>>,
    /// Execution provider in use per model, set once at start-up.
    pub providers: Mutex<Vec<(String, String)>>,
    pub catalog_version: Mutex<String>,
}

impl Metrics {
    pub fn stage(&self, s: Stage) -> &Histogram {
        &self.stage_seconds[s as usize]
    }

    pub fn http_request(&self, route: &str, status: u16) {
        let mut g = self.http_requests.lock().unwrap_or_else(|p| p.into_inner());
        match g.iter_mut().find(|((r, s), _)| r == route && *s == status) {
            Some((_, n)) => *n += 1,
            None => g.push(((route.to_string(), status), 1)),
        }
    }

    /// The Prometheus text exposition of everything above.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let counter = |o: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        let gauge = |o: &mut String, name: &str, help: &str, v: f64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        counter(
            &mut o,
            "vitrine_frames_captured_total",
            "Frames delivered by the camera or replay source.",
            self.frames_captured.get(),
        );
        counter(
            &mut o,
            "vitrine_frames_processed_total",
            "Frames that went through the whole pipeline.",
            self.frames_processed.get(),
        );
        counter(
            &mut o,
            "vitrine_frames_dropped_total",
            "Frames replaced by a newer one before inference took them.",
            self.frames_dropped.get(),
        );
        counter(
            &mut o,
            "vitrine_frames_corrupt_total",
            "Frames that could not be decoded and were skipped.",
            self.frames_corrupt.get(),
        );
        counter(
            &mut o,
            "vitrine_camera_reconnects_total",
            "Times the camera was reopened after an error.",
            self.camera_reconnects.get(),
        );
        counter(
            &mut o,
            "vitrine_crops_embedded_total",
            "Garment crops run through the embedder.",
            self.crops_embedded.get(),
        );
        counter(
            &mut o,
            "vitrine_embeddings_reused_total",
            "Garment regions whose tracked embedding was still fresh.",
            self.embeddings_reused.get(),
        );
        counter(
            &mut o,
            "vitrine_pipeline_errors_total",
            "Frames the pipeline failed on.",
            self.pipeline_errors.get(),
        );
        let _ = writeln!(
            o,
            "# HELP vitrine_stage_seconds Latency of each pipeline stage per frame.\n# TYPE vitrine_stage_seconds histogram"
        );
        for s in Stage::ALL {
            self.stage(s).render(
                &mut o,
                "vitrine_stage_seconds",
                &format!("stage=\"{}\"", s.name()),
            );
        }
        let _ = writeln!(
            o,
            "# HELP vitrine_frame_to_publish_seconds From capture to recommendations published.\n# TYPE vitrine_frame_to_publish_seconds histogram"
        );
        self.frame_to_publish_seconds
            .render(&mut o, "vitrine_frame_to_publish_seconds", "");
        gauge(
            &mut o,
            "vitrine_shoppers_in_view",
            "Shoppers tracked in the latest frame.",
            self.shoppers_in_view.get(),
        );
        gauge(
            &mut o,
            "vitrine_catalog_items",
            "Items in the active catalog.",
            self.catalog_items.get(),
        );
        gauge(
            &mut o,
            "vitrine_display_clients",
            "Display pages connected for live updates.",
            self.display_clients.get(),
        );
        gauge(
            &mut o,
            "vitrine_camera_streaming",
            "1 while the camera delivers frames, 0 while it reconnects.",
            self.camera_streaming.get(),
        );
        let _ = writeln!(
            o,
            "# HELP vitrine_execution_provider Execution provider running each model (value always 1).\n# TYPE vitrine_execution_provider gauge"
        );
        for (model, p) in self
            .providers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                o,
                "vitrine_execution_provider{{model=\"{}\",provider=\"{}\"}} 1",
                escape(model),
                escape(p)
            );
        }
        let _ = writeln!(
            o,
            "# HELP vitrine_catalog_info Active catalog version (value always 1).\n# TYPE vitrine_catalog_info gauge"
        );
        let _ = writeln!(
            o,
            "vitrine_catalog_info{{version=\"{}\"}} 1",
            escape(
                &self
                    .catalog_version
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
            )
        );
        let _ = writeln!(
            o,
            "# HELP vitrine_http_requests_total HTTP requests by matched route and status.\n# TYPE vitrine_http_requests_total counter"
        );
        for ((route, status), n) in self
            .http_requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                o,
                "vitrine_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                escape(route)
            );
        }
        o
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Sets up logging: `RUST_LOG` wins, else `info` for vitrine and warnings for the rest.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,vitrine=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.stage(Stage::Detect).observe(Duration::from_millis(3));
        m.stage(Stage::Detect).observe(Duration::from_millis(30));
        let text = m.render();
        assert!(
            text.contains("vitrine_stage_seconds_bucket{stage=\"detect\",le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(text.contains("vitrine_stage_seconds_bucket{stage=\"detect\",le=\"0.05\"} 2"));
        assert!(text.contains("vitrine_stage_seconds_count{stage=\"detect\"} 2"));
    }
}
