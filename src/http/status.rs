//! `/api/status`: everything a technician asks first, as one JSON document — which version runs,
//! which model files (with checksums) on which execution provider, the camera, the catalog, the
//! pipeline counters, the audience figures with the most shown items, uptime, readiness and the
//! newest warnings and errors.
//!
//! The fixed part ([`StatusInfo`]) is taken from the validated settings once at start-up; the rest
//! is read from shared state on each request, so the handler never waits on a stage.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use super::AppState;
use crate::catalog::Catalog;
use crate::config::Settings;
use crate::telemetry::{Metrics, Problem, TOP_ITEMS, camera_state_name, recent_problems};
use crate::vision::runtime::Provider;

/// A model file as loaded: where it is and the SHA-256 it was checked against at start-up.
#[derive(Debug, Clone, Serialize)]
pub struct ModelFile {
    /// "detector" or "embedder".
    pub role: &'static str,
    pub name: String,
    pub config: PathBuf,
    pub file: PathBuf,
    pub sha256: String,
}

/// What does not change while the daemon runs.
#[derive(Debug, Clone, Serialize)]
pub struct StatusInfo {
    pub version: &'static str,
    pub config: PathBuf,
    pub models: Vec<ModelFile>,
    pub onnxruntime: Option<PathBuf>,
    pub providers_requested: Vec<Provider>,
    pub tensorrt_cache: Option<PathBuf>,
    pub debug_view: bool,
    #[serde(skip)]
    pub started_at: SystemTime,
}

impl StatusInfo {
    pub fn from_settings(s: &Settings) -> Self {
        let d = &s.detector.spec;
        let e = &s.embedder.spec;
        Self {
            version: env!("CARGO_PKG_VERSION"),
            config: s.config_path.clone(),
            models: vec![
                ModelFile {
                    role: "detector",
                    name: d.name.clone(),
                    config: d.config_path.clone(),
                    file: d.model_path.clone(),
                    sha256: d.sha256.clone(),
                },
                ModelFile {
                    role: "embedder",
                    name: e.name.clone(),
                    config: e.config_path.clone(),
                    file: e.model_path.clone(),
                    sha256: e.sha256.clone(),
                },
            ],
            onnxruntime: s.runtime.library.clone(),
            providers_requested: s.runtime.session.providers.clone(),
            tensorrt_cache: s.runtime.session.tensorrt_cache.clone(),
            debug_view: s.server.debug_view,
            started_at: SystemTime::now(),
        }
    }
}

pub fn router() -> Router<AppState> {
    Router::new().route("/api/status", get(status))
}

#[derive(Serialize)]
struct ProviderInUse {
    model: String,
    requested: Vec<String>,
    in_use: String,
    /// Graph nodes per provider in the warm-up run.
    nodes: Vec<(String, usize)>,
    warmup_ms: f64,
}

#[derive(Serialize)]
struct CameraView {
    source: String,
    state: &'static str,
    reconnects: u64,
    last_error: Option<String>,
    last_frame_at: Option<String>,
    last_frame_age_s: Option<f64>,
}

#[derive(Serialize)]
struct CatalogView {
    version: String,
    /// The bundle's version label.
    label: String,
    path: PathBuf,
    items: usize,
    groups: BTreeMap<String, usize>,
    /// Where the active version came from, as its `version.json` records it ("channel
    /// s3://… #12", "upload of … bytes", "folder …").
    source: Option<String>,
    /// "channel" when the catalog channel delivered it, "local" for a staff import or the seed.
    from: Option<&'static str>,
}

/// The `source` of a stored version, read once per version (its `version.json` never changes).
async fn version_source(catalog: &crate::catalog::Catalog) -> Option<String> {
    static SEEN: std::sync::Mutex<Option<(PathBuf, String)>> = std::sync::Mutex::new(None);
    if let Some((root, source)) = SEEN.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
        && *root == catalog.root
    {
        return Some(source.clone());
    }
    let text = tokio::fs::read(catalog.root.join("version.json"))
        .await
        .ok()?;
    let info: crate::catalog::store::VersionInfo = serde_json::from_slice(&text).ok()?;
    *SEEN.lock().unwrap_or_else(|p| p.into_inner()) =
        Some((catalog.root.clone(), info.source.clone()));
    Some(info.source)
}

#[derive(Serialize)]
struct PipelineView {
    frames_captured: u64,
    frames_processed: u64,
    frames_dropped: u64,
    frames_corrupt: u64,
    errors: u64,
    last_processed_age_s: Option<f64>,
    shoppers_in_view: i64,
}

/// Counts a chain compares stores and catalog versions by; never an image or a track.
#[derive(Serialize)]
struct AudienceView {
    shoppers_seen: u64,
    /// Shoppers gone from view, and their mean time in view.
    shoppers_gone: u64,
    mean_dwell_s: Option<f64>,
    garments_recommended: u64,
    top_items: TopItemsView,
}

/// The items put on display most often under the active catalog version.
#[derive(Serialize)]
struct TopItemsView {
    catalog_version: String,
    since: String,
    items: Vec<ShownItem>,
}

#[derive(Serialize)]
struct ShownItem {
    id: String,
    name: String,
    group: String,
    /// Times the item entered a garment's list on the display.
    shown: u64,
}

fn audience_view(m: &Metrics, catalog: &Catalog) -> AudienceView {
    let a = &m.audience;
    let gone = a.dwell_seconds.count();
    let top = a.top_items(TOP_ITEMS);
    // The tally counts positions in one catalog version; another one may have just gone live.
    let items = if top.version == catalog.version {
        top.items
            .iter()
            .filter(|(i, _)| *i < catalog.items.len())
            .map(|&(i, shown)| {
                let it = catalog.item(i);
                ShownItem {
                    id: it.id.clone(),
                    name: it.name.clone(),
                    group: it.group.clone(),
                    shown,
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    AudienceView {
        shoppers_seen: a.shoppers_seen.get(),
        shoppers_gone: gone,
        mean_dwell_s: (gone > 0).then(|| a.dwell_seconds.sum() / gone as f64),
        garments_recommended: a.garments_recommended.get(),
        top_items: TopItemsView {
            catalog_version: top.version,
            since: humantime::format_rfc3339_seconds(top.since).to_string(),
            items,
        },
    }
}

#[derive(Serialize)]
struct Status<'a> {
    version: &'static str,
    started_at: String,
    uptime_s: f64,
    ready: bool,
    reasons: Vec<String>,
    config: &'a PathBuf,
    onnxruntime: &'a Option<PathBuf>,
    providers_requested: &'a [Provider],
    tensorrt_cache: &'a Option<PathBuf>,
    models: &'a [ModelFile],
    providers: Vec<ProviderInUse>,
    camera: CameraView,
    catalog: CatalogView,
    pipeline: PipelineView,
    audience: AudienceView,
    /// The catalog channel this box follows; absent without `[catalog.channel]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<crate::catalog::channel::state::ChannelView>,
    display_clients: i64,
    debug_view: bool,
    last_errors: Vec<Problem>,
}

async fn status(State(state): State<AppState>) -> Response {
    let info = &state.info;
    let m = &state.metrics;
    let providers = state
        .providers
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|r| ProviderInUse {
            model: r.model.clone(),
            requested: r.requested.clone(),
            in_use: r.in_use.clone(),
            nodes: r.nodes.clone(),
            warmup_ms: r.warmup_ms,
        })
        .collect();
    let cam = state
        .camera
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let catalog = state.catalog.load_full();
    let source = version_source(&catalog).await;
    let channel = state.channel.as_ref().map(|c| {
        let mut v = c.view();
        v.active = Some(catalog.label.clone());
        v
    });
    let reasons = super::health::reasons(&state);
    let last_processed = *state
        .readiness
        .last_processed
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let age = |t: Option<Instant>| t.map(|t| t.elapsed().as_secs_f64());
    let body = Status {
        version: info.version,
        started_at: humantime::format_rfc3339_seconds(info.started_at).to_string(),
        uptime_s: state.started.elapsed().as_secs_f64(),
        ready: reasons.is_empty(),
        reasons,
        config: &info.config,
        onnxruntime: &info.onnxruntime,
        providers_requested: &info.providers_requested,
        tensorrt_cache: &info.tensorrt_cache,
        models: &info.models,
        providers,
        camera: CameraView {
            source: cam.source,
            state: camera_state_name(cam.state),
            reconnects: cam.reconnects,
            last_error: cam.last_error,
            last_frame_at: cam.last_frame_at,
            last_frame_age_s: age(cam.last_frame),
        },
        catalog: CatalogView {
            version: catalog.version.clone(),
            label: catalog.label.clone(),
            path: catalog.root.clone(),
            items: catalog.items.len(),
            groups: catalog.groups().map(|(g, n)| (g.to_string(), n)).collect(),
            from: source.as_deref().map(|s| {
                if s.starts_with("channel ") {
                    "channel"
                } else {
                    "local"
                }
            }),
            source,
        },
        pipeline: PipelineView {
            frames_captured: m.frames_captured.get(),
            frames_processed: m.frames_processed.get(),
            frames_dropped: m.frames_dropped.get(),
            frames_corrupt: m.frames_corrupt.get(),
            errors: m.pipeline_errors.get(),
            last_processed_age_s: age(last_processed),
            shoppers_in_view: m.shoppers_in_view.get(),
        },
        audience: audience_view(m, &catalog),
        channel,
        display_clients: m.display_clients.get(),
        debug_view: info.debug_view,
        last_errors: recent_problems(),
    };
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}
