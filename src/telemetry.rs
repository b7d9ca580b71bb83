//! Telemetry declared in one place: every metric's name, its help text and its labels live here,
//! and the rest of the daemon only bumps typed fields.
//!
//! Labels are bounded (stage, route, status, provider, camera state) and never carry a track id or
//! anything a shopper could be traced by. Counters and histograms are plain atomics: the pipeline
//! thread records without locks, and `/metrics` renders the Prometheus text format on request.
//!
//! Logging is set up here too: besides the usual formatted output, the newest warnings and errors
//! are kept in a small ring ([`recent_problems`]) so a technician sees them in `/api/status`
//! without shell access to the journal.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::capture::CameraState;

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
    /// Adds `d` atomically (a compare-and-swap loop: gauges are f64 bits).
    pub fn add(&self, d: f64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some((f64::from_bits(b) + d).to_bits())
            });
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
    /// The pose model, on the frames where shoppers' garments are (re)embedded.
    Pose,
    Embed,
    Search,
    Publish,
}

impl Stage {
    pub const ALL: [Stage; 6] = [
        Stage::Decode,
        Stage::Detect,
        Stage::Pose,
        Stage::Embed,
        Stage::Search,
        Stage::Publish,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Detect => "detect",
            Stage::Pose => "pose",
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
    /// People run through the pose model.
    pub people_posed: Counter,
    /// Masked garment crops, and the sum of their shares of shopper pixels (a summary: the mean
    /// share is sum / count).
    pub garment_share_count: Counter,
    pub garment_share_sum: Gauge,
    /// Masked crops with too little shopper in them to embed.
    pub garment_crops_skipped: Counter,
    pub stage_seconds: [Histogram; 6],
    pub frame_to_publish_seconds: Histogram,
    pub shoppers_in_view: Gauge,
    pub catalog_items: Gauge,
    /// Display pages connected to the live event stream (up on connect, down on disconnect).
    pub display_clients: Gauge,
    /// Events written to display pages, all clients together.
    pub display_events: Counter,
    /// Camera state as a number: 1 streaming, 0 otherwise.
    pub camera_streaming: Gauge,
    /// (route, status) → count. Routes are the router's matched paths, a small fixed set.
    pub http_requests: Mutex<Vec<((String, u16), u64)>>,
    /// Execution provider in use per model, set once at start-up.
    pub providers: Mutex<Vec<(String, String)>>,
    /// The active catalog's version id (`v0007`) and what staff called it (`spring-2027`).
    pub catalog_version: Mutex<String>,
    pub catalog_label: Mutex<String>,
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
        counter(
            &mut o,
            "vitrine_people_posed_total",
            "People run through the pose model.",
            self.people_posed.get(),
        );
        let _ = writeln!(
            o,
            "# HELP vitrine_garment_share Share of each masked garment crop that is the shopper.\n# TYPE vitrine_garment_share summary\nvitrine_garment_share_sum {}\nvitrine_garment_share_count {}",
            self.garment_share_sum.get(),
            self.garment_share_count.get()
        );
        counter(
            &mut o,
            "vitrine_garment_crops_skipped_total",
            "Masked garment crops not embedded: less of the shopper than pose.min_garment_share.",
            self.garment_crops_skipped.get(),
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
        counter(
            &mut o,
            "vitrine_display_events_total",
            "Live updates written to display pages, all clients together.",
            self.display_events.get(),
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
            "# HELP vitrine_catalog_info Active catalog: version id and the label staff gave it (value always 1).\n# TYPE vitrine_catalog_info gauge"
        );
        let version = escape(
            &self
                .catalog_version
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        let label = escape(&self.catalog_label.lock().unwrap_or_else(|p| p.into_inner()));
        let _ = if label.is_empty() || label == version {
            writeln!(o, "vitrine_catalog_info{{version=\"{version}\"}} 1")
        } else {
            writeln!(
                o,
                "vitrine_catalog_info{{version=\"{version}\",label=\"{label}\"}} 1"
            )
        };
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

/// What `/metrics` shows besides the counters: values read from shared state at scrape time.
pub struct LiveState<'a> {
    pub camera: CameraState,
    pub ready: bool,
    pub started_at: SystemTime,
    pub version: &'a str,
}

impl Metrics {
    /// [`Metrics::render`] plus the scrape-time values of `live`.
    pub fn render_with(&self, live: &LiveState) -> String {
        let mut o = self.render();
        let _ = writeln!(
            o,
            "# HELP vitrine_camera_state Camera (or replay source) state: 1 for the current state.\n# TYPE vitrine_camera_state gauge"
        );
        for st in [
            CameraState::Opening,
            CameraState::Streaming,
            CameraState::Reconnecting,
            CameraState::Stopped,
        ] {
            let _ = writeln!(
                o,
                "vitrine_camera_state{{state=\"{}\"}} {}",
                camera_state_name(st),
                u8::from(st == live.camera)
            );
        }
        let _ = writeln!(
            o,
            "# HELP vitrine_ready 1 when /readyz reports ready.\n# TYPE vitrine_ready gauge\nvitrine_ready {}",
            u8::from(live.ready)
        );
        let started = live
            .started_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let _ = writeln!(
            o,
            "# HELP vitrine_start_time_seconds Start time of the daemon since the Unix epoch.\n# TYPE vitrine_start_time_seconds gauge\nvitrine_start_time_seconds {started:.3}"
        );
        let _ = writeln!(
            o,
            "# HELP vitrine_build_info Version of the running binary (value always 1).\n# TYPE vitrine_build_info gauge\nvitrine_build_info{{version=\"{}\"}} 1",
            escape(live.version)
        );
        render_process(&mut o);
        o
    }
}

/// The standard `process_*` metrics (Prometheus's process collector) from `/proc/self`: CPU time,
/// resident memory and open files, so a technician sees what the daemon costs the box (and the
/// HTTP benchmark what display clients cost the daemon). Left out where `/proc` is missing.
fn render_process(o: &mut String) {
    let cpu = crate::process::cpu_time().map(|t| t.as_secs_f64());
    if let Some(cpu) = cpu {
        let _ = writeln!(
            o,
            "# HELP process_cpu_seconds_total User and system CPU time of the daemon.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {cpu:.2}"
        );
    }
    let rss = crate::process::resident_bytes().map(|bytes| bytes / 1024);
    if let Some(kb) = rss {
        let _ = writeln!(
            o,
            "# HELP process_resident_memory_bytes Resident memory of the daemon.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {}",
            kb * 1024
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        let _ = writeln!(
            o,
            "# HELP process_open_fds Open file descriptors of the daemon.\n# TYPE process_open_fds gauge\nprocess_open_fds {}",
            fds.count()
        );
    }
}

/// The state's name as `/api/status` and `/metrics` spell it.
pub fn camera_state_name(s: CameraState) -> &'static str {
    match s {
        CameraState::Opening => "opening",
        CameraState::Streaming => "streaming",
        CameraState::Reconnecting => "reconnecting",
        CameraState::Stopped => "stopped",
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

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

    #[test]
    fn display_clients_go_up_and_down() {
        let m = Metrics::default();
        m.display_clients.add(1.0);
        m.display_clients.add(1.0);
        m.display_clients.add(-1.0);
        assert!(m.render().contains("\nvitrine_display_clients 1\n"));
    }

    #[test]
    fn camera_state_is_one_hot() {
        let text = Metrics::default().render_with(&LiveState {
            camera: CameraState::Reconnecting,
            ready: false,
            started_at: SystemTime::UNIX_EPOCH + Duration::from_secs(10),
            version: "1.2.3",
        });
        assert!(
            text.contains("vitrine_camera_state{state=\"reconnecting\"} 1"),
            "{text}"
        );
        assert!(text.contains("vitrine_camera_state{state=\"streaming\"} 0"));
        assert!(text.contains("vitrine_ready 0"));
        assert!(text.contains("vitrine_start_time_seconds 10.000"));
        assert!(text.contains("vitrine_build_info{version=\"1.2.3\"} 1"));
        let cpu: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("process_cpu_seconds_total "))
            .and_then(|v| v.parse().ok())
            .expect("process CPU time");
        assert!(cpu >= 0.0);
        assert!(text.contains("\nprocess_resident_memory_bytes "));
    }

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
