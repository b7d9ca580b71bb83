//! `vitrine catalog build` computes embeddings with the daemon's own embedder and preprocessing;
//! they must agree with the demo catalog's committed embeddings (made by the preparation script in
//! Python with the same documented preprocessing), so camera side and catalog side share one model.

mod common;

use std::path::Path;
use std::process::Output;

use common::{assert_success, bin, demo_items, read_json, root};

/// `vitrine catalog build --images IMAGES --meta META --out OUT`.
fn build(images: &Path, meta: &Path, out: &Path) -> Output {
    bin()
        .args(["catalog", "build", "--images"])
        .arg(images)
        .arg("--meta")
        .arg(meta)
        .arg("--out")
        .arg(out)
        .output()
        .expect("run")
}

#[test]
fn catalog_build_reproduces_the_demo_catalogs_embeddings() {
    let demo = root().join("catalog/demo");
    let lines: Vec<serde_json::Value> = demo_items().into_iter().step_by(25).collect();
    assert!(lines.len() >= 8);
    let dir = tempfile::tempdir().expect("tmp");
    let meta: Vec<String> = lines
        .iter()
        .map(|l| {
            let mut m = l.clone();
            m.as_object_mut().map(|o| o.remove("embedding"));
            m.to_string()
        })
        .collect();
    std::fs::write(dir.path().join("meta.jsonl"), meta.join("\n")).expect("write meta");
    let out = dir.path().join("out");
    let res = build(&demo, &dir.path().join("meta.jsonl"), &out);
    assert_success(&res, "catalog build");
    let built: Vec<serde_json::Value> = std::fs::read_to_string(out.join("items.jsonl"))
        .expect("built")
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(built.len(), lines.len());
    let manifest = read_json(&out.join("manifest.json"));
    let demo_manifest = read_json(&demo.join("manifest.json"));
    assert_eq!(
        manifest["embedder"], demo_manifest["embedder"],
        "same embedder fingerprint"
    );
    let mut worst = 1f64;
    let mut colour_diff = 0f64;
    for (b, want) in built.iter().zip(&lines) {
        // The colour part (the last 144 values) is computed the same way on both sides, so it
        // agrees far more closely than the int8 embedder's part.
        let tail = |v: &serde_json::Value| -> Vec<f64> {
            let a = v["embedding"].as_array().expect("e");
            a[a.len() - vitrine::vision::colour::DIM..]
                .iter()
                .map(|x| x.as_f64().unwrap_or(0.0))
                .collect()
        };
        for (x, y) in tail(b).iter().zip(tail(want)) {
            colour_diff = colour_diff.max((x - y).abs());
        }
        assert_eq!(b["id"], want["id"]);
        assert!(out.join(b["image"].as_str().expect("image")).is_file());
        let cos: f64 = b["embedding"]
            .as_array()
            .expect("e")
            .iter()
            .zip(want["embedding"].as_array().expect("e"))
            .map(|(x, y)| x.as_f64().unwrap_or(0.0) * y.as_f64().unwrap_or(0.0))
            .sum();
        worst = worst.min(cos);
    }
    println!(
        "catalog build vs committed demo embeddings: worst cosine {worst:.6}, colour part within {colour_diff:.2e}"
    );
    assert!(worst >= 0.999, "worst cosine {worst}");
    assert!(colour_diff <= 1e-4, "colour part differs by {colour_diff}");
}

#[test]
fn a_catalog_of_another_recipe_is_refused_with_the_reason() {
    // The demo catalog as it was before colour: 256-d CNN embeddings, no recipe in its manifest.
    let demo = root().join("catalog/demo");
    let dir = tempfile::tempdir().expect("tmp");
    let old = dir.path().join("old");
    std::fs::create_dir_all(old.join("images")).expect("mkdir");
    let mut lines = Vec::new();
    for mut v in demo_items().into_iter().take(5) {
        let image = v["image"].as_str().expect("image").to_string();
        std::fs::copy(demo.join(&image), old.join(&image)).expect("copy image");
        let e = v["embedding"].as_array().expect("e")[..256].to_vec();
        v["embedding"] = serde_json::Value::Array(e);
        lines.push(v.to_string());
    }
    std::fs::write(old.join("items.jsonl"), lines.join("\n")).expect("items");
    let mut manifest = read_json(&demo.join("manifest.json"));
    manifest["item_count"] = 5.into();
    manifest["embedder"]["dim"] = 256.into();
    manifest["embedder"]
        .as_object_mut()
        .expect("embedder")
        .remove("recipe");
    std::fs::write(old.join("manifest.json"), manifest.to_string()).expect("manifest");

    let res = bin()
        .args(["catalog", "verify"])
        .arg(&old)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success(), "must be refused: {err}");
    assert!(
        err.contains("recipe 'cnn' (running: 'cnn*0.5916+lab-soft-hist/1*0.8062"),
        "{err}"
    );
    assert!(err.contains("256-d vectors (running: 400)"), "{err}");
    let ok = bin()
        .args(["catalog", "verify"])
        .arg(&demo)
        .output()
        .expect("run");
    assert_success(&ok, "the regenerated demo catalog must verify");
}

#[test]
fn catalog_build_names_every_unreadable_image() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(dir.path().join("img")).expect("mkdir");
    std::fs::write(dir.path().join("img/bad.jpg"), b"not a jpeg").expect("write");
    let meta = r#"{"id":"x1","name":"Bad","group":"top","category":"Shirt","price":1,"image":"bad.jpg"}
{"id":"x2","name":"Missing","group":"top","category":"Shirt","price":1,"image":"missing.jpg"}"#;
    std::fs::write(dir.path().join("meta.jsonl"), meta).expect("write");
    let res = build(
        &dir.path().join("img"),
        &dir.path().join("meta.jsonl"),
        &dir.path().join("out"),
    );
    assert!(!res.status.success());
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        err.contains("item 'x1'") && err.contains("item 'x2'"),
        "{err}"
    );
    assert!(
        !dir.path().join("out/items.jsonl").exists(),
        "nothing written on failure"
    );
}
