//! `/metrics` of the real daemon (replay camera, shipped models, demo catalog), checked by
//! Prometheus's own linter, `promtool check metrics` (Debian's `prometheus` package, installed by
//! `scripts/bootstrap --tests`), once the demo footage's shoppers have had lists shown, so the
//! audience families that appear only then are checked too.

mod common;
#[path = "promtool_support/mod.rs"]
mod promtool;

use std::time::Duration;

use common::Daemon;

#[test]
fn metrics_of_a_running_daemon_pass_promtool() {
    promtool::promtool();
    let d = Daemon::start(&[]);
    d.wait_ready(Duration::from_secs(120));
    // Wait for shoppers with lists on display, and touch a few routes so every label set has
    // samples.
    let status = d.poll_json("/api/status", Duration::from_secs(90), |v| {
        v["pipeline"]["frames_processed"].as_u64().unwrap_or(0) >= 3
            && v["audience"]["top_items"]["items"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
    });
    let audience = &status["audience"];
    assert!(
        audience["shoppers_seen"].as_u64().unwrap_or(0) >= 1
            && audience["garments_recommended"].as_u64().unwrap_or(0) >= 1,
        "{audience}"
    );
    let top = &audience["top_items"];
    assert_eq!(
        top["catalog_version"], status["catalog"]["version"],
        "{top}"
    );
    assert!(top["items"][0]["id"].is_string() && top["items"][0]["shown"].as_u64() >= Some(1));
    let _ = d.get_json("/api/recommendations");
    let _ = d.get_json("/no/such/page");
    let text = reqwest::blocking::get(d.url("/metrics"))
        .expect("GET /metrics")
        .text()
        .expect("body");
    for family in [
        "vitrine_frames_captured_total",
        "vitrine_frames_processed_total",
        "vitrine_frames_dropped_total",
        "vitrine_frames_corrupt_total",
        "vitrine_stage_seconds_bucket",
        "vitrine_execution_provider{",
        "vitrine_camera_state{state=\"streaming\"} 1",
        "vitrine_camera_reconnects_total",
        "vitrine_catalog_info{version=\"",
        "vitrine_catalog_items 300",
        "vitrine_http_requests_total{route=\"/api/recommendations\",status=\"200\"}",
        "vitrine_display_clients",
        "vitrine_box_info{box_id=\"",
        "vitrine_gpu_requested 0",
        "vitrine_shoppers_seen_total",
        "vitrine_shopper_dwell_seconds_bucket",
        "vitrine_garments_recommended_total",
        "vitrine_items_shown_total{group=\"",
        "process_cpu_seconds_total",
    ] {
        assert!(text.contains(family), "missing {family} in:\n{text}");
    }

    let report = promtool::run(&common::root(), &["check", "metrics"], Some(&text));
    assert!(
        report.success && report.output.trim().is_empty(),
        "promtool check metrics found problems:\n{}\n--- metrics ---\n{text}",
        report.output
    );
    let status = d.terminate(Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
}
