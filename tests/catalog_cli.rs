//! `vitrine catalog verify | import | list | activate | rollback` as staff run them, with the
//! shipped embedder: good and bad bundles, an images-only bundle embedded during the import, and
//! the refusal to write while a running daemon holds the data folder.

mod common;

use std::process::Output;
use std::time::Duration;

use common::bin;
use common::catalog::*;
use vitrine::catalog::synth::Embeddings;

fn vitrine(cfg: &std::path::Path, args: &[&str]) -> Output {
    run(cfg, args, true)
}

/// `vitrine catalog ARGS`, with or without the staff token's variable set.
fn run(cfg: &std::path::Path, args: &[&str], token: bool) -> Output {
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

#[test]
fn staff_cli_verify_import_list_activate_rollback() {
    let work = tempfile::tempdir().expect("tmp");
    let w = work.path();
    let cfg = seeded_config(w, 10, false, 16);

    let a = w.join("a");
    bundle(&a, "a", 25, Embeddings::Npy, 2);
    let o = vitrine(&cfg, &["verify", a.to_str().expect("utf8")]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("OK — 'a', 25 items"), "{}", text(&o));

    // A bad bundle: non-zero exit, the offending rows named.
    let bad = w.join("bad");
    bundle(&bad, "bad", 5, Embeddings::Inline, 3);
    replace_in_items(&bad, "bad-3", "bad-2");
    let o = vitrine(&cfg, &["verify", bad.to_str().expect("utf8")]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("line 4, item 'bad-2': duplicate id"),
        "{}",
        text(&o)
    );
    let o = vitrine(&cfg, &["import", bad.to_str().expect("utf8")]);
    assert!(!o.status.success(), "{}", text(&o));

    // Import as an archive, then an images-only folder embedded by the shipped model.
    tar_gz(&a);
    let tgz = w.join("a.tar.gz");
    let o = vitrine(
        &cfg,
        &["import", tgz.to_str().expect("utf8"), "--label", "first"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("stored version v0001 ('first', 25 items), now active"),
        "{}",
        text(&o)
    );
    let imgs = w.join("imgs");
    bundle(&imgs, "img", 6, Embeddings::None, 4);
    let o = vitrine(
        &cfg,
        &["import", imgs.to_str().expect("utf8"), "--no-activate"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("stored version v0002"), "{}", text(&o));
    let o = vitrine(&cfg, &["list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let active: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .filter(|v| v["active"] == true)
        .map(|v| v["id"].as_str().expect("id"))
        .collect();
    assert_eq!(active, ["v0001"]);

    let o = vitrine(&cfg, &["activate", "v0002"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = vitrine(&cfg, &["rollback"]);
    assert!(
        text(&o).contains("rolled back to version v0001"),
        "{}",
        text(&o)
    );
    let o = vitrine(&cfg, &["activate", "v0042"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("no catalog version 'v0042'"),
        "{}",
        text(&o)
    );

    // Only canonical version ids: `./v0002` once reached the same folder under another name.
    for bad in ["./v0002", "v0002/", "../versions/v0002", "v2"] {
        let o = vitrine(&cfg, &["activate", bad]);
        assert!(!o.status.success(), "{bad}: {}", text(&o));
        assert!(
            text(&o).contains("is not a catalog version id"),
            "{bad}: {}",
            text(&o)
        );
    }

    // No verb needs the staff token: on an installed box it lives only in the service's
    // environment file.
    for args in [
        vec!["list"],
        vec!["verify", a.to_str().expect("utf8")],
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
    let o = vitrine(&cfg, &["import", a.to_str().expect("utf8")]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("in use by another vitrine process"),
        "{}",
        text(&o)
    );
    let o = vitrine(&cfg, &["list"]);
    assert!(o.status.success(), "listing only reads: {}", text(&o));
    assert!(text(&o).contains("* v0001"), "{}", text(&o));
    assert!(d.terminate(Duration::from_secs(90)).success());
}
