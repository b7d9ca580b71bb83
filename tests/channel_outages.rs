//! A box's channel origin misbehaving (real nginx, real daemon): 500 answers, the server down at
//! poll time, the server going down in the middle of a download (the box resumes where it
//! stopped, with a Range request, rather than starting over), and a slow server (the download
//! never stalls the camera pipeline or the HTTP side). Through all of it the live catalog keeps
//! serving, nothing half-written is activated, and `/api/status` and
//! `vitrine_channel_errors_total` say what went wrong.

mod channel_support;
mod common;

use std::time::{Duration, Instant};

use channel_support::follower::*;
use channel_support::publish::{self, Target};
use channel_support::{requests, switch, switchable_nginx};
use common::Daemon;
use common::catalog::versions_on_disk;

const WAIT: Duration = Duration::from_secs(90);

fn errors(d: &Daemon, kind: &str) -> f64 {
    d.metric(&format!("vitrine_channel_errors_total{{kind=\"{kind}\"}}"))
        .unwrap_or(-1.0)
}

#[test]
fn outages_and_slow_origins_leave_the_live_catalog_serving() {
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    let flags = w.join("flags");
    // 100 KB/s when slow: a bundle of some 600 KB takes seconds, a poll's document none.
    let mut nginx = switchable_nginx(&flags, "100k");
    let root = nginx.root.clone();
    let target = Target::Folder(&root);
    let Following { key, fp, data, cfg } = following(w, &nginx.base());
    let first = publish::bundle(w, "first", 30, &fp, 1);
    let doc1 = publish::document(&key, 1, "first", &first, Some(fp.clone()), 100, &[]);
    target.publish(&first, &doc1);
    let d = Daemon::with_config(&cfg, w, &[]);
    d.wait_status("first taken", WAIT, |s| {
        s["catalog"]["version"] == "v0002" && s["channel"]["state"] == "up_to_date"
    });

    // 500 answers.
    switch(&flags, "fail", true);
    let s = d.wait_status("a 500 seen", WAIT, |s| {
        s["channel"]["last_error"]["kind"] == "http_status"
    });
    assert_eq!(s["channel"]["state"], "error", "{s}");
    assert!(errors(&d, "http_status") >= 1.0);
    assert_eq!(d.metric("vitrine_channel_up"), Some(0.0));
    d.wait_serving("v0002", "first-", WAIT);
    switch(&flags, "fail", false);
    d.wait_status("recovered from 500s", WAIT, |s| {
        s["channel"]["state"] == "up_to_date"
    });
    assert_eq!(d.metric("vitrine_channel_up"), Some(1.0));

    // The server down at poll time.
    nginx.stop();
    let s = d.wait_status("origin down", WAIT, |s| {
        s["channel"]["last_error"]["kind"] == "unreachable"
    });
    assert_eq!(s["channel"]["state"], "error", "{s}");
    assert!(errors(&d, "unreachable") >= 1.0);
    assert_eq!(d.metric("vitrine_channel_up"), Some(0.0));
    d.wait_serving("v0002", "first-", WAIT);
    assert_eq!(d.get("/readyz").0, 200);
    nginx.resume();
    d.wait_status("origin back", WAIT, |s| {
        s["channel"]["state"] == "up_to_date"
    });

    // Down in the middle of a download: resumed afterwards, not restarted.
    let second = publish::bundle(w, "second", 300, &fp, 2);
    let doc2 = publish::document(&key, 2, "second", &second, Some(fp.clone()), 100, &[]);
    switch(&flags, "slow", true);
    target.publish(&second, &doc2);
    let part = data.join(format!("channel/downloads/{}.part", doc2.sha256));
    let t = Instant::now();
    while std::fs::metadata(&part).map_or(0, |m| m.len()) < 200_000 {
        assert!(t.elapsed() < WAIT, "the download never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    nginx.stop();
    let s = d.wait_status("download cut", WAIT, |s| {
        s["channel"]["state"] == "error" && s["channel"]["last_error"]["kind"] == "unreachable"
    });
    let had = std::fs::metadata(&part)
        .expect("the partial download is kept")
        .len();
    assert!(had > 0 && had < second.len() as u64, "{had}");
    assert_eq!(s["catalog"]["version"], "v0002");
    d.wait_serving("v0002", "first-", WAIT);
    assert_eq!(
        versions_on_disk(&data),
        ("v0002".into(), vec!["v0001".into(), "v0002".into()])
    );
    switch(&flags, "slow", false);
    nginx.resume();
    d.wait_status("second taken after the cut", WAIT, |s| {
        s["catalog"]["version"] == "v0003" && s["channel"]["state"] == "up_to_date"
    });
    d.wait_serving("v0003", "second-", WAIT);
    // The log holds the requests that completed: after the cut, one Range request for the rest.
    let got = requests(&nginx.access_log(), &format!("/{}", doc2.bundle));
    assert_eq!(got.len(), 1, "{got:?}");
    let (status, rest) = got[0];
    assert_eq!(status, 206, "{got:?}");
    assert!(
        rest <= second.len() as u64 - had,
        "resumed at {had}: only the rest ({}) may be sent again, not {rest}",
        second.len() as u64 - had
    );

    // A slow server: the pipeline keeps its frames and the HTTP side answers at once.
    let third = publish::bundle(w, "third", 300, &fp, 3);
    let doc3 = publish::document(&key, 3, "third", &third, Some(fp.clone()), 100, &[]);
    switch(&flags, "slow", true);
    target.publish(&third, &doc3);
    d.wait_status("slow download running", WAIT, |s| {
        s["channel"]["state"] == "downloading" && s["channel"]["download_bytes"].as_u64() > Some(0)
    });
    let frames = |s: &serde_json::Value| s["pipeline"]["frames_processed"].as_u64().unwrap_or(0);
    let before = frames(&d.status());
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let t = Instant::now();
        let (code, body) = d.get("/readyz");
        slowest = slowest.max(t.elapsed());
        assert_eq!(code, 200, "not ready during a slow download: {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let s = d.status();
    assert_eq!(
        s["channel"]["state"], "downloading",
        "the check must run while the download does: {}",
        s["channel"]
    );
    // The replay runs at 10 frames/s (fewer on a loaded machine); over these 2+ seconds a
    // stalled pipeline would add none.
    assert!(
        frames(&s) >= before + 2,
        "frames processed during the download: {} → {}",
        before,
        frames(&s)
    );
    // Generous for a loaded 2-core test machine; a blocked server would take the whole download.
    assert!(slowest < Duration::from_secs(2), "/readyz took {slowest:?}");
    switch(&flags, "slow", false);
    d.wait_status("third taken", WAIT, |s| {
        s["catalog"]["version"] == "v0004" && s["channel"]["state"] == "up_to_date"
    });
    d.wait_serving("v0004", "third-", WAIT);
    d.stop();
}
