//! The three benchmarks still run end to end and count what they were asked to: `vitrine bench`
//! over a few replay frames with the shipped models, `vitrine bench catalog` on a small synthetic
//! catalog, and `vitrine bench http` against a real daemon. Timings are not checked here (figures
//! come from running the benchmarks, not from tests); the counts and the wiring are.

mod common;

use std::time::Duration;

use serde_json::Value;

/// Runs `vitrine ARGS… --json` and returns its report. The log goes to stdout too, so it is
/// quietened to warnings.
fn report(args: &[&str]) -> Value {
    let out = common::bin()
        .args(args)
        .arg("--json")
        .env("RUST_LOG", "warn")
        .output()
        .expect("runs vitrine");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "vitrine {args:?} failed:\n{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[test]
fn the_pipeline_bench_measures_the_frames_asked_for_on_the_daemons_capture_path() {
    let r = report(&["bench", "--frames", "6", "--warmup", "2", "--check-exact"]);
    assert_eq!(r["frames"], 6, "{r}");
    assert_eq!(r["detections_per_frame"].as_array().map(Vec::len), Some(6));
    let first = common::root().join("models/demo/frames/vtest_0000.jpg");
    let (w, h) = image::image_dimensions(&first).expect("first demo frame");
    assert_eq!(r["frame_size"], serde_json::json!([w, h]), "{r}");
    assert!(r["fps"].as_f64().is_some_and(|f| f > 0.0), "{r}");
    // Flat out the replay waits for the pipeline: no frame is made only to be dropped.
    assert_eq!(r["frames_dropped"], 0, "{r}");
    assert!(
        r["decode_resize"]["p50_ms"]
            .as_f64()
            .is_some_and(|v| v > 0.0),
        "{r}"
    );
    // The exact-search check sees the engine's searches: the demo street has shoppers from its
    // first frames, so some garments were searched and compared.
    assert!(r["searches_checked"].as_u64().is_some_and(|n| n > 0), "{r}");
    let agree = r["topk_equal_exact"].as_f64().expect("agreement");
    assert!((0.0..=1.0).contains(&agree), "{r}");
}

#[test]
fn the_catalog_bench_imports_restarts_and_queries_a_synthetic_catalog() {
    let r = report(&[
        "bench",
        "catalog",
        "--items",
        "300",
        "--dim",
        "16",
        "--queries",
        "40",
    ]);
    assert_eq!(r["items"], 300, "{r}");
    assert_eq!(r["dim"], 16, "{r}");
    assert_eq!(r["queries"], 40, "{r}");
    assert!(
        r["import_stages_s"]
            .as_array()
            .is_some_and(|s| !s.is_empty()),
        "{r}"
    );
    assert!(r["restart_s"].as_f64().is_some_and(|s| s > 0.0), "{r}");
    let recall = r["recall_at_10"].as_f64().expect("recall");
    assert!(recall > 0.0 && recall <= 1.0, "{r}");
    assert!(r["pipeline"].is_null(), "no --pipeline, no frame rate: {r}");
}

#[test]
fn the_http_bench_loads_a_running_daemon_through_keep_alive_connections() {
    let daemon = common::Daemon::start(&[]);
    daemon.wait_ready(Duration::from_secs(120));
    // Ready also means a frame went through the pipeline lately, so frames flow while measured.
    daemon.poll_json("/readyz", Duration::from_secs(120), |v| v["ready"] == true);
    let url = daemon.url("/");
    let r = report(&[
        "bench",
        "http",
        "--url",
        &url,
        "--rate",
        "20",
        "--duration",
        "2s",
        "--connections",
        "2",
        "--display-clients",
        "2",
        "--window",
        "2s",
        "--rounds",
        "1",
    ]);
    assert_eq!(r["ready"], true, "{r}");
    assert_eq!(r["api_requests"], 40, "rate × duration requests: {r}");
    assert_eq!(r["api_errors"], 0, "{r}");
    assert!(
        r["api_response_bytes"].as_u64().is_some_and(|b| b > 0),
        "{r}"
    );
    // Each display client gets the current recommendations as soon as it connects, and was
    // still connected when /metrics was read.
    assert!(
        r["display_events_received"]
            .as_u64()
            .is_some_and(|n| n >= 2),
        "{r}"
    );
    assert_eq!(r["display_clients_connected_seen"], 2.0, "{r}");
    assert!(r["fps_baseline"].as_f64().is_some_and(|f| f > 0.0), "{r}");
    daemon.terminate(Duration::from_secs(20));
}
