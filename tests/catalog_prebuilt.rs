//! Indexes built once at HQ: `vitrine catalog publish --with-index` puts the boxes' HNSW dumps
//! into the bundle, and `vitrine catalog import` on a box (the real binary, the shipped embedder's
//! fingerprint and the demo config) loads them when they are this bundle's and match its index
//! settings, and builds its own, saying why, when the listing lies or the settings differ.

mod common;
use common::catalog as catalog_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use vitrine::catalog::synth::Embeddings;

fn vitrine(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vitrine"))
        .args(args)
        .env_remove("VITRINE_KEY_PASSWORD")
        .env("RUST_LOG", "warn,vitrine=info")
        .output()
        .expect("runs vitrine");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(r: (bool, String, String)) -> String {
    assert!(r.0, "failed:\n{}\n{}", r.1, r.2);
    r.1 + &r.2
}

const LOADED: &str = "catalog indexes loaded from the bundle's prebuilt dumps";
const NOT_USED: &str = "the bundle's prebuilt indexes were not used";

/// A box's config (demo config, this data folder) with `edit` applied to its TOML.
fn box_config(dir: &Path, name: &str, seed: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    let sub = dir.join(name);
    std::fs::create_dir_all(&sub).unwrap();
    let p = catalog_support::config(&sub, seed, &sub.join("data"), false, 64);
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, edit(text)).unwrap();
    p
}

fn import(config: &Path, archive: &Path) -> String {
    ok(vitrine(&[
        "catalog",
        "import",
        "--config",
        config.to_str().unwrap(),
        archive.to_str().unwrap(),
    ]))
}

/// The archive the channel's document names.
fn published(channel: &Path) -> PathBuf {
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(channel.join("channel.json")).unwrap()).unwrap();
    channel.join(doc["bundle"].as_str().unwrap())
}

#[test]
fn a_box_loads_hq_indexes_that_match_and_rebuilds_those_that_do_not() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("spring");
    catalog_support::bundle(&bundle, "sp", 2000, Embeddings::Npy, 11);
    let keys = tmp.path().join("keys");
    ok(vitrine(&[
        "catalog",
        "keygen",
        "--out",
        keys.to_str().unwrap(),
    ]));
    let cfg = box_config(tmp.path(), "box-a", &bundle, |t| t);
    let channel = tmp.path().join("channel");
    let out = ok(vitrine(&[
        "catalog",
        "publish",
        bundle.to_str().unwrap(),
        "--channel",
        channel.to_str().unwrap(),
        "--key",
        keys.join("vitrine.key").to_str().unwrap(),
        "--with-index",
        "--config",
        cfg.to_str().unwrap(),
    ]));
    assert!(
        out.contains("prebuilt indexes: M = 16, ef_construction = 100"),
        "{out}"
    );
    let archive = published(&channel);

    // A box with the same index settings loads them.
    let out = import(&cfg, &archive);
    assert!(out.contains(LOADED) && !out.contains(NOT_USED), "{out}");
    assert!(out.contains("2000 items"), "{out}");

    // One with another M builds its own, and says why.
    let other = box_config(tmp.path(), "box-b", &bundle, |t| {
        t.replace("max_connections = 16", "max_connections = 20")
    });
    let out = import(&other, &archive);
    assert!(out.contains(NOT_USED) && out.contains("M = 20"), "{out}");
    assert!(!out.contains(LOADED), "{out}");

    // A listing that lies about a group's items: built here, and the import still succeeds.
    let unpacked = tmp.path().join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    let root = vitrine::catalog::bundle::unpack(
        &archive,
        &unpacked,
        vitrine::catalog::bundle::UnpackLimits::new(1 << 30, 400),
    )
    .unwrap();
    let listing = root.join("index/listing.json");
    let mut l: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&listing).unwrap()).unwrap();
    l["groups"][0]["ids_sha256"] = "0".repeat(64).into();
    std::fs::write(&listing, serde_json::to_vec(&l).unwrap()).unwrap();
    catalog_support::tar_gz(&root);
    let lying = root.with_extension("tar.gz");
    let out = import(&cfg, &lying);
    assert!(out.contains(NOT_USED) && out.contains("digest"), "{out}");
    assert!(!out.contains(LOADED), "{out}");

    // Either way the versions hold the same items.
    let list = ok(vitrine(&[
        "catalog",
        "list",
        "--json",
        "--config",
        cfg.to_str().unwrap(),
    ]));
    let start = list.find('[').unwrap();
    let versions: serde_json::Value = serde_json::from_str(&list[start..]).unwrap();
    let items: Vec<u64> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["items"].as_u64().unwrap())
        .collect();
    assert_eq!(items, vec![2000, 2000]);
}
