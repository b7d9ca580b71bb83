//! Telemetry declared in one place: every metric's name and help text is a [`Declaration`]
//! constant beside the field that updates it, and the rest of the daemon only bumps typed fields.
//!
//! The metrics are prometheus-client families in one [`Registry`], which `/metrics` encodes in
//! Prometheus's text format 0.0.4 (the format `promtool check metrics` reads and every Prometheus
//! scrapes). Labels are bounded (stage, route, status, provider, camera state, catalog group) and
//! never carry a track id or anything a shopper could be traced by.
//!
//! Updates on the frame path are atomic adds and take no lock: counters and gauges are
//! prometheus-client's (atomics); histograms are our [`Histogram`] (atomics; the crate's takes a
//! mutex per observation); the stage histograms sit in a [`FixedFamily`] reached by position.
//! Families that grow while the daemon runs (HTTP routes, catalog groups) are the crate's
//! `Family`, whose read lock is taken per HTTP request or per list put on display, never per frame.
//!
//! **Other modules' families.** A module with metrics of its own (the catalog channel's
//! subscriber) declares them as prometheus-client families and adds them with
//! [`Metrics::register`] while the daemon starts: `metrics.register(|r| channel.register(r))`.
//! `/metrics` then serves them with everything else.
//!
//! Logging is set up here too ([`init_tracing`]), with the ring of recent problems that
//! `/api/status` shows.

mod audience;
mod kinds;
mod log;

use std::fmt;
use std::sync::RwLock;
use std::time::SystemTime;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabel, EncodeLabelSet, EncodeMetric, LabelSetEncoder,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
pub use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
pub use prometheus_client::registry::{Metric, Registry};

pub use audience::{
    Audience, AudienceEvents, GARMENTS_RECOMMENDED, ITEMS_SHOWN, SHOPPER_DWELL_SECONDS,
    SHOPPERS_SEEN, TOP_ITEMS, TopItems,
};
pub use kinds::{FixedFamily, Histogram, InfoGauge, SumCount};
pub use log::{Problem, ProblemRing, init_tracing, recent_problems};

use crate::capture::CameraState;

/// A metric's name as Prometheus shows it (`_total` included for counters) and its help text
/// (without a final full stop: prometheus-client adds one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Declaration {
    pub name: &'static str,
    pub help: &'static str,
}

/// Registers `metric` under `d` and hands it back (a clone shares its cells with the registry's).
/// prometheus-client appends `_total` to a counter's name itself, and in debug builds refuses one
/// that already ends in it, so the suffix comes off here: declarations keep the name as queried.
pub fn declare<M: Metric + Clone>(registry: &mut Registry, d: &Declaration, metric: M) -> M {
    let name = match metric.metric_type() {
        MetricType::Counter => d.name.strip_suffix("_total").unwrap_or(d.name),
        _ => d.name,
    };
    registry.register(name, d.help, metric.clone());
    metric
}

pub const FRAMES_CAPTURED: Declaration = Declaration {
    name: "vitrine_frames_captured_total",
    help: "Frames delivered by the camera or replay source",
};
pub const FRAMES_PROCESSED: Declaration = Declaration {
    name: "vitrine_frames_processed_total",
    help: "Frames that went through the whole pipeline",
};
pub const FRAMES_DROPPED: Declaration = Declaration {
    name: "vitrine_frames_dropped_total",
    help: "Frames replaced by a newer one before inference took them",
};
pub const FRAMES_CORRUPT: Declaration = Declaration {
    name: "vitrine_frames_corrupt_total",
    help: "Frames that could not be decoded and were skipped",
};
pub const CAMERA_RECONNECTS: Declaration = Declaration {
    name: "vitrine_camera_reconnects_total",
    help: "Times the camera was reopened after an error",
};
pub const CROPS_EMBEDDED: Declaration = Declaration {
    name: "vitrine_crops_embedded_total",
    help: "Garment crops run through the embedder",
};
pub const EMBEDDINGS_REUSED: Declaration = Declaration {
    name: "vitrine_embeddings_reused_total",
    help: "Garment regions whose tracked embedding was still fresh",
};
pub const PIPELINE_ERRORS: Declaration = Declaration {
    name: "vitrine_pipeline_errors_total",
    help: "Frames the pipeline failed on",
};
pub const PEOPLE_POSED: Declaration = Declaration {
    name: "vitrine_people_posed_total",
    help: "People run through the pose model",
};
pub const GARMENT_SHARE: Declaration = Declaration {
    name: "vitrine_garment_share",
    help: "Share of each masked garment crop that is the shopper (sum and count: the mean is sum / count)",
};
pub const GARMENT_CROPS_SKIPPED: Declaration = Declaration {
    name: "vitrine_garment_crops_skipped_total",
    help: "Masked garment crops not embedded: less of the shopper than pose.min_garment_share",
};
pub const STAGE_SECONDS: Declaration = Declaration {
    name: "vitrine_stage_seconds",
    help: "Latency of each pipeline stage per frame",
};
pub const FRAME_TO_PUBLISH_SECONDS: Declaration = Declaration {
    name: "vitrine_frame_to_publish_seconds",
    help: "From capture to recommendations published",
};
pub const SHOPPERS_IN_VIEW: Declaration = Declaration {
    name: "vitrine_shoppers_in_view",
    help: "Shoppers tracked in the latest frame",
};
pub const CATALOG_ITEMS: Declaration = Declaration {
    name: "vitrine_catalog_items",
    help: "Items in the active catalog",
};
pub const DISPLAY_CLIENTS: Declaration = Declaration {
    name: "vitrine_display_clients",
    help: "Display pages connected for live updates",
};
pub const DISPLAY_EVENTS: Declaration = Declaration {
    name: "vitrine_display_events_total",
    help: "Live updates written to display pages, all clients together",
};
pub const CAMERA_STREAMING: Declaration = Declaration {
    name: "vitrine_camera_streaming",
    help: "1 while the camera delivers frames, 0 while it reconnects",
};
pub const CAMERA_STATE: Declaration = Declaration {
    name: "vitrine_camera_state",
    help: "Camera (or replay source) state: 1 for the current state",
};
pub const READY: Declaration = Declaration {
    name: "vitrine_ready",
    help: "1 when /readyz reports ready",
};
pub const EXECUTION_PROVIDER: Declaration = Declaration {
    name: "vitrine_execution_provider",
    help: "Execution provider running each model (value always 1)",
};
pub const GPU_REQUESTED: Declaration = Declaration {
    name: "vitrine_gpu_requested",
    help: "1 when runtime.providers names a GPU provider (cuda or tensorrt)",
};
pub const CATALOG_INFO: Declaration = Declaration {
    name: "vitrine_catalog_info",
    help: "Active catalog: version id and the label staff gave it (value always 1)",
};
pub const BOX_INFO: Declaration = Declaration {
    name: "vitrine_box_info",
    help: "This box in the fleet: appliance.id, appliance.store and the active catalog's version as published (value always 1)",
};
pub const HTTP_REQUESTS: Declaration = Declaration {
    name: "vitrine_http_requests_total",
    help: "HTTP requests by matched route and status",
};
pub const START_TIME_SECONDS: Declaration = Declaration {
    name: "vitrine_start_time_seconds",
    help: "Start time of the daemon since the Unix epoch",
};
pub const BUILD_INFO: Declaration = Declaration {
    name: "vitrine_build_info",
    help: "Version of the running binary (value always 1)",
};
pub const PROCESS_CPU_SECONDS: Declaration = Declaration {
    name: "process_cpu_seconds_total",
    help: "User and system CPU time of the daemon",
};
pub const PROCESS_RESIDENT_MEMORY_BYTES: Declaration = Declaration {
    name: "process_resident_memory_bytes",
    help: "Resident memory of the daemon",
};
pub const PROCESS_OPEN_FDS: Declaration = Declaration {
    name: "process_open_fds",
    help: "Open file descriptors of the daemon",
};

/// Upper bounds (seconds) of the latency histograms: 1 ms to 2.5 s covers every stage.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5,
];

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

/// The camera states in the order `/metrics` lists them.
const CAMERA_STATES: [CameraState; 4] = [
    CameraState::Opening,
    CameraState::Streaming,
    CameraState::Reconnecting,
    CameraState::Stopped,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CameraStateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    /// The router's matched path (a small fixed set), never the raw path.
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    model: String,
    provider: String,
}

#[derive(Clone, Debug, EncodeLabelSet)]
struct BoxLabels {
    box_id: String,
    store: String,
    version: String,
}

#[derive(Clone, Debug, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// `{version}`, plus `label` when staff named the version something else.
#[derive(Clone, Debug, Default)]
struct CatalogLabels {
    version: String,
    label: String,
}

impl EncodeLabelSet for CatalogLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> fmt::Result {
        ("version", self.version.as_str()).encode(encoder.encode_label())?;
        if !self.label.is_empty() && self.label != self.version {
            ("label", self.label.as_str()).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

/// Who this daemon is, for the metrics that say so (from the validated settings).
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// `appliance.id` (else the machine id).
    pub box_id: String,
    /// `appliance.store`.
    pub store: String,
    /// `runtime.providers` names a GPU provider.
    pub gpu_requested: bool,
}

impl Identity {
    pub fn from_settings(s: &crate::config::Settings) -> Self {
        Self {
            box_id: s.appliance.id.clone(),
            store: s.appliance.store.clone(),
            gpu_requested: s.runtime.session.providers.iter().any(|p| p.is_gpu()),
        }
    }
}

/// What `/metrics` reads from shared state at scrape time rather than from the metrics.
pub struct Live {
    pub camera: CameraState,
    pub ready: bool,
}

/// All metrics of one daemon.
#[derive(Debug)]
pub struct Metrics {
    pub frames_captured: Counter,
    pub frames_processed: Counter,
    pub frames_dropped: Counter,
    pub frames_corrupt: Counter,
    pub camera_reconnects: Counter,
    pub crops_embedded: Counter,
    pub embeddings_reused: Counter,
    pub pipeline_errors: Counter,
    pub people_posed: Counter,
    /// Masked garment crops and their shares of shopper pixels.
    pub garment_share: SumCount,
    /// Masked crops with too little shopper in them to embed.
    pub garment_crops_skipped: Counter,
    stage_seconds: FixedFamily<StageLabels, Histogram>,
    pub frame_to_publish_seconds: Histogram,
    pub shoppers_in_view: Gauge,
    pub catalog_items: Gauge,
    /// Display pages connected to the live event stream (up on connect, down on disconnect).
    pub display_clients: Gauge,
    /// Events written to display pages, all clients together.
    pub display_events: Counter,
    /// 1 streaming, 0 otherwise.
    pub camera_streaming: Gauge,
    /// One-hot, set from the camera's status at scrape time.
    camera_state: FixedFamily<CameraStateLabels, Gauge>,
    ready: Gauge,
    http_requests: Family<HttpLabels, Counter>,
    /// Set once the models are warm.
    execution_provider: Family<ProviderLabels, Gauge>,
    catalog_info: InfoGauge<CatalogLabels>,
    box_info: InfoGauge<BoxLabels>,
    /// Shoppers seen, dwell, garments recommended for, items shown.
    pub audience: Audience,
    /// Everything above, plus other modules' families ([`Metrics::register`]). Written while the
    /// daemon starts, read by each scrape.
    registry: RwLock<Registry>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(Identity::default())
    }
}

impl Metrics {
    pub fn from_settings(s: &crate::config::Settings) -> Self {
        Self::new(Identity::from_settings(s))
    }

    pub fn new(id: Identity) -> Self {
        let mut registry = Registry::default();
        let r = &mut registry;
        let started = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let mut m = Self {
            frames_captured: declare(r, &FRAMES_CAPTURED, Counter::default()),
            frames_processed: declare(r, &FRAMES_PROCESSED, Counter::default()),
            frames_dropped: declare(r, &FRAMES_DROPPED, Counter::default()),
            frames_corrupt: declare(r, &FRAMES_CORRUPT, Counter::default()),
            camera_reconnects: declare(r, &CAMERA_RECONNECTS, Counter::default()),
            crops_embedded: declare(r, &CROPS_EMBEDDED, Counter::default()),
            embeddings_reused: declare(r, &EMBEDDINGS_REUSED, Counter::default()),
            pipeline_errors: declare(r, &PIPELINE_ERRORS, Counter::default()),
            people_posed: declare(r, &PEOPLE_POSED, Counter::default()),
            garment_share: declare(r, &GARMENT_SHARE, SumCount::default()),
            garment_crops_skipped: declare(r, &GARMENT_CROPS_SKIPPED, Counter::default()),
            stage_seconds: declare(
                r,
                &STAGE_SECONDS,
                FixedFamily::new(
                    Stage::ALL.map(|s| (StageLabels { stage: s.name() }, Histogram::new(&BUCKETS))),
                ),
            ),
            frame_to_publish_seconds: declare(
                r,
                &FRAME_TO_PUBLISH_SECONDS,
                Histogram::new(&BUCKETS),
            ),
            shoppers_in_view: declare(r, &SHOPPERS_IN_VIEW, Gauge::default()),
            catalog_items: declare(r, &CATALOG_ITEMS, Gauge::default()),
            display_clients: declare(r, &DISPLAY_CLIENTS, Gauge::default()),
            display_events: declare(r, &DISPLAY_EVENTS, Counter::default()),
            camera_streaming: declare(r, &CAMERA_STREAMING, Gauge::default()),
            camera_state: declare(
                r,
                &CAMERA_STATE,
                FixedFamily::new(CAMERA_STATES.map(|s| {
                    let labels = CameraStateLabels {
                        state: camera_state_name(s),
                    };
                    (labels, Gauge::default())
                })),
            ),
            ready: declare(r, &READY, Gauge::default()),
            execution_provider: declare(r, &EXECUTION_PROVIDER, Family::default()),
            catalog_info: declare(r, &CATALOG_INFO, InfoGauge::new(CatalogLabels::default())),
            box_info: declare(
                r,
                &BOX_INFO,
                InfoGauge::new(BoxLabels {
                    box_id: id.box_id,
                    store: id.store,
                    version: String::new(),
                }),
            ),
            http_requests: declare(r, &HTTP_REQUESTS, Family::default()),
            audience: Audience::new(r),
            // Filled in below, once the last families are in.
            registry: RwLock::new(Registry::default()),
        };
        let gpu: Gauge = declare(r, &GPU_REQUESTED, Gauge::default());
        gpu.set(i64::from(id.gpu_requested));
        r.register(
            START_TIME_SECONDS.name,
            START_TIME_SECONDS.help,
            ConstGauge::new(started),
        );
        declare(
            r,
            &BUILD_INFO,
            InfoGauge::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        r.register_collector(Box::new(ProcessCollector));
        m.registry = RwLock::new(registry);
        m
    }

    pub fn stage(&self, s: Stage) -> &Histogram {
        self.stage_seconds.get(s as usize)
    }

    pub fn http_request(&self, route: &str, status: u16) {
        self.http_requests
            .get_or_create(&HttpLabels {
                route: route.to_string(),
                status,
            })
            .inc();
    }

    /// The execution provider that ran each model's warm-up: `(model, provider)`.
    pub fn set_providers<'a>(&self, in_use: impl IntoIterator<Item = (&'a str, &'a str)>) {
        self.execution_provider.clear();
        for (model, provider) in in_use {
            self.execution_provider
                .get_or_create(&ProviderLabels {
                    model: model.to_string(),
                    provider: provider.to_string(),
                })
                .set(1);
        }
    }

    /// A catalog became active: its version id (`v0007`), what staff or HQ called it
    /// (`spring-2027`, may be empty) and its item count.
    pub fn set_catalog(&self, version: &str, label: &str, items: usize) {
        self.catalog_items.set(items as i64);
        self.catalog_info.set(CatalogLabels {
            version: version.to_string(),
            label: label.to_string(),
        });
        // The fleet compares boxes by the version as published (the channel's and the bundle
        // manifest's), which every box shares; the id is numbered by each box's own store.
        let published = if label.is_empty() { version } else { label };
        self.box_info.update(|b| b.version = published.to_string());
        self.audience.catalog_changed(version);
    }

    /// Adds another module's metric families to what `/metrics` serves. The catalog channel's
    /// subscriber, for one, keeps a struct of prometheus-client families with
    /// `fn register(&self, registry: &mut Registry)`, and the daemon calls
    /// `metrics.register(|r| channel_metrics.register(r))` while it starts, before the HTTP server
    /// answers (a family added later shows from the next scrape on).
    ///
    /// Names are the caller's: keep them under `vitrine_`, give counters their name without
    /// `_total` (prometheus-client appends it, and debug builds panic on a name that has it) or
    /// register through [`declare`] with a [`Declaration`], which takes the suffix off. Help texts
    /// get a full stop appended. Families encode in the order they were registered.
    pub fn register(&self, f: impl FnOnce(&mut Registry)) {
        f(&mut self.registry.write().unwrap_or_else(|p| p.into_inner()));
    }

    /// The Prometheus text exposition (format 0.0.4) of every registered family, after setting the
    /// values that `live` holds.
    pub fn scrape(&self, live: &Live) -> String {
        for (i, s) in CAMERA_STATES.iter().enumerate() {
            self.camera_state.get(i).set(i64::from(*s == live.camera));
        }
        self.ready.set(i64::from(live.ready));
        self.encode()
    }

    /// The text exposition of the values as they stand.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let registry = self.registry.read().unwrap_or_else(|p| p.into_inner());
        // Writing to a String cannot fail and our own metrics never report an error; a family
        // registered by another module might, and the scrape then ends where it stopped.
        if prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).is_err() {
            tracing::warn!(
                "a metric family failed to encode; /metrics is cut short after {} bytes",
                out.len()
            );
        }
        out
    }
}

/// The standard `process_*` metrics (Prometheus's process collector) from `/proc/self`: CPU time,
/// resident memory and open files, so a technician sees what the daemon costs the box (and the
/// HTTP benchmark what display clients cost the daemon). Read at each scrape; left out where
/// `/proc` is missing.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let p = process_stats();
        if let Some(cpu) = p.cpu_seconds {
            let d = &PROCESS_CPU_SECONDS;
            let name = d.name.strip_suffix("_total").unwrap_or(d.name);
            let m = ConstCounter::new(cpu);
            m.encode(encoder.encode_descriptor(name, &help(d), None, m.metric_type())?)?;
        }
        for (d, v) in [
            (&PROCESS_RESIDENT_MEMORY_BYTES, p.resident_bytes),
            (&PROCESS_OPEN_FDS, p.open_fds),
        ] {
            if let Some(v) = v {
                let m = ConstGauge::new(v as i64);
                m.encode(encoder.encode_descriptor(d.name, &help(d), None, m.metric_type())?)?;
            }
        }
        Ok(())
    }
}

/// A help text as `Registry::register` writes it (a collector's help goes out as given).
fn help(d: &Declaration) -> String {
    format!("{}.", d.help)
}

#[derive(Debug, Default)]
struct ProcessStats {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<u64>,
    open_fds: Option<u64>,
}

fn process_stats() -> ProcessStats {
    let cpu_seconds = crate::process::cpu_time().map(|t| t.as_secs_f64());
    let resident_bytes = crate::process::resident_bytes();
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|fds| fds.count() as u64);
    ProcessStats {
        cpu_seconds,
        resident_bytes,
        open_fds,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn line_value(text: &str, prefix: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.trim().parse().ok())
    }

    #[test]
    fn stage_histograms_keep_their_names_and_cumulative_buckets() {
        let m = Metrics::default();
        m.stage(Stage::Detect).observe(Duration::from_millis(3));
        m.stage(Stage::Detect).observe(Duration::from_millis(30));
        let text = m.encode();
        assert!(
            text.contains("vitrine_stage_seconds_bucket{stage=\"detect\",le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(text.contains("vitrine_stage_seconds_bucket{stage=\"detect\",le=\"0.05\"} 2"));
        assert!(text.contains("vitrine_stage_seconds_count{stage=\"detect\"} 2"));
        assert!(text.contains("vitrine_stage_seconds_count{stage=\"publish\"} 0"));
        // Stages are listed in pipeline order.
        let at = |s: &str| text.find(&format!("stage=\"{s}\"")).expect(s);
        assert!(at("decode") < at("detect") && at("search") < at("publish"));
    }

    #[test]
    fn counters_keep_their_total_suffix_once() {
        let m = Metrics::default();
        m.frames_processed.inc_by(7);
        let text = m.encode();
        assert!(text.contains("# TYPE vitrine_frames_processed_total counter\n"));
        assert!(
            text.contains("\nvitrine_frames_processed_total 7\n"),
            "{text}"
        );
        assert!(!text.contains("_total_total"));
    }

    #[test]
    fn display_clients_go_up_and_down() {
        let m = Metrics::default();
        m.display_clients.inc();
        m.display_clients.inc();
        m.display_clients.dec();
        assert!(m.encode().contains("\nvitrine_display_clients 1\n"));
    }

    #[test]
    fn scrape_sets_camera_state_one_hot_and_readiness() {
        let m = Metrics::new(Identity {
            box_id: "box-7".into(),
            store: "paris-rivoli".into(),
            gpu_requested: true,
        });
        let text = m.scrape(&Live {
            camera: CameraState::Reconnecting,
            ready: false,
        });
        assert!(
            text.contains("vitrine_camera_state{state=\"reconnecting\"} 1"),
            "{text}"
        );
        assert!(text.contains("vitrine_camera_state{state=\"streaming\"} 0"));
        assert!(text.contains("\nvitrine_ready 0\n"));
        assert!(text.contains("\nvitrine_gpu_requested 1\n"));
        assert!(text.contains(&format!(
            "vitrine_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
        let started = line_value(&text, "vitrine_start_time_seconds ").expect("start time");
        assert!(started > 1.7e9, "{started}");
        let cpu = line_value(&text, "process_cpu_seconds_total ").expect("process CPU time");
        assert!(cpu >= 0.0);
        assert!(text.contains("\nprocess_resident_memory_bytes "));
        assert!(text.contains("# HELP process_open_fds Open file descriptors of the daemon.\n"));
        let text = m.scrape(&Live {
            camera: CameraState::Streaming,
            ready: true,
        });
        assert!(text.contains("vitrine_camera_state{state=\"streaming\"} 1"));
        assert!(text.contains("vitrine_camera_state{state=\"reconnecting\"} 0"));
        assert!(text.contains("\nvitrine_ready 1\n"));
    }

    #[test]
    fn catalog_swaps_change_catalog_and_box_info_as_a_whole() {
        let m = Metrics::new(Identity {
            box_id: "box-7".into(),
            store: "paris-rivoli".into(),
            gpu_requested: false,
        });
        m.set_catalog("v0001", "", 10);
        m.set_catalog("v0002", "spring-2027", 300);
        let text = m.encode();
        assert!(
            text.contains(
                "\nvitrine_box_info{box_id=\"box-7\",store=\"paris-rivoli\",version=\"spring-2027\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("\nvitrine_catalog_info{version=\"v0002\",label=\"spring-2027\"} 1\n")
        );
        assert!(!text.contains("v0001"), "{text}");
        assert!(text.contains("\nvitrine_catalog_items 300\n"));
        assert!(text.contains("\nvitrine_gpu_requested 0\n"));
        m.set_catalog("v0003", "v0003", 1);
        assert!(
            m.encode()
                .contains("\nvitrine_catalog_info{version=\"v0003\"} 1\n")
        );
    }

    #[test]
    fn providers_are_replaced_and_requests_counted_by_route_and_status() {
        let m = Metrics::default();
        m.set_providers([("detector", "CUDAExecutionProvider")]);
        m.set_providers([
            ("detector", "CPUExecutionProvider"),
            ("embedder", "CPUExecutionProvider"),
        ]);
        m.http_request("/api/status", 200);
        m.http_request("/api/status", 200);
        m.http_request("unmatched", 404);
        let text = m.encode();
        assert!(!text.contains("CUDA"), "{text}");
        assert!(text.contains(
            "vitrine_execution_provider{model=\"embedder\",provider=\"CPUExecutionProvider\"} 1"
        ));
        assert!(
            text.contains("vitrine_http_requests_total{route=\"/api/status\",status=\"200\"} 2")
        );
        assert!(text.contains("vitrine_http_requests_total{route=\"unmatched\",status=\"404\"} 1"));
    }

    #[test]
    fn another_module_registers_its_own_families() {
        let m = Metrics::default();
        let up: Gauge = Gauge::default();
        let refusals = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
        m.register(|r| {
            r.register(
                "vitrine_channel_up",
                "1 when the last channel check succeeded",
                up.clone(),
            );
            r.register(
                "vitrine_channel_refusals",
                "Channel documents or bundles refused",
                refusals.clone(),
            );
        });
        up.set(1);
        refusals
            .get_or_create(&vec![("reason", "bad_signature")])
            .inc();
        let text = m.encode();
        assert!(text.contains("\nvitrine_channel_up 1\n"), "{text}");
        assert!(text.contains("\nvitrine_channel_refusals_total{reason=\"bad_signature\"} 1\n"));
    }

    #[test]
    fn every_family_has_help_and_type_and_every_declared_name_appears() {
        let m = Metrics::default();
        let text = m.encode();
        // A `Family` (HTTP requests, providers, items shown) is left out until its first member.
        assert!(!text.contains(ITEMS_SHOWN.name));
        for d in [
            FRAMES_CAPTURED,
            FRAMES_PROCESSED,
            GARMENT_SHARE,
            STAGE_SECONDS,
            CAMERA_STATE,
            GPU_REQUESTED,
            BOX_INFO,
            SHOPPERS_SEEN,
            SHOPPER_DWELL_SECONDS,
            GARMENTS_RECOMMENDED,
            PROCESS_CPU_SECONDS,
        ] {
            assert!(
                text.contains(&format!("# TYPE {} ", d.name)),
                "{} missing in\n{text}",
                d.name
            );
        }
        for family in text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
        {
            assert!(text.contains(&format!("# HELP {family} ")), "{family}");
        }
    }
}
