//! `vitrine catalog keygen` and `vitrine catalog publish` against real storage: an s3s-fs server
//! (unsigned, and one that checks SigV4 signatures) and local folders. What HQ writes must verify
//! as a box will check it: the document with `ChannelDocument::parse_verified`, the bundle's
//! signature with the same public key.

mod channel_support;
mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use channel_support::S3Server;
use vitrine::catalog::channel::{ChannelDocument, TrustedKeys};
use vitrine::catalog::items::EmbedderFingerprint;
use vitrine::catalog::synth::{self, Embeddings};

fn fingerprint() -> EmbedderFingerprint {
    EmbedderFingerprint {
        sha256: "hq-test-embedder".into(),
        dim: 32,
        recipe: "cnn".into(),
    }
}

/// A bundle folder labelled `version`; `seed` changes its vectors (so its content).
fn bundle(dir: &Path, version: &str, seed: u64) -> PathBuf {
    let b = dir.join(format!("{version}-{seed}"));
    synth::write_bundle(
        &b,
        "it",
        120,
        6,
        &fingerprint(),
        Embeddings::Npy,
        version,
        seed,
    )
    .expect("bundle");
    b
}

/// Runs the binary with only the environment a test gives it (no AWS_* of the developer's).
fn vitrine(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut c = common::bin();
    c.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") || k.starts_with("GOOGLE_") || k.starts_with("AZURE_") {
            c.env_remove(k);
        }
    }
    c.env_remove("VITRINE_KEY_PASSWORD");
    c.envs(env.iter().copied());
    let out = c.output().expect("runs vitrine");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `vitrine catalog keygen` into `dir`: (secret key path, public key text).
fn keygen(dir: &Path, env: &[(&str, &str)]) -> (PathBuf, String) {
    let out = dir.join("keys");
    let (ok, stdout, stderr) = vitrine(&["catalog", "keygen", "--out", out.to_str().unwrap()], env);
    assert!(ok, "keygen failed:\n{stdout}\n{stderr}");
    let public = std::fs::read_to_string(out.join("vitrine.pub")).expect("vitrine.pub");
    (out.join("vitrine.key"), public)
}

/// Publishes `bundle` with extra `args`; panics with the output on failure when `must` is set.
fn publish(
    bundle: &Path,
    channel: &str,
    key: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (bool, String, String) {
    let mut all = vec![
        "catalog",
        "publish",
        bundle.to_str().unwrap(),
        "--channel",
        channel,
        "--key",
        key.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    vitrine(&all, env)
}

fn must(r: (bool, String, String)) -> String {
    assert!(r.0, "publish failed:\n{}\n{}", r.1, r.2);
    r.1
}

/// The channel's document as a box would accept it, after checking the bundle it names.
fn verified(channel_dir: &Path, public: &str) -> ChannelDocument {
    let keys = TrustedKeys::parse(&[public.to_string()]).expect("public key");
    let bytes = std::fs::read(channel_dir.join("channel.json")).expect("channel.json");
    let doc = ChannelDocument::parse_verified(&bytes, &keys).expect("document verifies");
    let bundle = channel_dir.join(&doc.bundle);
    let data = std::fs::read(&bundle).expect("the named bundle exists");
    assert_eq!(data.len() as u64, doc.size);
    use sha2::Digest;
    assert_eq!(hex::encode(sha2::Sha256::digest(&data)), doc.sha256);
    keys.verify_reader("bundle", &data[..], &doc.bundle_signature)
        .expect("bundle signature verifies");
    assert_eq!(doc.bundle, format!("bundles/{}.tar.gz", doc.sha256));
    doc
}

/// (inode, modification time) of a file: an upload replaces the file.
fn stamp(p: &Path) -> (u64, std::time::SystemTime) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).expect("metadata");
    (m.ino(), m.modified().expect("mtime"))
}

fn s3_env(s3: &S3Server) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT", s3.endpoint()),
        ("AWS_ALLOW_HTTP", "true".into()),
        ("AWS_SKIP_SIGNATURE", "true".into()),
        ("AWS_REGION", "us-east-1".into()),
    ]
}

fn refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[test]
fn s3_publish_is_idempotent_and_each_change_is_a_new_sequence() {
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3Server::start("fleet");
    let env = s3_env(&s3);
    let env = refs(&env);
    let (key, public) = keygen(tmp.path(), &[]);
    let channel = "s3://fleet/chain/spring";
    let on_disk = s3.root.join("fleet/chain/spring");
    let v1 = bundle(tmp.path(), "v1", 1);

    let out = must(publish(&v1, channel, &key, &["--rollout", "10"], &env));
    assert!(
        out.contains("sequence 1") && out.contains("uploaded"),
        "{out}"
    );
    let doc = verified(&on_disk, &public);
    assert_eq!(
        (doc.sequence, doc.version.as_str(), doc.rollout_percent),
        (1, "v1", 10)
    );
    assert_eq!(doc.embedder, Some(fingerprint()));
    let object = on_disk.join(&doc.bundle);
    let (doc_bytes, object_stamp) = (
        std::fs::read(on_disk.join("channel.json")).unwrap(),
        stamp(&object),
    );

    // The same again: nothing uploaded, nothing written.
    std::thread::sleep(Duration::from_millis(20));
    let out = must(publish(&v1, channel, &key, &["--rollout", "10"], &env));
    assert!(out.contains("nothing written"), "{out}");
    assert_eq!(
        std::fs::read(on_disk.join("channel.json")).unwrap(),
        doc_bytes
    );
    assert_eq!(stamp(&object), object_stamp);
    // So is its archive: the same content.
    let archive = tmp.path().join("v1.tar.gz");
    vitrine::catalog::bundle::pack_tar_gz(&v1, &archive).unwrap();
    let out = must(publish(&archive, channel, &key, &["--rollout", "10"], &env));
    assert!(out.contains("nothing written"), "{out}");

    // Only the roll-out changes: a new sequence naming the same object, not uploaded again.
    let out = must(publish(&v1, channel, &key, &["--rollout", "50"], &env));
    assert!(out.contains("already in the channel"), "{out}");
    let doc2 = verified(&on_disk, &public);
    assert_eq!((doc2.sequence, doc2.rollout_percent), (2, 50));
    assert_eq!(doc2.sha256, doc.sha256);
    assert_eq!(stamp(&object), object_stamp);
    // Without --rollout the same version keeps its share.
    let out = must(publish(&v1, channel, &key, &[], &env));
    assert!(out.contains("nothing written"), "{out}");

    // The same version name with other content is refused, and nothing changes.
    let other = bundle(tmp.path(), "v1", 2);
    let (ok, stdout, stderr) = publish(&other, channel, &key, &[], &env);
    assert!(!ok, "{stdout}");
    assert!(
        stderr.contains("'v1' was published") && stderr.contains("new version"),
        "{stderr}"
    );
    assert_eq!(verified(&on_disk, &public).sequence, 2);

    // A new version revoking an old one: everyone (100 %), revocations kept from then on.
    let v2 = bundle(tmp.path(), "v2", 3);
    must(publish(&v2, channel, &key, &["--revoke", "v0"], &env));
    let doc3 = verified(&on_disk, &public);
    assert_eq!(
        (doc3.sequence, doc3.version.as_str(), doc3.rollout_percent),
        (3, "v2", 100)
    );
    assert_eq!(doc3.revoked, vec!["v0".to_string()]);
    must(publish(&v2, channel, &key, &["--revoke", "v1"], &env));
    let doc4 = verified(&on_disk, &public);
    assert_eq!(doc4.sequence, 4);
    assert_eq!(doc4.revoked, vec!["v0".to_string(), "v1".to_string()]);
    let v3 = bundle(tmp.path(), "v3", 4);
    must(publish(&v3, channel, &key, &[], &env));
    let doc5 = verified(&on_disk, &public);
    assert_eq!((doc5.sequence, doc5.revoked.len()), (5, 2));
    // Every object published stays, under its content address.
    assert!(on_disk.join(&doc.bundle).is_file() && on_disk.join(&doc3.bundle).is_file());

    // A revoked version cannot be offered again.
    let (ok, _, stderr) = publish(&v1, channel, &key, &[], &env);
    assert!(!ok && stderr.contains("revoked"), "{stderr}");
    assert_eq!(verified(&on_disk, &public).sequence, 5);
}

/// Two publishes at once: the one that read the channel first and writes last must not offer
/// boxes a sequence the other already used (a box would refuse the later one, or take it over
/// the other), nor undo the other's ledger entry. It is refused with what to do, and works when
/// run again.
#[test]
fn a_publish_that_lost_a_race_is_refused_and_the_winner_stays() {
    use std::io::{BufRead, BufReader};
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3Server::start("fleet");
    let env = s3_env(&s3);
    let env = refs(&env);
    let (key, public) = keygen(tmp.path(), &[]);
    let channel = "s3://fleet/race";
    let on_disk = s3.root.join("fleet/race");
    must(publish(
        &bundle(tmp.path(), "v1", 1),
        channel,
        &key,
        &[],
        &env,
    ));

    // A reads the channel (sequence 1) and is held there.
    let go = tmp.path().join("go");
    let late = bundle(tmp.path(), "late", 2);
    let mut a = common::bin()
        .args([
            "catalog",
            "publish",
            late.to_str().unwrap(),
            "--channel",
            channel,
        ])
        .args(["--key", key.to_str().unwrap()])
        .envs(env.iter().copied())
        .env("VITRINE_CATALOG_PAUSE_AT", "publish-read")
        .env("VITRINE_CATALOG_RESUME_FILE", &go)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start publish");
    let mut lines = BufReader::new(a.stdout.take().unwrap()).lines();
    let paused = lines.next().and_then(Result::ok).unwrap_or_default();
    assert_eq!(paused, "vitrine catalog paused at publish-read");
    // B publishes meanwhile: sequence 2.
    must(publish(
        &bundle(tmp.path(), "early", 3),
        channel,
        &key,
        &[],
        &env,
    ));
    assert_eq!(verified(&on_disk, &public).version, "early");
    // A goes on, and is refused; B's version is what boxes are offered.
    std::fs::write(&go, b"").unwrap();
    let out = a.wait_with_output().expect("publish ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("changed while this publish ran")
            && stderr.contains("run this publish again"),
        "{stderr}"
    );
    let doc = verified(&on_disk, &public);
    assert_eq!((doc.sequence, doc.version.as_str()), (2, "early"));
    let ledger = std::fs::read_to_string(on_disk.join("published.json")).unwrap();
    assert!(ledger.contains("\"early\""), "{ledger}");
    // Run again, it starts from B's document.
    must(publish(&late, channel, &key, &[], &env));
    let doc = verified(&on_disk, &public);
    assert_eq!((doc.sequence, doc.version.as_str()), (3, "late"));
}

#[test]
fn a_folder_channel_works_the_same_and_an_http_origin_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (key, public) = keygen(tmp.path(), &[]);
    let v1 = bundle(tmp.path(), "autumn", 5);
    let dir = tmp.path().join("channel");
    let url = format!("file://{}", dir.display());
    must(publish(&v1, &url, &key, &[], &[]));
    let doc = verified(&dir, &public);
    assert_eq!((doc.sequence, doc.rollout_percent), (1, 100));
    // A plain path names the same channel.
    let out = must(publish(&v1, dir.to_str().unwrap(), &key, &[], &[]));
    assert!(out.contains("nothing written"), "{out}");
    // A ledger records what each version was.
    let ledger: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("published.json")).unwrap()).unwrap();
    assert_eq!(ledger["versions"][0]["version"], "autumn");

    let (ok, stdout, stderr) = publish(&v1, "http://127.0.0.1:9/channel", &key, &[], &[]);
    assert!(!ok, "{stdout}");
    assert!(
        stderr.contains("read-only") && stderr.contains("publish to the bucket"),
        "{stderr}"
    );
    // A bad bundle is refused with the import's own message, before anything is written.
    let broken = bundle(tmp.path(), "winter", 6);
    std::fs::write(broken.join("items.jsonl"), b"{\"id\": \"x\"}\n").unwrap();
    let (ok, _, stderr) = publish(&broken, &url, &key, &[], &[]);
    assert!(!ok && stderr.contains("bundle is refused"), "{stderr}");
    assert_eq!(verified(&dir, &public).version, "autumn");
}

#[test]
fn an_encrypted_key_signs_only_with_its_password_from_the_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let pw = [("VITRINE_KEY_PASSWORD", "hq correct horse")];
    let (key, public) = keygen(tmp.path(), &pw);
    let text = std::fs::read_to_string(&key).unwrap();
    assert!(
        text.contains("encrypted") && !text.contains("NOT"),
        "{text}"
    );
    // keygen never overwrites.
    let (ok, _, stderr) = vitrine(
        &[
            "catalog",
            "keygen",
            "--out",
            tmp.path().join("keys").to_str().unwrap(),
        ],
        &[],
    );
    assert!(!ok && stderr.contains("already exists"), "{stderr}");

    let v = bundle(tmp.path(), "locked", 7);
    let dir = tmp.path().join("ch");
    let (ok, _, stderr) = publish(&v, dir.to_str().unwrap(), &key, &[], &[]);
    assert!(!ok && stderr.contains("VITRINE_KEY_PASSWORD"), "{stderr}");
    let (ok, _, stderr) = publish(
        &v,
        dir.to_str().unwrap(),
        &key,
        &[],
        &[("VITRINE_KEY_PASSWORD", "wrong")],
    );
    assert!(!ok && stderr.contains("does not open"), "{stderr}");
    assert!(!dir.join("channel.json").exists());
    must(publish(&v, dir.to_str().unwrap(), &key, &[], &pw));
    verified(&dir, &public);
}

#[test]
fn credentials_come_from_a_file_and_are_never_printed() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = "hq-secret-0123456789";
    let s3 = S3Server::start_with_keys("fleet", "hq-writer", secret);
    let (key, public) = keygen(tmp.path(), &[]);
    let v = bundle(tmp.path(), "signed", 8);
    let endpoint = s3.endpoint();
    let env = [
        ("AWS_ENDPOINT", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_REGION", "us-east-1"),
    ];
    let creds = tmp.path().join("hq.env");
    std::fs::write(
        &creds,
        format!("AWS_ACCESS_KEY_ID=hq-writer\nAWS_SECRET_ACCESS_KEY={secret}\n"),
    )
    .unwrap();
    let c = creds.to_str().unwrap();
    must(publish(
        &v,
        "s3://fleet/ch",
        &key,
        &["--credentials", c],
        &env,
    ));
    verified(&s3.root.join("fleet/ch"), &public);

    // A wrong secret is refused by the server, and the message does not show it.
    std::fs::write(
        &creds,
        "AWS_ACCESS_KEY_ID=hq-writer\nAWS_SECRET_ACCESS_KEY=not-the-secret\n",
    )
    .unwrap();
    let v2 = bundle(tmp.path(), "signed-2", 9);
    let (ok, stdout, stderr) = publish(&v2, "s3://fleet/ch", &key, &["--credentials", c], &env);
    assert!(!ok, "{stdout}");
    assert!(
        !stderr.contains("not-the-secret") && !stdout.contains("not-the-secret"),
        "{stderr}"
    );
    assert_eq!(
        verified(&s3.root.join("fleet/ch"), &public).version,
        "signed"
    );
}

/// A random-noise PNG (incompressible) of about `mib` MiB.
fn noise_png(path: &Path, mib: usize, seed: u64) {
    let mut rng = synth::Rng::new(seed);
    let side = ((mib << 20) as f64 / 3.0).sqrt() as u32;
    let img = image::RgbImage::from_fn(side, side, |_, _| {
        let v = rng.next_u64();
        image::Rgb([v as u8, (v >> 8) as u8, (v >> 16) as u8])
    });
    img.save_with_format(path, image::ImageFormat::Png).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_larger_than_a_part_goes_up_in_parts() {
    use vitrine::catalog::channel::keys::{SigningKey, keygen};
    use vitrine::catalog::channel::publish::{PublishOptions, publish};
    use vitrine::catalog::channel::store::StoreConfig;
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3Server::start("fleet");
    let v = bundle(tmp.path(), "big", 10);
    // Two photos of ~6 MiB each: the archive spans three 5 MiB parts.
    for i in 0..2 {
        noise_png(&v.join(format!("images/it-{i}.jpg")), 6, i);
    }
    let g = keygen(&tmp.path().join("k"), None).unwrap();
    let key = SigningKey::load(&g.secret, None).unwrap();
    let mut opts = PublishOptions::new(v.clone(), "s3://fleet/big".into());
    opts.part_size = 5 << 20;
    opts.store = StoreConfig {
        use_env: false,
        options: vec![
            ("aws_endpoint".into(), s3.endpoint()),
            ("aws_allow_http".into(), "true".into()),
            ("aws_skip_signature".into(), "true".into()),
        ],
        ..Default::default()
    };
    let r = publish(&opts, &key).await.expect("publish");
    assert!(r.uploaded_bundle && r.size > 10 << 20, "{r:?}");
    let public = std::fs::read_to_string(&g.public).unwrap();
    let doc = verified(&s3.root.join("fleet/big"), &public);
    assert_eq!(doc.size, r.size);
}
