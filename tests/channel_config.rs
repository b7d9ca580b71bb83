//! `[catalog.channel]` as `vitrine validate` and `vitrine serve` read it: every problem of a bad
//! section reported at once (and no secret echoed while doing so), and a good one — keys from a
//! file and inline, two during a rotation — ready to poll.

mod channel_support;
mod common;

use channel_support::follower::{channel, config, seed};
use channel_support::publish::Key;
use vitrine::config::Settings;

#[test]
fn every_channel_problem_is_reported_at_once_without_secrets() {
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    let seed = seed(&w.join("seed"), 10);
    let mut ch = toml::Table::new();
    ch.insert(
        "url".into(),
        "https://hq:hunter2-secret@cdn.example.com/eu".into(),
    );
    ch.insert(
        "public_keys".into(),
        toml::Value::Array(vec!["no-such-key.pub".into()]),
    );
    ch.insert("credentials_file".into(), "missing.credentials".into());
    ch.insert("poll_interval_s".into(), 0.into());
    ch.insert("poll_jitter".into(), 0.9.into());
    ch.insert("timeout_s".into(), 0.into());
    ch.insert("pin".into(), " ".into());
    let cfg = config(w, &seed, &w.join("data"), "box-1", ch);
    let e = Settings::load(&cfg)
        .expect_err("a bad channel section")
        .to_string();
    for says in [
        "does not belong in the URL",
        "public_keys[0] is neither a minisign public key nor a readable file",
        "missing.credentials cannot be read",
        "poll_interval_s = 0",
        "poll_jitter = 0.9",
        "timeout_s = 0",
        "pin is empty",
    ] {
        assert!(e.contains(says), "'{says}' missing from:\n{e}");
    }
    assert!(!e.contains("hunter2"), "the password is echoed:\n{e}");

    // Credentials for an origin that takes none, and an S3 file without a secret.
    let key = Key::generate();
    let pubkey = key.write_public(&w.join("hq.pub"));
    let mut ch = channel("https://cdn.example.com/eu", &pubkey);
    ch.insert("credentials_file".into(), "keys".into());
    std::fs::write(w.join("keys"), "aws_access_key_id = AKIAONLY\n").unwrap();
    let cfg = config(w, &seed, &w.join("data"), "box-1", ch);
    let e = Settings::load(&cfg)
        .expect_err("credentials for https")
        .to_string();
    assert!(e.contains("only for s3:// channels"), "{e}");
    let mut ch = channel("s3://fleet/eu", &pubkey);
    ch.insert("credentials_file".into(), "keys".into());
    let cfg = config(w, &seed, &w.join("data"), "box-1", ch);
    let e = Settings::load(&cfg)
        .expect_err("half a key pair")
        .to_string();
    assert!(e.contains("aws_secret_access_key"), "{e}");
    assert!(!e.contains("AKIAONLY"), "{e}");
}

#[test]
fn a_rotation_trusts_two_keys_one_inline() {
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    let seed = seed(&w.join("seed"), 10);
    let (old, new) = (Key::generate(), Key::generate());
    let old_file = old.write_public(&w.join("old.pub"));
    let mut ch = channel("s3://fleet/eu/paris", &old_file);
    // The new key as its bare base64 line, straight in the config.
    let new_line = new.public.lines().last().unwrap().to_string();
    ch.insert(
        "public_keys".into(),
        toml::Value::Array(vec!["old.pub".into(), new_line.into()]),
    );
    ch.insert("pin".into(), "spring-2027".into());
    let cfg = config(w, &seed, &w.join("data"), "box-1", ch);
    let s = Settings::load(&cfg).expect("a good channel section");
    let c = s.catalog.channel.expect("channel settings");
    assert_eq!(c.url.to_string(), "s3://fleet/eu/paris");
    assert_eq!(c.pin.as_deref(), Some("spring-2027"));
    assert_eq!(c.poll_interval.as_secs(), 1);
    for k in [&old, &new] {
        let sig = k.sign(b"payload");
        c.keys.verify("payload", b"payload", &sig).expect("trusted");
    }
    let stranger = Key::generate();
    let e = c
        .keys
        .verify("payload", b"payload", &stranger.sign(b"payload"))
        .unwrap_err();
    assert_eq!(
        e.reason,
        vitrine::catalog::channel::RefusalReason::UnknownKey
    );
}
