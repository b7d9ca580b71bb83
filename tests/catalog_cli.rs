//! `vitrine catalog verify | import | list | activate | rollback` as staff run them, with the
//! shipped embedder: good and bad bundles, an images-only bundle embedded during the import, and
//! the refusal to write while a running daemon holds the data folder.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::catalog::*;
use common::{bin, utf8};
use vitrine::catalog::synth::Embeddings;

/// `vitrine catalog VERB --config CFG REST…`, with or without the staff token's variable set.
fn run(cfg: &Path, args: &[&str], token: bool) -> Output {
    let mut cmd = bin();
    cmd.args(["catalog"])
        .args(&args[..1])
        .arg("--config")
        .arg(cfg)
        .args(&args[1..]);
    if token {
        cmd.env(TOKEN_ENV, TOKEN);
    } else {
        cmd.env_remove(TOKEN_ENV);
    }
    cmd.output().expect("run vitrine")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// [`run`] with the token, which must succeed (`ok`) or fail; returns what it printed.
fn expect(cfg: &Path, args: &[&str], ok: bool) -> String {
    let o = run(cfg, args, true);
    let t = text(&o);
    assert_eq!(o.status.success(), ok, "{args:?}: {t}");
    t
}

#[test]
fn staff_cli_verify_import_list_activate_rollback() {
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    let cfg = seeded_config(w, 10, false, 16);

    let a = w.join("a");
    bundle(&a, "a", 25, Embeddings::Npy, 2);
    let t = expect(&cfg, &["verify", utf8(&a)], true);
    assert!(t.contains("OK — 'a', 25 items"), "{t}");

    // A bad bundle: non-zero exit, the offending rows named.
    let bad = w.join("bad");
    bundle(&bad, "bad", 5, Embeddings::Inline, 3);
    replace_in(&bad.join("items.jsonl"), "bad-3", "bad-2");
    let t = expect(&cfg, &["verify", utf8(&bad)], false);
    assert!(t.contains("line 4, item 'bad-2': duplicate id"), "{t}");
    expect(&cfg, &["import", utf8(&bad)], false);

    // Import as an archive, then an images-only folder embedded by the shipped model.
    tar_gz(&a);
    let tgz = w.join("a.tar.gz");
    let t = expect(&cfg, &["import", utf8(&tgz), "--label", "first"], true);
    assert!(
        t.contains("stored version v0001 ('first', 25 items), now active"),
        "{t}"
    );
    let imgs = w.join("imgs");
    bundle(&imgs, "img", 6, Embeddings::None, 4);
    let t = expect(&cfg, &["import", utf8(&imgs), "--no-activate"], true);
    assert!(t.contains("stored version v0002"), "{t}");
    let o = run(&cfg, &["list", "--json"], true);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let active: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .filter(|v| v["active"] == true)
        .map(|v| v["id"].as_str().expect("id"))
        .collect();
    assert_eq!(active, ["v0001"]);

    expect(&cfg, &["activate", "v0002"], true);
    let t = expect(&cfg, &["rollback"], true);
    assert!(t.contains("rolled back to version v0001"), "{t}");
    let t = expect(&cfg, &["activate", "v0042"], false);
    assert!(t.contains("no catalog version 'v0042'"), "{t}");

    // Only canonical version ids: `./v0002` once reached the same folder under another name.
    for bad in ["./v0002", "v0002/", "../versions/v0002", "v2"] {
        let t = expect(&cfg, &["activate", bad], false);
        assert!(t.contains("is not a catalog version id"), "{bad}: {t}");
    }

    // No verb needs the staff token: on an installed box it lives only in the service's
    // environment file.
    for args in [
        vec!["list"],
        vec!["verify", utf8(&a)],
        vec!["activate", "v0001"],
    ] {
        let o = run(&cfg, &args, false);
        assert!(
            o.status.success(),
            "{args:?} without the token: {}",
            text(&o)
        );
    }

    // While the daemon runs it holds the data folder: the CLI says so instead of writing.
    let d = serve(&cfg, &[], Duration::from_secs(90));
    let t = expect(&cfg, &["import", utf8(&a)], false);
    assert!(t.contains("in use by another vitrine process"), "{t}");
    let t = expect(&cfg, &["list"], true);
    assert!(t.contains("* v0001"), "listing only reads: {t}");
    assert!(d.terminate(Duration::from_secs(90)).success());
}
