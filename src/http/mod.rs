//! HTTP: the routers of the display, the technician endpoints and the staff API, built by
//! functions from one cloneable [`AppState`] so tests can call them with `oneshot`.
//!
//! Handlers only read shared state (the newest recommendations from a `watch` channel, atomics,
//! the active catalog snapshot); none of them ever waits on a model.

pub mod api;
pub mod catalog_api;
pub mod display;
pub mod error;
pub mod health;
pub mod serve;
pub mod status;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use tokio::sync::watch;

use crate::capture::StatusHandle;
use crate::catalog::SharedCatalog;
use crate::recommend::Recommendations;
use crate::telemetry::Metrics;
use crate::vision::ProviderReport;

/// What readiness depends on, flipped by the stages as they come up and go down.
#[derive(Default)]
pub struct Readiness {
    pub models: AtomicBool,
    pub catalog: AtomicBool,
    pub shutting_down: AtomicBool,
    pub last_processed: std::sync::Mutex<Option<Instant>>,
}

impl Readiness {
    pub fn beat(&self) {
        *self
            .last_processed
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// Why the appliance is not ready, empty when it is.
    pub fn reasons(&self, stale: Duration) -> Vec<String> {
        let mut r = Vec::new();
        if self.shutting_down.load(Ordering::Relaxed) {
            r.push("shutting down".to_string());
        }
        if !self.models.load(Ordering::Relaxed) {
            r.push("models are not loaded and warmed up yet".into());
        }
        if !self.catalog.load(Ordering::Relaxed) {
            r.push("the catalog is not loaded yet".into());
        }
        match *self
            .last_processed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
        {
            None => r.push("no frame has been processed yet".into()),
            Some(t) if t.elapsed() > stale => r.push(format!(
                "no fresh frame for {:.1} s (limit {:.1} s): check the camera",
                t.elapsed().as_secs_f64(),
                stale.as_secs_f64()
            )),
            Some(_) => {}
        }
        r
    }
}

/// Shared state of every handler: cheap to clone, all `Arc`s.
#[derive(Clone)]
pub struct AppState {
    pub recommendations: watch::Receiver<Arc<Recommendations>>,
    pub metrics: Arc<Metrics>,
    pub camera: StatusHandle,
    pub catalog: SharedCatalog,
    pub readiness: Arc<Readiness>,
    pub providers: Arc<std::sync::RwLock<Vec<ProviderReport>>>,
    pub frame_stale: Duration,
    pub started: Instant,
    /// The display's feed (recommendations serialised once per publish) and debug-view state.
    pub display: display::DisplayState,
    /// Version, config and model files for `/api/status`.
    pub info: Arc<status::StatusInfo>,
    /// The catalog channel's status and metrics; `None` without `[catalog.channel]`.
    pub channel: Option<Arc<crate::catalog::channel::ChannelMonitor>>,
}

/// The whole application: display, technician and staff routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(api::router())
        .merge(display::router())
        .merge(health::router())
        .merge(status::router())
        .layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            count_requests,
        ))
        .with_state(state)
}

/// Counts requests by matched route (a bounded set) and status, never by raw path. Shared by
/// the main router and the staff API's.
pub(crate) async fn count_requests(
    State(metrics): State<Arc<Metrics>>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let resp = next.run(req).await;
    metrics.http_request(&route, resp.status().as_u16());
    resp
}
