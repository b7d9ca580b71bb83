//! Power cuts while a box takes a version from its channel (real nginx, real daemon, SIGKILL):
//! during the download (the restart resumes it with a Range request), during the import that
//! follows (the debug build stops at a named stage when `VITRINE_CATALOG_PAUSE_AT` says so), and
//! right after the activation. Every restart serves the previous version or the new one in full,
//! never a half-written one, and ends on the new version without importing it twice.

mod channel_support;
mod common;

use std::time::{Duration, Instant};

use channel_support::follower::*;
use channel_support::publish::{self, Target};
use channel_support::{requests, switch, switchable_nginx};
use common::Daemon;
use common::catalog::{half_written, version_source, versions_on_disk};

const WAIT: Duration = Duration::from_secs(90);

/// `log` without its colours.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn sigkill_during_download_and_import_leaves_old_or_new_never_half() {
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    let flags = w.join("flags");
    let nginx = switchable_nginx(&flags, "100k");
    let target = Target::Folder(&nginx.root);
    let Following { key, fp, data, cfg } = following(w, &nginx.base());

    // Killed in the middle of a slow download.
    let second = publish::bundle(w, "second", 300, &fp, 2);
    let doc = publish::document(&key, 1, "second", &second, Some(fp.clone()), 100, &[]);
    switch(&flags, "slow", true);
    target.publish(&second, &doc);
    let d = Daemon::with_config(&cfg, w, &[]);
    let part = data.join(format!("channel/downloads/{}.part", doc.sha256));
    let t = Instant::now();
    while std::fs::metadata(&part).map_or(0, |m| m.len()) < 150_000 {
        assert!(
            t.elapsed() < WAIT,
            "the download never started:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    d.kill();
    let had = std::fs::metadata(&part).expect("partial download").len();
    assert!(had < second.len() as u64);
    assert_eq!(
        versions_on_disk(&data),
        ("v0001".into(), vec!["v0001".into()])
    );

    switch(&flags, "slow", false);
    let d = Daemon::with_config(&cfg, w, &[]);
    d.wait_status("second taken after the restart", WAIT, |s| {
        s["catalog"]["version"] == "v0002" && s["channel"]["state"] == "up_to_date"
    });
    d.wait_serving("v0002", "second-", WAIT);
    // nginx logged the cut transfer when its client died, then the restart's Range request
    // for the rest only.
    let got = requests(&nginx.access_log(), &format!("/{}", doc.bundle));
    let last = *got.last().expect("bundle requests");
    assert_eq!(
        last.0, 206,
        "the restart must resume, not start over: {got:?}"
    );
    assert_eq!(last.1, second.len() as u64 - had, "{got:?}");
    assert!(!part.exists(), "the imported download is deleted");
    d.kill();

    // Killed during the import that follows a download, then right after the activation.
    let mut expected = (
        "v0002".to_string(),
        vec!["v0001".to_string(), "v0002".into()],
    );
    for (n, (stage, activated)) in [("indexed", false), ("activated", true)]
        .into_iter()
        .enumerate()
    {
        let label = format!("next{n}");
        let bundle = publish::bundle(w, &label, 40, &fp, 10 + n as u64);
        let doc = publish::document(
            &key,
            2 + n as u64,
            &label,
            &bundle,
            Some(fp.clone()),
            100,
            &[],
        );
        target.publish(&bundle, &doc);
        let d = Daemon::with_config(&cfg, w, &[("VITRINE_CATALOG_PAUSE_AT", stage)]);
        d.wait_line(&format!("vitrine catalog paused at {stage}"), WAIT);
        d.kill();
        // On disk: the old version active, or the new one complete and active.
        let next = format!("v{:04}", expected.1.len() + 1);
        let (active, stored) = versions_on_disk(&data);
        if activated {
            assert_eq!(active, next, "killed after activating {next}");
            expected = (
                next.clone(),
                [expected.1.clone(), vec![next.clone()]].concat(),
            );
        } else {
            assert_eq!(active, expected.0, "killed during the import of {next}");
        }
        assert_eq!(stored, expected.1, "after a kill at '{stage}'");

        let d = Daemon::with_config(&cfg, w, &[]);
        // The restart serves what the disk says, loaded from its dump, before the channel acts.
        let loaded = format!("version={}", expected.0);
        let t = Instant::now();
        while !plain(&d.log())
            .lines()
            .any(|l| l.contains("catalog loaded") && l.contains(&loaded))
        {
            assert!(t.elapsed() < WAIT, "no '{loaded}' in the log:\n{}", d.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        if !activated {
            let next_id = format!("v{:04}", expected.1.len() + 1);
            expected = (
                next_id.clone(),
                [expected.1.clone(), vec![next_id]].concat(),
            );
        }
        let s = d.wait_status(
            &format!("{label} taken after a kill at '{stage}'"),
            WAIT,
            |s| {
                s["catalog"]["version"] == expected.0.as_str()
                    && s["channel"]["state"] == "up_to_date"
            },
        );
        assert_eq!(
            s["channel"]["taken"]["version_id"],
            expected.0.as_str(),
            "{s}"
        );
        d.wait_serving(&expected.0, &format!("{label}-"), WAIT);
        // Taken once: no second import of the same offer.
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(versions_on_disk(&data), expected);
        assert!(half_written(&data).is_empty(), "{:?}", half_written(&data));
        assert_eq!(
            version_source(&data, &expected.0),
            format!("channel {} #{}", nginx.base(), doc.sequence)
        );
        d.stop();
    }
}
