//! `/metrics` of the real daemon (replay camera, shipped models, demo catalog), checked by
//! Prometheus's own linter, `promtool check metrics` (Debian's `prometheus` package, installed by
//! `scripts/bootstrap --tests`).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Daemon;

fn promtool() -> String {
    let bin = std::env::var("VITRINE_PROMTOOL").unwrap_or_else(|_| "promtool".into());
    match Command::new(&bin).arg("--version").output() {
        Ok(o) if o.status.success() => bin,
        _ => panic!(
            "promtool is not installed: this test checks /metrics with Prometheus's own linter. \
             Run `scripts/bootstrap --tests` (installs Debian's prometheus package), \
             or set VITRINE_PROMTOOL to a promtool binary"
        ),
    }
}

#[test]
fn metrics_of_a_running_daemon_pass_promtool() {
    let promtool = promtool();
    let d = Daemon::start(&[]);
    d.wait_ready(Duration::from_secs(120));
    // Wait for processed frames, and touch a few routes so every label set has samples.
    d.poll_json("/api/status", Duration::from_secs(60), |v| {
        v["pipeline"]["frames_processed"].as_u64().unwrap_or(0) >= 3
    });
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
        "vitrine_catalog_info{version=\"demo-1\"} 1",
        "vitrine_catalog_items 300",
        "vitrine_http_requests_total{route=\"/api/recommendations\",status=\"200\"}",
        "vitrine_display_clients",
    ] {
        assert!(text.contains(family), "missing {family} in:\n{text}");
    }

    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics found problems:\n{report}\n--- metrics ---\n{text}"
    );
    let status = d.terminate(Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
}
