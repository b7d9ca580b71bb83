//! A box following a channel in an S3-compatible bucket (a real s3s-fs that demands SigV4
//! signatures), with its keys in `catalog.channel.credentials_file`: the version is taken, an
//! unchanged channel is not downloaded again (s3s-fs ignores `If-None-Match`, so the box compares
//! ETags itself), an outage is reported and survived, and the keys appear nowhere — not in the
//! log, `/api/status`, `/metrics` or the version's recorded source.

mod channel_support;
mod common;

use std::time::Duration;

use channel_support::S3Server;
use channel_support::follower::*;
use channel_support::publish::{self, Key, Target};
use common::Daemon;
use common::catalog::{fingerprint, version_source, versions_on_disk};

const WAIT: Duration = Duration::from_secs(90);
const ACCESS_KEY: &str = "AKIAVITRINETEST0001";
const SECRET_KEY: &str = "s3cr3t-Vitrine-Test-Key-0123456789";

/// A bucket `fleet` on an s3s-fs that demands SigV4 with the test's keys, HQ's key, and a box's
/// config in `w` following `s3://fleet/PREFIX` with `extra` in its `[catalog.channel]`; the box
/// is seeded with 20 items and falls inside a roll-out of `percent`.
struct Bucket {
    s3: S3Server,
    key: Key,
    data: std::path::PathBuf,
    cfg: std::path::PathBuf,
}

impl Bucket {
    fn new(w: &std::path::Path, prefix: &str, percent: u8, extra: &[(&str, &str)]) -> Bucket {
        let s3 = S3Server::start_with_keys("fleet", ACCESS_KEY, SECRET_KEY);
        let key = Key::generate();
        let seed = seed(&w.join("seed"), 20);
        let data = w.join("data");
        let pubkey = key.write_public(&w.join("hq.pub"));
        let mut ch = channel(&format!("s3://fleet/{prefix}"), &pubkey);
        ch.insert("endpoint".into(), s3.endpoint().into());
        ch.insert("region".into(), "us-east-1".into());
        for (k, v) in extra {
            ch.insert((*k).into(), (*v).into());
        }
        let cfg = config(w, &seed, &data, &box_id(true, percent), ch);
        Bucket { s3, key, data, cfg }
    }
}

/// HQ writing to the bucket at `endpoint`, signed with the keys.
fn hq<'a>(endpoint: &'a str, prefix: &'a str) -> Target<'a> {
    Target::S3 {
        endpoint,
        bucket: "fleet",
        prefix,
        keys: Some((ACCESS_KEY, SECRET_KEY)),
    }
}

#[test]
fn a_box_follows_a_signed_s3_channel_without_showing_its_keys() {
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    std::fs::write(
        w.join("channel.credentials"),
        format!(
            "[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
        ),
    )
    .unwrap();
    let b = Bucket::new(
        w,
        "eu/stores",
        50,
        &[("credentials_file", "channel.credentials")],
    );
    let (mut s3, key, data, cfg) = (b.s3, b.key, b.data, b.cfg);
    let endpoint = s3.endpoint();
    let target = hq(&endpoint, "eu/stores");
    let fp = fingerprint();
    let spring = publish::bundle(w, "spring", 40, &fp, 1);
    let doc = publish::document(&key, 1, "spring", &spring, Some(fp.clone()), 50, &[]);
    target.publish(&spring, &doc);
    // The keys are not in the environment: only the file can have signed the requests.
    let d = Daemon::with_config(
        &cfg,
        w,
        &[("AWS_ACCESS_KEY_ID", ""), ("AWS_SECRET_ACCESS_KEY", "")],
    );
    let s = d.wait_status("spring taken from the bucket", WAIT, |s| {
        s["catalog"]["version"] == "v0002" && s["channel"]["state"] == "up_to_date"
    });
    assert_eq!(s["channel"]["url"], "s3://fleet/eu/stores", "{s}");
    assert_eq!(s["catalog"]["source"], "channel s3://fleet/eu/stores #1");
    d.wait_serving("v0002", "spring-", WAIT);

    // Unchanged: polled, never downloaded again.
    let fetched = d.metric("vitrine_channel_fetched_bytes_total").unwrap();
    let checked = d.status()["channel"]["last_check"].clone();
    std::thread::sleep(Duration::from_secs(3));
    let s = d.status();
    assert_ne!(s["channel"]["last_check"], checked);
    assert_eq!(s["channel"]["state"], "up_to_date");
    assert_eq!(
        d.metric("vitrine_channel_fetched_bytes_total").unwrap(),
        fetched,
        "an unchanged ETag must not be read again"
    );
    assert_eq!(versions_on_disk(&data).1.len(), 2);

    // The bucket unreachable for a while.
    s3.stop();
    d.wait_status("bucket down", WAIT, |s| {
        s["channel"]["last_error"]["kind"] == "unreachable" && s["channel"]["state"] == "error"
    });
    assert_eq!(d.metric("vitrine_channel_up"), Some(0.0));
    d.wait_serving("v0002", "spring-", WAIT);
    s3.resume();
    d.wait_status("bucket back", WAIT, |s| {
        s["channel"]["state"] == "up_to_date"
    });

    // No key anywhere a technician (or a scraper) looks.
    let shown = [
        d.log(),
        d.get("/api/status").1,
        d.metrics(),
        version_source(&data, "v0002"),
    ];
    d.stop();
    for (what, text) in ["log", "/api/status", "/metrics", "version source"]
        .iter()
        .zip(&shown)
    {
        assert!(
            !text.contains(SECRET_KEY) && !text.contains(ACCESS_KEY),
            "a credential shows in the {what}"
        );
    }
}

/// The other way a box gets its keys: `AWS_*` in its environment (systemd's `EnvironmentFile=`),
/// no credentials file. A wrong secret is an error the status names, never a version taken;
/// the right one takes it. Neither secret shows anywhere.
#[test]
fn a_box_signs_with_keys_from_its_environment() {
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    let b = Bucket::new(w, "eu", 100, &[]);
    let endpoint = b.s3.endpoint();
    let target = hq(&endpoint, "eu");
    let (key, cfg, fp) = (&b.key, &b.cfg, fingerprint());
    let spring = publish::bundle(w, "spring", 30, &fp, 3);
    let doc = publish::document(key, 1, "spring", &spring, Some(fp.clone()), 100, &[]);
    target.publish(&spring, &doc);

    let wrong = "not-the-secret-0123456789";
    let d = Daemon::with_config(
        cfg,
        w,
        &[
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", wrong),
        ],
    );
    let s = d.wait_status("the bucket refuses a wrong secret", WAIT, |s| {
        s["channel"]["state"] == "error"
    });
    assert_eq!(s["catalog"]["version"], "v0001", "{s}");
    let error = &s["channel"]["last_error"];
    assert_eq!(error["kind"], "http_status", "{s}");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("SignatureDoesNotMatch")),
        "{s}"
    );
    let refused = [d.log(), d.get("/api/status").1, d.metrics()];
    d.stop();

    let d = Daemon::with_config(
        cfg,
        w,
        &[
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ],
    );
    d.wait_status("spring taken with the environment's keys", WAIT, |s| {
        s["catalog"]["version"] == "v0002" && s["channel"]["state"] == "up_to_date"
    });
    d.wait_serving("v0002", "spring-", WAIT);
    let taken = [d.log(), d.get("/api/status").1, d.metrics()];
    d.stop();
    for text in refused.iter().chain(&taken) {
        assert!(
            !text.contains(SECRET_KEY) && !text.contains(wrong) && !text.contains(ACCESS_KEY),
            "a credential shows: {text}"
        );
    }
}
