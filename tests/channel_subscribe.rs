//! A box following a catalog channel on a real nginx origin, the happy paths: a new version is
//! taken and served, an unchanged channel costs one request per poll, a roll-out that leaves the
//! box's bucket out is not taken until the percentage reaches it, `/api/status` and `/metrics`
//! say where the active version came from, a pinned box keeps its version, and nothing is
//! written outside the data folder.

mod channel_support;
mod common;
#[path = "promtool_support/mod.rs"]
mod promtool;

use std::path::Path;
use std::time::Duration;

use channel_support::follower::*;
use channel_support::publish::{self, Key, Target};
use channel_support::{Nginx, requests};
use common::Daemon;
use common::catalog::{fingerprint, version_source, versions_on_disk};

const WAIT: Duration = Duration::from_secs(90);

/// Every file under `dir`, relative, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_box_takes_new_versions_polls_cheaply_and_follows_the_rollout() {
    let work = tempfile::tempdir().expect("tmp");
    // The box's own folder (config, seed, data) apart from HQ's (bundles being made).
    let (w, hq) = (work.path().join("box"), work.path().join("hq"));
    std::fs::create_dir_all(&hq).unwrap();
    let w = w.as_path();
    let nginx = Nginx::start("");
    let key = Key::generate();
    let fp = fingerprint();
    let seed = seed(&w.join("seed"), 20);
    let data = w.join("data");
    let pubkey = key.write_public(&w.join("hq.pub"));
    // The box sits at bucket ≥ 30, so a 30 % roll-out leaves it out.
    let id = box_id(false, 30);
    let cfg = config(w, &seed, &data, &id, channel(&nginx.base(), &pubkey));
    // The daemon runs in an empty folder with its own TMPDIR: both must stay empty.
    let (cwd, tmp) = (w.join("cwd"), w.join("tmp"));
    std::fs::create_dir_all(&cwd).unwrap();
    std::fs::create_dir_all(&tmp).unwrap();
    let before: Vec<String> = files(w)
        .into_iter()
        .filter(|f| !f.starts_with("data/"))
        .collect();

    let d = Daemon::with_config(&cfg, &cwd, &[("TMPDIR", tmp.to_str().unwrap())]);
    // No channel document yet: an error the status names; the seed serves.
    let s = d.wait_status("a 404 from the empty channel", WAIT, |s| {
        s["channel"]["last_error"]["kind"] == "http_status"
    });
    assert_eq!(s["channel"]["state"], "error", "{s}");
    assert_eq!(s["catalog"]["from"], "local", "{s}");
    d.wait_serving("v0001", "seed-", WAIT);

    // HQ publishes: the box takes it.
    let target = Target::Folder(&nginx.root);
    let spring = publish::bundle(&hq, "spring", 40, &fp, 1);
    let doc1 = publish::document(&key, 1, "spring", &spring, Some(fp.clone()), 100, &[]);
    target.publish(&spring, &doc1);
    let s = d.wait_status("spring taken", WAIT, |s| {
        s["channel"]["state"] == "up_to_date" && s["catalog"]["version"] == "v0002"
    });
    assert_eq!(s["catalog"]["from"], "channel", "{s}");
    assert_eq!(s["catalog"]["label"], "spring", "{s}");
    let url = nginx.base();
    assert_eq!(s["catalog"]["source"], format!("channel {url} #1"), "{s}");
    let c = &s["channel"];
    assert_eq!(c["url"], url.as_str());
    assert_eq!(c["offered"]["version"], "spring");
    assert_eq!(c["active"], "spring");
    assert_eq!(c["taken"]["version_id"], "v0002");
    assert_eq!(c["highest_sequence"], 1);
    assert_eq!(c["rollout"]["box_id"], id.as_str());
    assert_eq!(c["behind_s"], 0.0);
    d.wait_serving("v0002", "spring-", WAIT);
    assert_eq!(version_source(&data, "v0002"), format!("channel {url} #1"));
    assert_eq!(
        d.metric("vitrine_channel_info{offered=\"spring\",active=\"spring\"}"),
        Some(1.0)
    );
    assert_eq!(d.metric("vitrine_channel_up"), Some(1.0));
    assert_eq!(d.metric("vitrine_channel_behind_seconds"), Some(0.0));
    // The channel's families join /metrics in a form Prometheus's own linter accepts.
    let text = d.metrics();
    let report = promtool::run(&common::root(), &["check", "metrics"], Some(&text));
    assert!(
        report.success && report.output.trim().is_empty(),
        "promtool: {}\n{text}",
        report.output
    );
    let fetched = d.metric("vitrine_channel_fetched_bytes_total").unwrap();
    assert!(fetched >= spring.len() as f64, "{fetched}");
    // Downloaded once, in one piece.
    let bundle_path = format!("/{}", doc1.bundle);
    assert_eq!(
        requests(&nginx.access_log(), &bundle_path),
        [(200, spring.len() as u64)]
    );

    // Unchanged channel: one conditional request per poll, answered 304, nothing else.
    let log_before = nginx.access_log().lines().count();
    let checks_before = d.status()["channel"]["last_check"].clone();
    std::thread::sleep(Duration::from_secs(5));
    let log = nginx.access_log();
    let new: Vec<&str> = log.lines().skip(log_before).collect();
    let polls = requests(&new.join("\n"), "/channel.json");
    assert_eq!(
        polls.len(),
        new.len(),
        "an unchanged channel costs only its document: {new:#?}"
    );
    // 1 s ± 20 %: four to six polls in five seconds, whatever the load.
    assert!(
        (3..=7).contains(&polls.len()),
        "{} polls in 5 s: {new:#?}",
        polls.len()
    );
    assert!(polls.iter().all(|&(s, _)| s == 304), "{polls:?}");
    assert_ne!(d.status()["channel"]["last_check"], checks_before);
    assert_eq!(
        d.metric("vitrine_channel_fetched_bytes_total").unwrap(),
        fetched,
        "a 304 carries no body"
    );

    // A 30 % roll-out leaves this box out: nothing downloaded, the old version serves.
    let summer = publish::bundle(&hq, "summer", 30, &fp, 2);
    let doc2 = publish::document(&key, 2, "summer", &summer, Some(fp.clone()), 30, &[]);
    target.publish(&summer, &doc2);
    let s = d.wait_status("summer offered to others", WAIT, |s| {
        s["channel"]["state"] == "not_selected"
    });
    assert_eq!(s["channel"]["rollout"]["selected"], false, "{s}");
    assert!(s["channel"]["rollout"]["bucket"].as_u64().unwrap() >= 30);
    assert_eq!(s["catalog"]["version"], "v0002");
    std::thread::sleep(Duration::from_secs(2));
    assert!(requests(&nginx.access_log(), &format!("/{}", doc2.bundle)).is_empty());
    assert_eq!(d.metric("vitrine_channel_behind_seconds"), Some(0.0));
    d.wait_serving("v0002", "spring-", WAIT);

    // HQ widens it to everyone: now the box takes it.
    let doc3 = publish::document(&key, 3, "summer", &summer, Some(fp.clone()), 100, &[]);
    target.put_document(&doc3);
    let s = d.wait_status("summer taken", WAIT, |s| {
        s["catalog"]["version"] == "v0003" && s["channel"]["state"] == "up_to_date"
    });
    assert_eq!(s["channel"]["taken"]["sequence"], 3, "{s}");
    d.wait_serving("v0003", "summer-", WAIT);
    assert_eq!(
        versions_on_disk(&data),
        (
            "v0003".into(),
            vec!["v0001".into(), "v0002".into(), "v0003".into()]
        )
    );
    d.stop();

    // Pinned to "spring": the box holds on to what it runs while the channel offers summer, and
    // counts no refusal for it; once spring is offered again, it takes it.
    let mut ch = channel(&nginx.base(), &pubkey);
    ch.insert("pin".into(), "spring".into());
    let cfg = config(w, &seed, &data, &id, ch);
    let d = Daemon::with_config(&cfg, &cwd, &[("TMPDIR", tmp.to_str().unwrap())]);
    let s = d.wait_status("pinned", WAIT, |s| s["channel"]["state"] == "pinned");
    assert_eq!(s["catalog"]["version"], "v0003", "{s}");
    assert!(s["channel"]["last_refusal"].is_null(), "{s}");
    assert_eq!(d.metric("vitrine_channel_behind_seconds"), Some(0.0));
    let doc4 = publish::document(&key, 4, "spring", &spring, Some(fp.clone()), 100, &[]);
    target.put_document(&doc4);
    d.wait_status("the pinned version taken", WAIT, |s| {
        s["catalog"]["version"] == "v0004" && s["channel"]["state"] == "up_to_date"
    });
    d.wait_serving("v0004", "spring-", WAIT);
    d.stop();

    // Everything the daemon wrote is in the data folder.
    let after: Vec<String> = files(w)
        .into_iter()
        .filter(|f| !f.starts_with("data/"))
        .collect();
    // Not even ONNX Runtime's session file (`.ses`), which it writes to TMPDIR at start-up: the
    // daemon points TMPDIR into its data folder.
    let made: Vec<&String> = after.iter().filter(|f| !before.contains(f)).collect();
    assert!(made.is_empty(), "written outside the data folder: {made:?}");
    assert!(files(&cwd).is_empty());
    // And in it, only versions, the store's own files and the channel's state; no download
    // is left behind.
    for f in files(&data) {
        assert!(
            f.starts_with("versions/v")
                || ["ACTIVE", "LOCK", "channel/state.json", "tmp/.ses"].contains(&f.as_str()),
            "unexpected file in the data folder: {f}"
        );
    }
}
