//! Technician endpoints: liveness (`/healthz`), readiness with reasons (`/readyz`) and Prometheus
//! metrics (`/metrics`).
//!
//! Readiness combines what the stages flip in [`super::Readiness`] (models warmed, catalog loaded,
//! a fresh processed frame, not shutting down) with the camera's own status, so a 503 says what
//! to look at ("camera … is reconnecting: No such device") rather than only that frames stopped.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;

use super::AppState;
use crate::capture::CameraState;
use crate::telemetry::{Live, camera_state_name};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// The process is alive and its HTTP server answers; says nothing about the pipeline.
async fn healthz() -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({ "status": "ok" })),
    )
}

/// Why the appliance is not ready (empty when it is): the readiness flags, plus the camera's
/// state and last error once the camera has been started.
pub fn reasons(state: &AppState) -> Vec<String> {
    let mut reasons = state.readiness.reasons(state.frame_stale);
    let r = &state.readiness;
    // Before start-up completes the camera is not opened yet; during shutdown it is being closed.
    let started = r.models.load(Ordering::Relaxed)
        && r.catalog.load(Ordering::Relaxed)
        && !r.shutting_down.load(Ordering::Relaxed);
    if !reasons.is_empty() && started {
        let cam = state.camera.lock().unwrap_or_else(|p| p.into_inner());
        if cam.state != CameraState::Streaming {
            reasons.push(format!(
                "camera '{}' is {}{}",
                cam.source,
                camera_state_name(cam.state),
                cam.last_error
                    .as_deref()
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default()
            ));
        }
    }
    reasons
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let reasons = reasons(&state);
    let status = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({ "ready": reasons.is_empty(), "reasons": reasons })),
    )
}

/// Everything registered with [`crate::telemetry::Metrics`], in Prometheus's text format 0.0.4:
/// what every Prometheus scrapes and `promtool check metrics` reads (OpenMetrics text would add
/// `# EOF` and `_created` series, which neither needs).
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let camera = state.camera.lock().unwrap_or_else(|p| p.into_inner()).state;
    let ready = reasons(&state).is_empty();
    if let Some(channel) = &state.channel {
        channel.refresh_behind();
    }
    (
        [(
            header::CONTENT_TYPE,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )],
        state.metrics.scrape(&Live { camera, ready }),
    )
}
