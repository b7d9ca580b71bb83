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
//! - [`vision`]: ONNX Runtime loading, providers and the session steps every model shares
//!   (`vision::runtime`), the detector (preprocess → run → decode/NMS, boxes back in frame
//!   pixels), the pose model, garment regions and masks, the embedder.
//! - [`catalog`]: items, embeddings and per-group HNSW indexes; an immutable snapshot swapped
//!   atomically; bundles, versions on disk, imports.
//! - [`recommend`]: shopper tracking, embedding smoothing, stable top-k lists.
//! - [`pipeline`]: the inference thread that runs the stages above for each frame.
//! - [`http`]: display, technician and staff routes (the staff catalog API may listen apart);
//!   the one place a catalog image path becomes a URL.
//! - [`telemetry`]: every metric, declared once.
//! - [`systemd`]: `sd_notify` (ready, watchdog fed by processed frames, stopping).
//! - [`shutdown`]: the one stop signal every stage watches, and the handles `run` waits on.
//! - [`eval`]: off the frame's path — tools for model trainers: detector AP/mAP, label-map
//!   checks, dataset lint, retrieval recall.
//! - [`bench`]: off the frame's path too — `vitrine bench` (pipeline, catalog, http), driving
//!   the daemon's own capture supervisor and pipeline rather than copies of them.
//! - [`process`]: what this process costs the machine (CPU time, resident memory), from `/proc`.
//!
//! [`run`] is a short list of stage starts, each from its own settings: the HTTP servers first
//! (so health answers while models load), the catalog and the inference thread's models in
//! parallel, then capture. On shutdown readiness fails first, the stages drain on one
//! [`shutdown::Stop`] signal, and the HTTP servers stop last. A new stage is one more
//! `stages.add(name, its_start(…)?)` line in `run`.

pub mod bench;
pub mod capture;
pub mod catalog;
pub mod config;
pub mod eval;
pub mod http;
pub mod pipeline;
pub mod process;
pub mod recommend;
pub mod scratch;
pub mod shutdown;
pub mod systemd;
pub mod telemetry;
#[cfg(test)]
mod test_alloc;
pub mod vision;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::capture::{CameraStatus, CaptureError, LatestSlot, StatusHandle};
use crate::catalog::import::CatalogService;
use crate::catalog::{Catalog, CatalogError, SharedCatalog};
use crate::config::Settings;
use crate::http::{AppState, Readiness};
use crate::recommend::Recommendations;
use crate::shutdown::Stop;
use crate::telemetry::Metrics;
use crate::vision::detector::InputPreparer;
use crate::vision::{ModelError, ProviderReport};

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
    /// A stage's thread could not be started: the process is out of threads or memory.
    #[error("cannot start the {stage} thread: {source}")]
    Spawn {
        stage: &'static str,
        source: std::io::Error,
    },
    /// A stage panicked; its message is in the log.
    #[error("the {stage} stopped unexpectedly (it panicked; its message is in the log above)")]
    Panicked { stage: &'static str },
    /// `vitrine detect`: an image that cannot be read or decoded (the lines of the images before
    /// it were written). The message names the file.
    #[error("{message}")]
    Image { path: PathBuf, message: String },
    /// `vitrine detect`: its output cannot be written (a closed pipe, a full disk).
    #[error("cannot write the output: {0}")]
    Output(#[source] std::io::Error),
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
///
/// The stages start in the order a newcomer would check them: HTTP first (so health answers
/// while models load), then the catalog and the models in parallel, then the camera. On shutdown
/// readiness fails first, the stages drain on the one [`shutdown::Stop`] signal, and the HTTP
/// servers stop last.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send,
    hooks: Hooks,
) -> Result<(), DaemonError> {
    let Hooks {
        on_listen,
        on_ready,
        on_frame,
        on_staff_listen,
    } = hooks;
    let (mut stages, stop) = shutdown::channel();
    let shared = Shared::new(&settings);
    let (publish, recommendations) = watch::channel(Arc::new(Recommendations::default()));
    let listener = bind(settings.server.listen).await?;
    let service = open_catalog(&settings, &shared)?;
    // The catalog channel (`[catalog.channel]`): in /api/status and /metrics from now, polling
    // once the first catalog is loaded (a version taken before would be overwritten by it).
    let channel = catalog::channel::Subscriber::build(&settings);
    let monitor = channel.as_ref().map(|c| c.monitor());
    if let Some(m) = &monitor {
        shared.metrics.register(|r| m.metrics.register(r));
    }
    let app = app_state(&settings, &shared, recommendations, &stop, monitor);
    let heartbeat = heartbeat(&settings, &shared, &app, on_frame);
    let staff = staff_router(&settings, &service, &shared);
    let http = HttpServers::start(&settings.server, listener, app, staff, on_staff_listen).await?;
    on_listen(http.addr);

    // Catalog and models load in parallel: the active version is reloaded from its dump (or the
    // seed imported) on the blocking pool while the inference thread builds and warms its sessions.
    let catalog = start_catalog(&service);
    let inference = pipeline::start(
        &settings,
        shared.catalog.clone(),
        shared.slot.clone(),
        pipeline::Outputs {
            publish,
            metrics: shared.metrics.clone(),
            heartbeat,
        },
        stop.clone(),
    )
    .map_err(|source| DaemonError::Spawn {
        stage: "inference",
        source,
    })?;
    stages.add("inference", inference.thread);
    loaded(inference.ready, catalog, &shared).await?;
    if let Some(poller) = channel.and_then(|c| c.start(service.clone(), stop.clone())) {
        stages.add("catalog channel", poller);
    }

    stages.add(
        "capture",
        capture::start(
            &settings.camera,
            Some(InputPreparer::new(&settings.detector)),
            shared.slot.clone(),
            shared.camera.clone(),
            shared.metrics.clone(),
            stop.clone(),
        )?,
    );
    on_ready();
    empty_catalog_trash(&service);

    shutdown.await;
    tracing::info!("shutting down");
    shared
        .readiness
        .shutting_down
        .store(true, Ordering::Relaxed);
    stages.drain(DRAIN_TIMEOUT).await;
    http.drain(DRAIN_TIMEOUT).await
}

/// What the stages share, made once before any of them starts.
struct Shared {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    /// The snapshot every search reads. It starts empty so the HTTP server can come up before
    /// the catalog is loaded.
    catalog: SharedCatalog,
    /// Written by the capture thread, read by the health and status endpoints.
    camera: StatusHandle,
    /// The provider each model runs on, known once the models are warm.
    providers: Arc<RwLock<Vec<ProviderReport>>>,
    /// Where capture meets inference.
    slot: Arc<LatestSlot>,
}

impl Shared {
    fn new(settings: &Settings) -> Self {
        let empty = Catalog::empty(
            settings.catalog.path.clone(),
            settings.embedder.spec.output.dim,
            &settings.catalog.index,
        );
        Self {
            metrics: Arc::new(Metrics::from_settings(settings)),
            readiness: Arc::new(Readiness::default()),
            catalog: Arc::new(arc_swap::ArcSwap::from_pointee(empty)),
            camera: Arc::new(Mutex::new(CameraStatus::new("not started"))),
            providers: Arc::new(RwLock::new(Vec::new())),
            slot: LatestSlot::new(),
        }
    }
}

/// A listener on `addr`, with the address it got (port 0 resolved).
async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), DaemonError> {
    let fail = move |source| DaemonError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(fail)?;
    let bound = listener.local_addr().map_err(fail)?;
    Ok((listener, bound))
}

/// The state every HTTP handler reads.
fn app_state(
    settings: &Settings,
    shared: &Shared,
    recommendations: watch::Receiver<Arc<Recommendations>>,
    stop: &Stop,
    channel: Option<Arc<catalog::channel::ChannelMonitor>>,
) -> AppState {
    // The display feed ends with the stop signal, and with it every page's event stream.
    let feed = http::display::spawn_feed(recommendations.clone(), stop.watch());
    AppState {
        recommendations,
        metrics: shared.metrics.clone(),
        camera: shared.camera.clone(),
        catalog: shared.catalog.clone(),
        readiness: shared.readiness.clone(),
        providers: shared.providers.clone(),
        frame_stale: settings.frame_stale,
        started: Instant::now(),
        display: http::display::DisplayState::new(feed, settings.server.debug_view),
        info: Arc::new(http::status::StatusInfo::from_settings(settings)),
        channel,
    }
}

/// What the inference thread calls after each published frame: readiness, the debug view's
/// frame, and the binary's hook (the systemd watchdog).
fn heartbeat(
    settings: &Settings,
    shared: &Shared,
    app: &AppState,
    on_frame: Arc<dyn Fn() + Send + Sync>,
) -> Arc<dyn Fn(&capture::Frame) + Send + Sync> {
    let readiness = shared.readiness.clone();
    let debug_frame = app.display.debug_frame.clone();
    let debug_view = settings.server.debug_view;
    Arc::new(move |frame| {
        readiness.beat();
        if debug_view {
            // An Arc clone: the frame stays in memory, never on disk.
            *debug_frame.lock().unwrap_or_else(|p| p.into_inner()) = Some(frame.image.clone());
        }
        on_frame();
    })
}

/// The catalog's one writer: versions in the data folder, imports, the staff API behind it.
fn open_catalog(settings: &Settings, shared: &Shared) -> Result<Arc<CatalogService>, DaemonError> {
    let on_swap = {
        let metrics = shared.metrics.clone();
        Box::new(move |c: &Catalog| metrics.set_catalog(&c.version, &c.label, c.items.len()))
    };
    Ok(Arc::new(CatalogService::open(
        catalog::import::ServiceConfig::from_settings(settings),
        shared.catalog.clone(),
        on_swap,
    )?))
}

/// The staff API over the catalog service.
fn staff_router(settings: &Settings, service: &Arc<CatalogService>, shared: &Shared) -> Router {
    if settings.catalog.token.is_none() {
        tracing::warn!(
            "no staff token configured (catalog.token_file / catalog.token_env): the catalog staff API refuses every request"
        );
    }
    http::catalog_api::router(http::catalog_api::StaffState::new(
        service.clone(),
        settings.catalog.token.clone(),
        shared.metrics.clone(),
        settings.catalog.receive_timeout,
    ))
}

/// The catalog stage's start: the catalog to serve (the active version reloaded from its dump,
/// or the seed imported), made on the blocking pool.
fn start_catalog(
    service: &Arc<CatalogService>,
) -> tokio::task::JoinHandle<Result<Arc<Catalog>, CatalogError>> {
    let service = service.clone();
    tokio::task::spawn_blocking(move || service.load_initial())
}

/// Waits for the models and the initial catalog, then marks both ready.
async fn loaded(
    models: tokio::sync::oneshot::Receiver<Result<Vec<ProviderReport>, ModelError>>,
    catalog: tokio::task::JoinHandle<Result<Arc<Catalog>, CatalogError>>,
    shared: &Shared,
) -> Result<(), DaemonError> {
    let catalog = catalog.await.map_err(|_| DaemonError::Panicked {
        stage: "catalog load",
    })?;
    let models = models.await.map_err(|_| DaemonError::Panicked {
        stage: "inference thread",
    })?;
    // Model problems first, as `validate` names them: a broken embedder also makes every stored
    // catalog look "made with a different embedder", which would hide the real cause.
    models_ready(models?, shared);
    serve_catalog(catalog?, shared);
    Ok(())
}

/// The initial catalog is loaded: `load_initial` swapped it in and set its metrics on the way
/// (`on_swap`), as every later swap does.
fn serve_catalog(loaded: Arc<Catalog>, shared: &Shared) {
    tracing::info!(version = %loaded.version, items = loaded.items.len(), "catalog loaded");
    shared.readiness.catalog.store(true, Ordering::Relaxed);
}

/// The models are built and warm: say which provider runs each.
fn models_ready(reports: Vec<ProviderReport>, shared: &Shared) {
    for r in &reports {
        tracing::info!(model = %r.model, provider = %r.in_use, warmup_ms = format!("{:.0}", r.warmup_ms), "model ready");
    }
    shared.metrics.set_providers(
        reports
            .iter()
            .map(|r| (r.model.as_str(), r.in_use.as_str())),
    );
    *shared.providers.write().unwrap_or_else(|p| p.into_inner()) = reports;
    shared.readiness.models.store(true, Ordering::Relaxed);
}

/// Leftovers of interrupted catalog writes were only moved aside at start-up; deleting them
/// (possibly tens of thousands of files) waits until the appliance serves.
fn empty_catalog_trash(service: &Arc<CatalogService>) {
    let service = service.clone();
    tokio::task::spawn_blocking(move || {
        if let Ok(store) = service.store() {
            store.empty_trash();
        }
    });
}

/// The HTTP side: the main server and, with `server.staff_listen`, the staff API's own.
///
/// They have a stop signal of their own, not the stages' [`Stop`]: they stop last, after the
/// stages have drained, so `/readyz` answers 503 ("shutting down") while they do.
struct HttpServers {
    /// The main server's address (port 0 resolved).
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    main: tokio::task::JoinHandle<()>,
    staff: Option<tokio::task::JoinHandle<()>>,
}

impl HttpServers {
    async fn start(
        server: &config::ServerSettings,
        (listener, addr): (TcpListener, SocketAddr),
        app: AppState,
        staff: Router,
        on_staff_listen: Box<dyn FnOnce(SocketAddr) + Send>,
    ) -> Result<Self, DaemonError> {
        let (stop, _) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let app = http::router(app);
        let mut limits = server.limits;
        limits.max_connections = http::serve::fit_to_fd_limit(limits.max_connections);
        // One pool: the connection limit holds for both listeners together.
        let pool = http::serve::Pool::new(limits);
        let (app, staff) = match server.staff_listen {
            None => (app.merge(staff), None),
            Some(staff_addr) => {
                let (l, bound) = bind(staff_addr).await?;
                let serve = http::serve::serve(l, staff, pool.clone(), stopped(stop.subscribe()));
                let handle = tokio::spawn(serve);
                on_staff_listen(bound);
                (app, Some(handle))
            }
        };
        // Peer addresses (ConnectInfo) let the debug view serve camera frames to local browsers only.
        let main = tokio::spawn(http::serve::serve(
            listener,
            app,
            pool,
            stopped(stop.subscribe()),
        ));
        Ok(Self {
            addr,
            stop,
            main,
            staff,
        })
    }

    /// Stops accepting, then gives open requests up to `timeout` to finish.
    async fn drain(self, timeout: Duration) -> Result<(), DaemonError> {
        self.stop.send_replace(true);
        if let Some(staff) = self.staff {
            let _ = tokio::time::timeout(timeout, staff).await;
        }
        match tokio::time::timeout(timeout, self.main).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(DaemonError::Panicked {
                stage: "HTTP server",
            }),
            Err(_) => {
                tracing::warn!("HTTP connections still open after {timeout:?}; closing them");
                Ok(())
            }
        }
    }
}

/// Builds every model (detector, embedder, pose) as `serve` would (checks the graphs against their configs and label maps,
/// warms them up) and reports every failure, for `vitrine validate`.
pub fn check_models(settings: &Settings) -> Result<(), config::ConfigError> {
    let mut problems = Vec::new();
    let lib = settings.runtime.library.as_deref();
    if let Err(e) = vision::detector::Detector::build(&settings.detector, &settings.runtime) {
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
    let mut det = vision::detector::Detector::build(&settings.detector, &settings.runtime)?;
    for path in images {
        let img = capture::replay::read_image(path).map_err(|message| DaemonError::Image {
            path: path.clone(),
            message,
        })?;
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
        serde_json::to_writer(&mut *out, &rec)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
            .map_err(DaemonError::Output)?;
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
