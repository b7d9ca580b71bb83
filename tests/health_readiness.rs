//! Readiness follows the camera: the real daemon plays a replay folder; when its frames are taken
//! away (a camera unplugged) `/readyz` turns 503 naming the stale frames and the camera's state,
//! and when they come back it recovers by itself — no restart.

mod common;

use std::time::Duration;

use common::{Daemon, config_in, root};

fn reasons(v: &serde_json::Value) -> Vec<String> {
    v["reasons"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str().map(String::from))
        .collect()
}

#[test]
fn readyz_turns_503_with_the_reason_when_frames_stop_and_recovers_when_they_return() {
    let dir = tempfile::tempdir().expect("tmp");
    let frames = dir.path().join("frames");
    let away = dir.path().join("unplugged");
    std::fs::create_dir_all(&frames).expect("mkdir");
    std::fs::create_dir_all(&away).expect("mkdir");
    for i in 0..6 {
        let name = format!("vtest_{i:04}.jpg");
        std::fs::copy(
            root().join("models/demo/frames").join(&name),
            frames.join(&name),
        )
        .expect("copy frame");
    }
    let cfg = config_in(dir.path(), |t| {
        t.replace(
            &format!("{}/models/demo/frames", root().display()),
            &frames.display().to_string(),
        )
        .replace("frame_stale_ms = 5000", "frame_stale_ms = 1500")
    });
    let d = Daemon::start(&["--config", cfg.to_str().expect("utf8 path")]);
    d.wait_ready(Duration::from_secs(120));
    d.poll_json("/readyz", Duration::from_secs(60), |v| v["ready"] == true);

    // "Unplug": the frames go away; capture fails and keeps retrying.
    for e in std::fs::read_dir(&frames).expect("list") {
        let p = e.expect("entry").path();
        std::fs::rename(&p, away.join(p.file_name().expect("name"))).expect("move");
    }
    let down = d.poll_json("/readyz", Duration::from_secs(30), |v| {
        let r = reasons(v);
        v["ready"] == false
            && r.iter().any(|r| r.starts_with("no fresh frame"))
            && r.iter().any(|r| r.contains("is reconnecting"))
    });
    let status = reqwest::blocking::get(d.url("/readyz")).expect("GET");
    assert_eq!(status.status(), 503, "{down}");
    let why = reasons(&down);
    assert!(
        why.iter().any(|r| r.contains("limit 1.5 s")),
        "the limit is named: {why:?}"
    );
    let st = d.get_json("/api/status").1;
    assert_eq!(st["camera"]["state"], "reconnecting", "{st}");
    assert!(st["camera"]["last_error"].is_string(), "{st}");

    // "Plug back": the supervisor's retry finds frames again and readiness recovers.
    for e in std::fs::read_dir(&away).expect("list") {
        let p = e.expect("entry").path();
        std::fs::rename(&p, frames.join(p.file_name().expect("name"))).expect("move back");
    }
    d.poll_json("/readyz", Duration::from_secs(40), |v| v["ready"] == true);
    let metrics = reqwest::blocking::get(d.url("/metrics"))
        .expect("GET")
        .text()
        .expect("text");
    let reconnects: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("vitrine_camera_reconnects_total "))
        .and_then(|v| v.parse().ok())
        .expect("reconnect counter");
    assert!(reconnects >= 1.0, "{metrics}");
    let status = d.terminate(Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
}
