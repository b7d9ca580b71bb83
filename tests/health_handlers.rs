//! Technician endpoints in-process (`oneshot` on the real router): liveness, readiness and its
//! reasons, the Prometheus exposition, and `/api/status`.

#[path = "display_support/state.rs"]
mod state;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use state::{app, body_bytes, body_json, recs};
use vitrine::capture::CameraState;
use vitrine::telemetry::AudienceEvents;

fn reasons(v: &serde_json::Value) -> Vec<String> {
    v["reasons"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str().map(String::from))
        .collect()
}

#[tokio::test]
async fn healthz_answers_while_nothing_is_loaded() {
    let t = app(false, Duration::from_secs(5));
    let r = t.get("/healthz").await;
    assert_eq!(r.status(), 200);
    assert_eq!(body_json(r).await["status"], "ok");
}

#[tokio::test]
async fn readyz_names_every_reason_until_all_hold_then_turns_ok() {
    let t = app(false, Duration::from_millis(300));
    let r = t.get("/readyz").await;
    assert_eq!(r.status(), 503);
    let v = body_json(r).await;
    assert_eq!(v["ready"], false);
    let why = reasons(&v);
    assert!(why.iter().any(|r| r.contains("models")), "{why:?}");
    assert!(why.iter().any(|r| r.contains("catalog")), "{why:?}");
    assert!(why.iter().any(|r| r.contains("no frame")), "{why:?}");

    let rd = &t.state.readiness;
    rd.models.store(true, Ordering::Relaxed);
    rd.catalog.store(true, Ordering::Relaxed);
    t.state.camera.lock().expect("camera").state = CameraState::Streaming;
    rd.beat();
    let r = t.get("/readyz").await;
    assert_eq!(r.status(), 200);
    assert_eq!(body_json(r).await["reasons"], serde_json::json!([]));

    // Frames stop: not ready, with the camera's own state and error as the likely cause.
    {
        let mut cam = t.state.camera.lock().expect("camera");
        cam.state = CameraState::Reconnecting;
        cam.last_error = Some("No such device".into());
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let v = body_json(t.get("/readyz").await).await;
    let why = reasons(&v);
    assert!(
        why.iter()
            .any(|r| r.starts_with("no fresh frame for") && r.contains("limit 0.3 s")),
        "{why:?}"
    );
    assert!(
        why.iter()
            .any(|r| r.contains("camera 'replay test' is reconnecting")
                && r.contains("No such device")),
        "{why:?}"
    );

    // Shutdown turns readiness off first, whatever else holds.
    rd.beat();
    t.state.camera.lock().expect("camera").state = CameraState::Streaming;
    assert_eq!(t.get("/readyz").await.status(), 200);
    rd.shutting_down.store(true, Ordering::Relaxed);
    let r = t.get("/readyz").await;
    assert_eq!(r.status(), 503);
    assert_eq!(reasons(&body_json(r).await), vec!["shutting down"]);
}

#[tokio::test]
async fn metrics_cover_frames_stages_camera_catalog_http_and_display_clients() {
    let t = app(false, Duration::from_secs(5));
    let m = &t.state.metrics;
    m.frames_captured.inc_by(12);
    m.frames_processed.inc_by(10);
    m.frames_dropped.inc_by(2);
    m.set_catalog("v0002", "demo-1", 300);
    m.set_providers([("detector", "CPUExecutionProvider")]);
    m.stage(vitrine::telemetry::Stage::Detect)
        .observe(Duration::from_millis(12));
    t.state.camera.lock().expect("camera").state = CameraState::Streaming;
    t.publish(recs(5, &["fm-0001"])).await;
    assert_eq!(t.get("/api/recommendations").await.status(), 200);
    assert_eq!(t.get("/no/such/page").await.status(), 404);
    let _stream = t.get("/api/events").await; // one display client, held open

    let r = t.get("/metrics").await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = String::from_utf8(body_bytes(r).await).expect("utf8");
    for line in [
        "vitrine_frames_captured_total 12",
        "vitrine_frames_processed_total 10",
        "vitrine_frames_dropped_total 2",
        "vitrine_frames_corrupt_total 0",
        "vitrine_stage_seconds_bucket{stage=\"detect\",le=\"0.02\"} 1",
        "vitrine_execution_provider{model=\"detector\",provider=\"CPUExecutionProvider\"} 1",
        "vitrine_camera_state{state=\"streaming\"} 1",
        "vitrine_camera_state{state=\"reconnecting\"} 0",
        "vitrine_camera_reconnects_total 0",
        "vitrine_catalog_info{version=\"v0002\",label=\"demo-1\"} 1",
        "vitrine_box_info{box_id=\"\",store=\"\",version=\"demo-1\"} 1",
        "vitrine_gpu_requested 0",
        "vitrine_shoppers_seen_total 0",
        "vitrine_garments_recommended_total 0",
        "vitrine_shopper_dwell_seconds_count 0",
        "vitrine_catalog_items 300",
        "vitrine_http_requests_total{route=\"/api/recommendations\",status=\"200\"} 1",
        "vitrine_http_requests_total{route=\"unmatched\",status=\"404\"} 1",
        "vitrine_display_clients 1",
        "vitrine_ready 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }
    assert!(
        !text.contains("# EOF"),
        "Prometheus text 0.0.4, not OpenMetrics"
    );
    // Every family has its HELP and TYPE (promtool checks the rest against the real daemon).
    for family in text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
    {
        assert!(text.contains(&format!("# HELP {family} ")), "{family}");
    }
}

#[tokio::test]
async fn status_reports_version_models_camera_catalog_uptime_and_recent_errors() {
    vitrine::telemetry::init_tracing();
    let t = app(false, Duration::from_secs(5));
    tracing::warn!(device = "/dev/video0", "camera open failed");
    {
        let mut cam = t.state.camera.lock().expect("camera");
        cam.state = CameraState::Reconnecting;
        cam.reconnects = 3;
        cam.last_error = Some("No such device".into());
        cam.last_frame = Some(Instant::now());
    }
    let r = t.get("/api/status").await;
    assert_eq!(r.status(), 200);
    let v = body_json(r).await;
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["uptime_s"].as_f64().is_some_and(|u| u >= 0.0));
    assert_eq!(v["ready"], false);
    assert_eq!(v["models"][0]["role"], "detector");
    assert_eq!(v["models"][0]["sha256"].as_str().map(str::len), Some(64));
    assert_eq!(v["camera"]["state"], "reconnecting");
    assert_eq!(v["camera"]["reconnects"], 3);
    assert_eq!(v["camera"]["last_error"], "No such device");
    assert_eq!(v["catalog"]["version"], "demo-1");
    assert_eq!(v["catalog"]["items"], 300);
    assert!(
        v["catalog"]["groups"]["top"]
            .as_u64()
            .is_some_and(|n| n > 0)
    );
    assert!(v["pipeline"]["frames_processed"].is_u64());
    let errors = v["last_errors"].as_array().expect("last_errors");
    assert!(
        errors.iter().any(
            |e| e["level"] == "WARN" && e["message"] == "camera open failed device=/dev/video0"
        ),
        "{errors:?}"
    );
}

#[tokio::test]
async fn status_lists_audience_figures_and_the_most_shown_items_of_the_active_catalog() {
    let t = app(false, Duration::from_secs(5));
    let catalog = t.state.catalog.load_full();
    let m = &t.state.metrics;
    m.set_catalog(&catalog.version, &catalog.label, catalog.items.len());
    let group = catalog.item(4).group.clone();
    m.audience.record(
        AudienceEvents {
            shoppers_seen: 3,
            dwell: vec![Duration::from_secs(4), Duration::from_secs(8)],
            garments_recommended: 2,
            shown: vec![(group.clone(), vec![4, 2]), (group.clone(), vec![4])],
        },
        &catalog.version,
    );
    let v = body_json(t.get("/api/status").await).await;
    let a = &v["audience"];
    assert_eq!(a["shoppers_seen"], 3, "{a}");
    assert_eq!(a["shoppers_gone"], 2);
    assert_eq!(a["mean_dwell_s"], 6.0);
    assert_eq!(a["garments_recommended"], 2);
    assert_eq!(a["top_items"]["catalog_version"], catalog.version.as_str());
    let items = a["top_items"]["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{a}");
    assert_eq!(items[0]["id"], catalog.item(4).id.as_str());
    assert_eq!(items[0]["name"], catalog.item(4).name.as_str());
    assert_eq!(items[0]["group"], group.as_str());
    assert_eq!(items[0]["shown"], 2);
    assert_eq!(items[1]["id"], catalog.item(2).id.as_str());

    let text = String::from_utf8(body_bytes(t.get("/metrics").await).await).expect("utf8");
    assert!(
        text.contains(&format!(
            "\nvitrine_items_shown_total{{group=\"{group}\"}} 3\n"
        )),
        "{text}"
    );
    assert!(text.contains("\nvitrine_shoppers_seen_total 3\n"));
    assert!(text.contains("\nvitrine_shopper_dwell_seconds_bucket{le=\"5\"} 1\n"));
    assert!(text.contains("\nvitrine_shopper_dwell_seconds_bucket{le=\"10\"} 2\n"));
}
