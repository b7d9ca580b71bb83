//! What a box refuses from its channel (real nginx origin, real daemon): a revoked version, a
//! replayed older document (also after a restart), a document or a bundle signed by a stranger's
//! key, a bit-flipped and a truncated bundle, a bundle for another embedder. After each one the
//! live catalog keeps serving the version it had, nothing new is stored or activated, and
//! `/api/status` and `vitrine_channel_refusals_total` name the reason.

mod channel_support;
mod common;

use std::time::Duration;

use channel_support::follower::*;
use channel_support::publish::{self, Key, Target};
use channel_support::{Nginx, requests};
use common::Daemon;
use common::catalog::versions_on_disk;
use vitrine::catalog::channel::doc::ChannelDocument;

const WAIT: Duration = Duration::from_secs(90);

/// Publishes `doc` (and `bundle` under its name), waits for the refusal, and checks that
/// nothing changed: still `v0002` from the channel's first offer, serving, no new version.
#[allow(clippy::too_many_arguments)]
fn refused(
    d: &Daemon,
    target: &Target,
    data: &std::path::Path,
    bundle: Option<&[u8]>,
    doc: &ChannelDocument,
    reason: &str,
    says: &str,
    count: f64,
) -> serde_json::Value {
    match bundle {
        Some(b) => target.publish(b, doc),
        None => target.put_document(doc),
    }
    // A document that does not verify has no sequence to show: its message tells it apart.
    let s = d.wait_status(&format!("refusal '{reason}'"), WAIT, |s| {
        let r = &s["channel"]["last_refusal"];
        r["reason"] == reason
            && (r["sequence"] == doc.sequence
                || r["sequence"].is_null()
                    && r["message"].as_str().is_some_and(|m| m.contains(says)))
    });
    let c = &s["channel"];
    assert_eq!(c["state"], "refused", "{c}");
    let message = c["last_refusal"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(says), "'{says}' not in: {message}");
    assert_eq!(
        d.metric(&format!(
            "vitrine_channel_refusals_total{{reason=\"{reason}\"}}"
        )),
        Some(count),
        "{c}"
    );
    assert_eq!(s["catalog"]["version"], "v0002", "{s}");
    assert_eq!(
        versions_on_disk(data),
        ("v0002".into(), vec!["v0001".into(), "v0002".into()])
    );
    d.wait_serving("v0002", "first-", WAIT);
    let downloads = data.join("channel/downloads");
    let left: Vec<_> = std::fs::read_dir(&downloads)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "a refused download stays: {left:?}");
    s
}

#[test]
fn every_refusal_leaves_the_live_catalog_serving() {
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    let nginx = Nginx::start("");
    let target = Target::Folder(&nginx.root);
    let Following { key, fp, data, cfg } = following(w, &nginx.base());
    let stranger = Key::generate();

    let first = publish::bundle(w, "first", 30, &fp, 1);
    let doc1 = publish::document(&key, 1, "first", &first, Some(fp.clone()), 100, &[]);
    target.publish(&first, &doc1);
    let d = Daemon::with_config(&cfg, w, &[]);
    d.wait_status("first taken", WAIT, |s| {
        s["channel"]["state"] == "up_to_date" && s["catalog"]["version"] == "v0002"
    });
    d.wait_serving("v0002", "first-", WAIT);
    let good = publish::bundle(w, "second", 30, &fp, 2);

    // A version HQ revoked in the same document.
    let doc = publish::document(&key, 2, "bad", &good, Some(fp.clone()), 100, &["bad"]);
    refused(
        &d,
        &target,
        &data,
        Some(&good),
        &doc,
        "revoked",
        "revoked",
        1.0,
    );
    assert!(requests(&nginx.access_log(), &format!("/{}", doc.bundle)).is_empty());

    // The first document again, replayed by whoever can write to the origin.
    refused(
        &d,
        &target,
        &data,
        None,
        &doc1,
        "sequence_backwards",
        "below 2",
        1.0,
    );

    // A document signed by a key the box does not trust.
    let doc = publish::document(&stranger, 3, "second", &good, Some(fp.clone()), 100, &[]);
    refused(
        &d,
        &target,
        &data,
        Some(&good),
        &doc,
        "unknown_key",
        "channel.json",
        1.0,
    );

    // A trusted document naming a bundle signed by a stranger.
    let mut doc = publish::document(&key, 4, "second", &good, Some(fp.clone()), 100, &[]);
    doc.bundle_signature = stranger.sign(&good);
    publish::resign(&key, &mut doc);
    let s = refused(
        &d,
        &target,
        &data,
        Some(&good),
        &doc,
        "unknown_key",
        "bundle",
        2.0,
    );
    assert_eq!(s["channel"]["highest_sequence"], 4);

    // Bit-flipped in storage: the document's digest no longer matches.
    let doc = publish::document(&key, 5, "second", &good, Some(fp.clone()), 100, &[]);
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x10;
    refused(
        &d,
        &target,
        &data,
        Some(&flipped),
        &doc,
        "digest",
        "SHA-256",
        1.0,
    );

    // Truncated in storage: shorter than the document says.
    let doc = publish::document(&key, 6, "second", &good, Some(fp.clone()), 100, &[]);
    refused(
        &d,
        &target,
        &data,
        Some(&good[..good.len() - 1000]),
        &doc,
        "size",
        "ended after",
        1.0,
    );

    // Made for another embedder: refused before anything is downloaded.
    let mut other = fp.clone();
    other.sha256 = "0".repeat(64);
    let other_bundle = publish::bundle(w, "other", 10, &other, 3);
    let doc = publish::document(&key, 7, "other", &other_bundle, Some(other), 100, &[]);
    refused(
        &d,
        &target,
        &data,
        Some(&other_bundle),
        &doc,
        "fingerprint",
        "another embedder",
        1.0,
    );
    assert!(requests(&nginx.access_log(), &format!("/{}", doc.bundle)).is_empty());
    // A box that cannot take what it is offered is behind, and says so.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(d.metric("vitrine_channel_behind_seconds").unwrap() >= 1.0);

    // The highest sequence survives a power cut: the replay is refused after a restart too.
    d.kill();
    target.put_document(&doc1);
    let d = Daemon::with_config(&cfg, w, &[]);
    let s = d.wait_status("replay refused after restart", WAIT, |s| {
        s["channel"]["last_refusal"]["reason"] == "sequence_backwards"
    });
    assert_eq!(s["channel"]["highest_sequence"], 7, "{s}");
    assert_eq!(
        d.metric("vitrine_channel_refusals_total{reason=\"sequence_backwards\"}"),
        Some(1.0)
    );
    d.wait_serving("v0002", "first-", WAIT);

    // And a genuine new document is still taken.
    let doc = publish::document(&key, 8, "second", &good, Some(fp.clone()), 100, &[]);
    target.publish(&good, &doc);
    d.wait_status("second taken", WAIT, |s| {
        s["catalog"]["version"] == "v0003" && s["channel"]["state"] == "up_to_date"
    });
    d.wait_serving("v0003", "second-", WAIT);
    assert_eq!(d.metric("vitrine_channel_behind_seconds"), Some(0.0));
    d.stop();
}
