//! `vitrine bench fleet` against real nginx, small: its counts must add up. What the boxes
//! counted (polls, unchanged answers, downloads) must be what nginx's access log says it served,
//! and every box must end on the version published midway, the real daemon among them.

use std::time::Duration;

use vitrine::bench::fleet::{FleetOptions, RealBox, default_nginx, run};

#[test]
fn fleet_counts_match_the_server_log_and_every_box_takes_the_new_version() {
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("vitrine.toml");
    let boxes = 50;
    let r = run(&FleetOptions {
        boxes,
        interval: Duration::from_secs(2),
        jitter: 0.5,
        duration: Duration::from_secs(10),
        items: 20,
        nginx: default_nginx(),
        daemon: Some(RealBox {
            config,
            binary: env!("CARGO_BIN_EXE_vitrine").into(),
        }),
        prebuilt: true,
    })
    .expect("bench run");
    let (s, f) = (&r.server, &r.fleet);
    assert_eq!(f.poll_errors, 0, "{r}");
    assert_eq!(f.refusals, 0, "{r}");
    assert_eq!(f.on_new_version, boxes, "{r}");
    assert!(r.to_100_percent_s.is_some(), "{r}");
    // Each box polls about every 2 s for 10 s: several polls each, most of them unchanged.
    assert!(f.polls >= 2 * boxes as u64, "{r}");
    assert!(f.polls_unchanged > f.polls_changed, "{r}");
    // The boxes' own counts are the server's.
    assert_eq!(s.document_other + s.bundle_other, 0, "{r}");
    assert_eq!(s.document_200, f.polls_changed, "{r}");
    assert_eq!(s.document_304, f.polls_unchanged, "{r}");
    assert_eq!(s.document_200 + s.document_304, f.polls, "{r}");
    assert_eq!(s.bundle_200, f.downloads, "{r}");
    assert_eq!(f.downloads, boxes as u64, "one download per box: {r}");
    assert_eq!(s.bundle_bytes_served, boxes as u64 * r.bundle_bytes, "{r}");
    assert_eq!(
        s.requests,
        s.document_200 + s.document_304 + s.bundle_200,
        "{r}"
    );
    assert!(r.poll_latency.p99_ms >= r.poll_latency.p50_ms, "{r}");
    // The real box (the demo config: replay camera at 10 frames/s) took the new version and
    // served frames meanwhile; its requests are counted apart from the simulated fleet's.
    let d = r.real_daemon.as_ref().expect("a real daemon took part");
    assert!(d.to_active_s.is_some(), "{r}");
    assert!(d.fps_before > 0.0 && d.fps_during > 0.0, "{r}");
    assert!(d.requests >= 4, "two documents, two bundles at least: {r}");
    assert!(d.bundle_bytes >= r.bundle_bytes, "{r}");
}
