//! Technician endpoints: liveness (`/healthz`), readiness with reasons (`/readyz`) and Prometheus
//! metrics (`/metrics`).
//!
//! Readiness combines what the stages flip in [`super::Readiness`] (models warmed, catalog loaded,
//! a fresh processed frame, not shutting down) with the camera's own status, so a 503 says what
//! to look at ("camera … is reconnecting: No such device") rather than only that frames stopped.

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;

use super::AppState;
use crate::capture::CameraState;
use crate::telemetry::{LiveState, camera_state_name};

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

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let camera = state.camera.lock().unwrap_or_else(|p| p.into_inner()).state;
    let ready = reasons(&state).is_empty();
    let started_at = SystemTime::now()
        .checked_sub(state.started.elapsed())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut text = state.metrics.render_with(&LiveState {
        camera,
        ready,
        started_at,
        version: env!("CARGO_PKG_VERSION"),
    });
    // BRIDGE (catalog channel, until telemetry moves onto prometheus-client): the channel's
    // families come from their own registry, appended as text. At merge, register
    // `ChannelMetrics` in the daemon's registry instead and delete these lines.
    if let Some(channel) = &state.channel {
        text.push_str(&channel.metrics_text());
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}
