//! # Vitrine
//!
//! A camera looks out of the shop window; when a shopper walks past, Vitrine sees what they are
//! wearing and the storefront display shows similar styles from the store's own catalog.
//!
//! # Layout — modules in the order a frame travels
//!
//! - [`config`]: the TOML file → validated [`config::Settings`] (every problem reported at once).
//! - [`capture`]: frame sources (V4L2 camera, replay folder, still image), the supervisor that
//!   reconnects a camera, and the one-frame slot where capture meets inference.
//! - [`vision`]: ONNX Runtime loading and providers, the detector (preprocess → run → decode/NMS,
//!   boxes back in frame pixels), garment regions, the embedder.
//! - [`catalog`]: items, embeddings and per-group HNSW indexes; an immutable snapshot swapped
//!   atomically; bundles, versions on disk, imports.
//! - [`recommend`]: shopper tracking, embedding smoothing, stable top-k lists.
//! - [`pipeline`]: the inference thread that runs the stages above for each frame.
//! - [`http`]: display, technician and staff routes (the staff catalog API may listen apart).
//! - [`telemetry`]: every metric, declared once.
//! - [`systemd`]: `sd_notify` (ready, watchdog fed by processed frames, stopping).
//! - [`eval`]: off the frame's path — tools for model trainers: detector AP/mAP, label-map
//!   checks, dataset lint, retrieval recall.
//! - [`bench`]: off the frame's path too — `vitrine bench` (pipeline, catalog, http), driving
//!   the daemon's own capture supervisor and pipeline rather than copies of them.
//! - [`process`]: what this process costs the machine (CPU time, resident memory), from `/proc`.
//!
//! [`run`] wires them together: HTTP first (so health answers while models load), then catalog and
//! models, then the camera; on shutdown readiness fails first and the stages drain in order.

pub mod bench;
pub mod capture;
pub mod catalog;
pub mod config;
pub mod eval;
pub mod http;
pub mod pipeline;
pub mod process;
pub mod recommend;
pub mod systemd;
pub mod telemetry;
#[cfg(test)]
mod test_alloc;
pub mod vision;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::capture::{CaptureError, LatestSlot};
use crate::catalog::{Catalog, CatalogError};
use crate::config::Settings;
use crate::http::{AppState, Readiness};
use crate::recommend::Recommendations;
use crate::telemetry::Metrics;
use crate::vision::ModelError;

/// How long in-flight requests and stages get to finish after a shutdown signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(
        "cannot listen on {addr}: {source}. Is another vitrine (or another program) using it? Pick another port with --listen or server.listen"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error("{0}")]
    Internal(String),
}

/// Hooks the binary gives the daemon: where it listens, and the moments systemd cares about.
pub struct Hooks {
    /// Called once the server listens, with its address (port 0 resolved).
    pub on_listen: Box<dyn FnOnce(SocketAddr) + Send>,
    /// Called once models are warm and the catalog is loaded.
    pub on_ready: Box<dyn FnOnce() + Send>,
    /// Called after every processed frame (the systemd watchdog is fed from here).
    pub on_frame: Arc<dyn Fn() + Send + Sync>,
    /// Called once the staff API listens on its own address (`server.staff_listen`).
    pub on_staff_listen: Box<dyn FnOnce(SocketAddr) + Send>,
}

impl Default for Hooks {
    fn default() -> Self {
        Self {
            on_listen: Box::new(|_| {}),
            on_ready: Box::new(|| {}),
            on_frame: Arc::new(|| {}),
            on_staff_listen: Box::new(|_| {}),
        }
    }
}

/// Runs the daemon until `shutdown` completes.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send,
    hooks: Hooks,
) -> Result<(), DaemonError> {
    let metrics = Arc::new(Metrics::default());
    let listener = tokio::net::TcpListener::bind(settings.server.listen)
        .await
        .map_err(|source| DaemonError::Bind {
            addr: settings.server.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| DaemonError::Bind {
        addr: settings.server.listen,
        source,
    })?;

    let readiness = Arc::new(Readiness::default());
    let (publish, recommendations) = watch::channel(Arc::new(Recommendations::default()));
    let slot = LatestSlot::new();
    let stop = Arc::new(AtomicBool::new(false));

    // The catalog snapshot starts empty so the HTTP server can come up before it is loaded.
    let empty = Catalog::from_items(
        "none".into(),
        settings.catalog.path.clone(),
        vec![],
        vec![],
        settings.embedder.spec.output.dim,
        None,
        &settings.catalog.index,
    );
    let catalog: catalog::SharedCatalog = Arc::new(arc_swap::ArcSwap::from_pointee(empty));
    let camera_status = Arc::new(std::sync::Mutex::new(capture::CameraStatus {
        source: "not started".into(),
        state: capture::CameraState::Opening,
        last_error: None,
        reconnects: 0,
        last_frame: None,
        last_frame_at: None,
    }));
    let providers = Arc::new(RwLock::new(Vec::new()));
    // Flipped at shutdown: ends the display feed, and with it every page's event stream.
    let (closing, closing_rx) = watch::channel(false);
    let display = http::display::DisplayState::new(
        http::display::spawn_feed(recommendations.clone(), closing_rx),
        settings.server.debug_view,
    );
    let debug_frame = display.debug_frame.clone();
    let state = AppState {
        recommendations,
        metrics: metrics.clone(),
        camera: camera_status.clone(),
        catalog: catalog.clone(),
        readiness: readiness.clone(),
        providers: providers.clone(),
        frame_stale: settings.frame_stale,
        started: Instant::now(),
        display,
        info: Arc::new(http::status::StatusInfo::from_settings(&settings)),
    };
    // The catalog's one writer: versions in the data folder, imports, the staff API behind it.
    let on_swap = {
        let metrics = metrics.clone();
        Box::new(move |c: &Catalog| {
            metrics.catalog_items.set(c.items.len() as f64);
            *metrics
                .catalog_version
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = c.version.clone();
            *metrics
                .catalog_label
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = c.label.clone();
        })
    };
    let service = Arc::new(catalog::import::CatalogService::open(
        catalog::import::ServiceConfig::from_settings(&settings),
        catalog.clone(),
        on_swap,
    )?);
    let staff = http::catalog_api::router(http::catalog_api::StaffState::new(
        service.clone(),
        settings.catalog.token.clone(),
        metrics.clone(),
        settings.catalog.receive_timeout,
    ));
    if settings.catalog.token.is_none() {
        tracing::warn!(
            "no staff token configured (catalog.token_file / catalog.token_env): the catalog staff API refuses every request"
        );
    }

    let (http_stop_tx, http_stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let app = http::router(state);
    let mut limits = settings.server.limits;
    limits.max_connections = http::serve::fit_to_fd_limit(limits.max_connections);
    let pool = http::serve::Pool::new(limits);
    let (app, staff_server) = match settings.server.staff_listen {
        None => (app.merge(staff), None),
        Some(staff_addr) => {
            let l = tokio::net::TcpListener::bind(staff_addr)
                .await
                .map_err(|source| DaemonError::Bind {
                    addr: staff_addr,
                    source,
                })?;
            let bound = l.local_addr().map_err(|source| DaemonError::Bind {
                addr: staff_addr,
                source,
            })?;
            let staff_stop = stopped(http_stop_rx.clone());
            let handle = tokio::spawn(http::serve::serve(l, staff, pool.clone(), staff_stop));
            (hooks.on_staff_listen)(bound);
            (app, Some(handle))
        }
    };
    let http_stop = stopped(http_stop_rx);
    // Peer addresses (ConnectInfo) let the debug view serve camera frames to local browsers only.
    let server = tokio::spawn(http::serve::serve(listener, app, pool, http_stop));
    (hooks.on_listen)(addr);

    // Catalog and models load in parallel: the active version is reloaded from its dump (or the
    // seed imported) on the blocking pool while the inference thread builds and warms its sessions.
    let catalog_task = {
        let service = service.clone();
        tokio::task::spawn_blocking(move || service.load_initial())
    };
    let (engine_tx, engine_rx) = tokio::sync::oneshot::channel();
    let engine_settings = settings.clone();
    let engine_catalog = catalog.clone();
    let inference = {
        let (slot, metrics, stop, readiness, on_frame) = (
            slot.clone(),
            metrics.clone(),
            stop.clone(),
            readiness.clone(),
            hooks.on_frame.clone(),
        );
        std::thread::Builder::new()
            .name("inference".into())
            .spawn(
                move || match pipeline::Engine::build(&engine_settings, engine_catalog) {
                    Err(e) => {
                        let _ = engine_tx.send(Err(e));
                    }
                    Ok(engine) => {
                        let _ = engine_tx.send(Ok((engine.providers(), engine.preparer())));
                        let debug_view = engine_settings.server.debug_view;
                        let beat: Arc<dyn Fn(&capture::Frame) + Send + Sync> =
                            Arc::new(move |frame| {
                                readiness.beat();
                                if debug_view {
                                    // An Arc clone: the frame stays in memory, never on disk.
                                    *debug_frame.lock().unwrap_or_else(|p| p.into_inner()) =
                                        Some(frame.image.clone());
                                }
                                on_frame();
                            });
                        pipeline::run_loop(engine, slot, publish, metrics, beat, stop);
                    }
                },
            )
            .map_err(|e| DaemonError::Internal(format!("cannot start the inference thread: {e}")))?
    };
    let loaded = catalog_task
        .await
        .map_err(|e| DaemonError::Internal(e.to_string()))?;
    let engine = engine_rx
        .await
        .map_err(|_| DaemonError::Internal("the inference thread ended during start-up".into()));
    let fail = |e: DaemonError, slot: &LatestSlot| {
        slot.close();
        e
    };
    // Model problems first, as `validate` names them: a broken embedder also makes every stored
    // catalog look "made with a different embedder", which would hide the real cause.
    let (reports, preparer) = engine?.map_err(|e| fail(e.into(), &slot))?;
    let loaded = loaded.map_err(|e| fail(e.into(), &slot))?;
    for r in &reports {
        tracing::info!(model = %r.model, provider = %r.in_use, warmup_ms = format!("{:.0}", r.warmup_ms), "model ready");
    }
    *metrics.providers.lock().unwrap_or_else(|p| p.into_inner()) = reports
        .iter()
        .map(|r| (r.model.clone(), r.in_use.clone()))
        .collect();
    *providers.write().unwrap_or_else(|p| p.into_inner()) = reports;
    metrics.catalog_items.set(loaded.items.len() as f64);
    *metrics
        .catalog_version
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = loaded.version.clone();
    *metrics
        .catalog_label
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = loaded.label.clone();
    tracing::info!(version = %loaded.version, items = loaded.items.len(), "catalog loaded");
    catalog.store(loaded);
    readiness.catalog.store(true, Ordering::Relaxed);
    readiness.models.store(true, Ordering::Relaxed);

    let source = settings.camera.build().map_err(|e| fail(e.into(), &slot))?;
    let (status, capture) = capture::supervisor::spawn(
        source,
        slot.clone(),
        metrics.clone(),
        stop.clone(),
        Some(preparer),
    );
    {
        let s = status.lock().unwrap_or_else(|p| p.into_inner()).clone();
        *camera_status.lock().unwrap_or_else(|p| p.into_inner()) = s;
    }
    // Mirror the supervisor's status into the handle the HTTP state holds.
    let mirror = {
        let (status, camera_status, stop) = (status.clone(), camera_status.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let s = status.lock().unwrap_or_else(|p| p.into_inner()).clone();
                *camera_status.lock().unwrap_or_else(|p| p.into_inner()) = s;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    (hooks.on_ready)();
    // Leftovers of interrupted catalog writes were only moved aside at start-up; deleting them
    // (possibly tens of thousands of files) waits until the appliance serves.
    {
        let service = service.clone();
        tokio::task::spawn_blocking(move || {
            if let Ok(store) = service.store() {
                store.empty_trash();
            }
        });
    }

    shutdown.await;
    tracing::info!("shutting down");
    readiness.shutting_down.store(true, Ordering::Relaxed);
    closing.send_replace(true);
    stop.store(true, Ordering::Relaxed);
    let joined = tokio::task::spawn_blocking(move || {
        let _ = capture.join();
        let _ = inference.join();
    });
    if tokio::time::timeout(DRAIN_TIMEOUT, joined).await.is_err() {
        tracing::warn!("stages did not stop within {DRAIN_TIMEOUT:?}; exiting anyway");
    }
    mirror.abort();
    let _ = http_stop_tx.send(true);
    if let Some(staff) = staff_server {
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, staff).await;
    }
    match tokio::time::timeout(DRAIN_TIMEOUT, server).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(DaemonError::Internal(format!("HTTP server task: {e}"))),
        Err(_) => {
            tracing::warn!("HTTP connections still open after {DRAIN_TIMEOUT:?}; closing them");
            Ok(())
        }
    }
}

/// Builds every model (detector, embedder, pose) as `serve` would (checks the graphs against their configs and label maps,
/// warms them up) and reports every failure, for `vitrine validate`.
pub fn check_models(settings: &Settings) -> Result<(), config::ConfigError> {
    let mut problems = Vec::new();
    let lib = settings.runtime.library.as_deref();
    if let Err(e) = vision::detector::Detector::build(
        &settings.detector.spec,
        &settings.runtime.session,
        lib,
        settings.detector.nms,
        settings.detector.resize,
    ) {
        problems.push(e.to_string());
    }
    if let Err(e) =
        vision::embedder::Embedder::build(&settings.embedder.spec, &settings.runtime.session, lib)
    {
        problems.push(e.to_string());
    }
    if let Some(pose) = &settings.pose
        && let Err(e) =
            vision::pose::PoseEstimator::build(&pose.spec, &settings.runtime.session, lib)
    {
        problems.push(e.to_string());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(config::ConfigError {
            path: settings.config_path.clone(),
            problems,
        })
    }
}

/// One JSON line per image: `{"image", "width", "height", "boxes": [{label, score, bbox}]}`,
/// the [`eval::formats::ImageRecord`] that `vitrine eval detections --pred` reads.
pub fn detect_images(
    settings: &Settings,
    images: &[std::path::PathBuf],
    out: &mut dyn std::io::Write,
) -> Result<(), DaemonError> {
    let mut det = vision::detector::Detector::build(
        &settings.detector.spec,
        &settings.runtime.session,
        settings.runtime.library.as_deref(),
        settings.detector.nms,
        settings.detector.resize,
    )?;
    for path in images {
        let img = capture::replay::read_image(path).map_err(DaemonError::Internal)?;
        let dets = det.detect(&img)?;
        let rec = eval::formats::ImageRecord {
            image: path.display().to_string(),
            width: Some(img.width()),
            height: Some(img.height()),
            boxes: dets
                .into_iter()
                .map(|d| eval::formats::BoxRecord {
                    label: d.label,
                    score: Some(d.score),
                    bbox: d.bbox,
                })
                .collect(),
        };
        let line = serde_json::to_string(&rec).map_err(|e| DaemonError::Internal(e.to_string()))?;
        writeln!(out, "{line}").map_err(|e| DaemonError::Internal(e.to_string()))?;
    }
    Ok(())
}

/// `vitrine catalog build` with the configured embedder.
pub fn build_catalog(
    settings: &Settings,
    images: &std::path::Path,
    meta: &std::path::Path,
    out: &std::path::Path,
    version: &str,
) -> Result<usize, DaemonError> {
    let mut emb = vision::embedder::Embedder::build(
        &settings.embedder.spec,
        &settings.runtime.session,
        settings.runtime.library.as_deref(),
    )?;
    Ok(catalog::build::build_catalog(
        &mut emb,
        &settings.similarity,
        images,
        meta,
        out,
        version,
        {
            let bar = catalog::cli::progress_bar(0, "embedding");
            move |done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            }
        },
    )?)
}
