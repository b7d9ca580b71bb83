//! `vitrine eval relevance` and `vitrine dataset paste-catalog`, run as the real binary with the
//! shipped models and demo catalog: the report's structure and the sanity of its numbers (no
//! figure is pinned: they move with every model and catalog change).

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{read_json, root, utf8, vitrine};
use serde_json::Value;

/// `vitrine dataset paste-catalog --catalog CAT --out OUT EXTRA…`: success, stdout, stderr.
fn paste_catalog(cat: &Path, out: &Path, extra: &[&str]) -> (bool, String, String) {
    let base = [
        "dataset",
        "paste-catalog",
        "--catalog",
        utf8(cat),
        "--out",
        utf8(out),
    ];
    vitrine(&[&base[..], extra].concat())
}

fn run_json(args: &[&str]) -> Value {
    let (ok, out, err) = vitrine(args);
    assert!(ok, "vitrine {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Checks what holds for any summary: ΔE ≥ 0, the oracle no worse than chance, fidelity ≤ 1
/// (a shown item is one of the group's, so never closer than the closest).
fn check_summary(s: &Value, what: &str) {
    let n = s["garments"].as_u64().unwrap();
    if n == 0 {
        return;
    }
    for k in ["shown_top", "shown_list", "random", "oracle"] {
        assert!(f(&s[k]) >= 0.0, "{what}.{k} = {}", s[k]);
    }
    assert!(
        f(&s["random"]) >= f(&s["oracle"]),
        "{what}: random < oracle: {s}"
    );
    assert!(f(&s["shown_top"]) >= f(&s["oracle"]) - 1e-4, "{what}: {s}");
    for k in ["fidelity_top", "fidelity_list"] {
        if let Some(v) = s[k].as_f64() {
            assert!(v.is_finite() && v <= 1.0 + 1e-6, "{what}.{k} = {v}");
        }
    }
}

/// Checks every garment and the summaries of a report.
fn check_report(r: &Value, top_k: usize) {
    let garments = r["garments"].as_array().unwrap();
    for g in garments {
        let (random, oracle) = (f(&g["random"]), f(&g["oracle"]));
        assert!(random >= oracle && oracle >= 0.0, "{g}");
        let items = g["items"].as_array().unwrap();
        assert!(!items.is_empty() && items.len() <= top_k, "{g}");
        for it in items {
            assert!(f(&it["delta_e"]) >= oracle - 1e-4, "{g}");
        }
        let lab = g["lab"].as_array().unwrap();
        assert!((0.0..=100.0).contains(&f(&lab[0])), "{g}");
    }
    check_summary(&r["overall"], "overall");
    let groups = r["groups"].as_object().unwrap();
    let mut total = 0;
    for (name, s) in groups {
        check_summary(s, name);
        total += s["garments"].as_u64().unwrap();
    }
    assert_eq!(total as usize, garments.len());
    assert_eq!(
        r["overall"]["garments"].as_u64().unwrap() as usize,
        garments.len()
    );
    let (shoppers, bottom) = (
        r["shoppers"].as_u64().unwrap(),
        r["shoppers_with_bottom"].as_u64().unwrap(),
    );
    assert!(bottom <= shoppers);
    if let Some(s) = r["bottom_share"].as_f64() {
        assert!((s - bottom as f64 / shoppers as f64).abs() < 1e-9);
    }
    assert_eq!(r["delta_e"], "CIEDE2000");
}

#[test]
fn footage_report_is_sane_and_the_contact_sheet_has_its_size() {
    let frames = tempfile::tempdir().unwrap();
    for i in 40..44 {
        let name = format!("vtest_{i:04}.jpg");
        std::fs::copy(
            root().join("models/demo/frames").join(&name),
            frames.path().join(&name),
        )
        .unwrap();
    }
    let out = tempfile::tempdir().unwrap();
    let (images, sheet_dir) = (
        frames.path().to_str().unwrap(),
        out.path().to_str().unwrap(),
    );
    let r = run_json(&[
        "eval",
        "relevance",
        "--images",
        images,
        "--every",
        "2",
        "--out",
        sheet_dir,
        "--json",
    ]);
    assert_eq!(r["mode"], "footage");
    assert_eq!(r["scored_images"], 2);
    assert!(r["waist_up"].is_null(), "no labels, no waist-up figure");
    check_report(&r, 6);
    let garments = r["garments"].as_array().unwrap();
    // The demo frames show half a dozen people: some garment must have a list by the 4th frame.
    assert!(!garments.is_empty(), "nothing scored: {r}");

    let sheet = &r["sheet"];
    let path = Path::new(sheet["path"].as_str().unwrap());
    assert!(path.starts_with(out.path()));
    let img = image::open(path).expect("the contact sheet is a PNG");
    let rows = sheet["rows"].as_u64().unwrap() as usize;
    let distinct: BTreeSet<(u64, &str)> = garments
        .iter()
        .map(|g| {
            (
                g["track_id"].as_u64().unwrap(),
                g["group"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows, distinct.len().min(60));
    let want = vitrine::eval::sheet::sheet_size(rows, 6);
    assert_eq!((img.width(), img.height()), want);
    assert_eq!(
        (sheet["width"].as_u64(), sheet["height"].as_u64()),
        (Some(want.0 as u64), Some(want.1 as u64))
    );

    // The table form carries the same headline figures.
    let (ok, text, err) = vitrine(&["eval", "relevance", "--images", images, "--every", "4"]);
    assert!(ok, "{err}");
    assert!(
        text.contains("fid top") && text.contains("CIEDE2000"),
        "{text}"
    );
}

#[test]
fn stills_report_counts_the_labelled_waist_up_photos() {
    let dir = root().join("tests/data/relevance");
    let labels = std::fs::read_to_string(dir.join("labels.jsonl")).unwrap();
    let waist_up = labels
        .lines()
        .filter(|l| serde_json::from_str::<Value>(l).unwrap()["waist_up"] == true)
        .count();
    let photos = vitrine::capture::replay::list_frames(&dir).unwrap().len();
    let r = run_json(&[
        "eval",
        "relevance",
        "--stills",
        "--images",
        dir.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(r["mode"], "stills");
    assert_eq!(r["scored_images"].as_u64().unwrap() as usize, photos);
    check_report(&r, 6);
    let w = &r["waist_up"];
    assert_eq!(w["photos"].as_u64().unwrap() as usize, waist_up);
    let (ok_n, none_n) = (
        w["without_bottom"].as_u64().unwrap(),
        w["no_shopper"].as_u64().unwrap(),
    );
    assert!(ok_n + none_n <= waist_up as u64);
    assert!((f(&w["share"]) - ok_n as f64 / waist_up as f64).abs() < 1e-9);
    // Each photo is its own scene: no track outlives its photo.
    let mut tracks_by_image: std::collections::HashMap<u64, &str> = Default::default();
    for g in r["garments"].as_array().unwrap() {
        let (t, img) = (
            g["track_id"].as_u64().unwrap(),
            g["image"].as_str().unwrap(),
        );
        assert_eq!(
            *tracks_by_image.entry(t).or_insert(img),
            img,
            "track {t} spans photos"
        );
    }
}

#[test]
fn bad_relevance_input_is_refused_with_the_fix() {
    let empty = tempfile::tempdir().unwrap();
    let (ok, _, err) = vitrine(&[
        "eval",
        "relevance",
        "--images",
        empty.path().to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("holds no .jpg"), "{err}");
    let (ok, _, err) = vitrine(&["eval", "relevance", "--background", "255,255"]);
    assert!(!ok && err.contains("three channel values"), "{err}");
    let labels = empty.path().join("labels.jsonl");
    std::fs::write(&labels, "{\"image\": \"a.jpg\"}\n").unwrap();
    std::fs::copy(
        root().join("models/demo/frames/vtest_0000.jpg"),
        empty.path().join("a.jpg"),
    )
    .unwrap();
    let (ok, _, err) = vitrine(&[
        "eval",
        "relevance",
        "--stills",
        "--images",
        empty.path().to_str().unwrap(),
    ]);
    assert!(
        !ok && err.contains("line 1") && err.contains("waist_up"),
        "{err}"
    );
}

/// A 30-item catalog (every 10th demo item, all groups) so the test embeds little.
fn small_catalog(dir: &Path) {
    let demo = root().join("catalog/demo");
    std::fs::create_dir_all(dir.join("images")).unwrap();
    let mut lines = String::new();
    for line in std::fs::read_to_string(demo.join("items.jsonl"))
        .unwrap()
        .lines()
        .step_by(10)
    {
        let v: Value = serde_json::from_str(line).unwrap();
        let img = v["image"].as_str().unwrap();
        std::fs::copy(demo.join(img), dir.join(img)).unwrap();
        lines.push_str(line);
        lines.push('\n');
    }
    std::fs::write(dir.join("items.jsonl"), lines).unwrap();
    // The demo's manifest, for its embedder fingerprint, with this catalog's item count.
    let mut manifest = read_json(&demo.join("manifest.json"));
    manifest["item_count"] = 30.into();
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
}

#[test]
fn pasted_catalog_pairs_are_deterministic_and_retrievable() {
    let work = tempfile::tempdir().unwrap();
    let cat = work.path().join("catalog");
    small_catalog(&cat);
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    for (out, seed) in [(&a, "5"), (&b, "5")] {
        let (ok, _, err) = paste_catalog(&cat, out, &["--seed", seed]);
        assert!(ok, "{err}");
    }
    let pairs = std::fs::read_to_string(a.join("pairs.jsonl")).unwrap();
    assert_eq!(
        pairs,
        std::fs::read_to_string(b.join("pairs.jsonl")).unwrap()
    );
    let lines: Vec<Value> = pairs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 30 * 2, "two queries per item by default");
    for p in &lines {
        let q = p["query"].as_str().unwrap();
        assert_eq!(
            std::fs::read(a.join(q)).unwrap(),
            std::fs::read(b.join(q)).unwrap(),
            "{q} differs between two runs with one seed"
        );
        let img = image::open(a.join(q)).unwrap();
        let bb: Vec<f64> = p["bbox"].as_array().unwrap().iter().map(f).collect();
        assert!(
            bb[0] >= 0.0 && bb[1] >= 0.0 && bb[0] < bb[2] && bb[1] < bb[3],
            "{p}"
        );
        assert!(
            bb[2] <= img.width() as f64 && bb[3] <= img.height() as f64,
            "{p}"
        );
        assert!(p["group"].is_string());
    }
    let r = run_json(&[
        "eval",
        "retrieval",
        "--pairs",
        a.join("pairs.jsonl").to_str().unwrap(),
        "--images",
        a.to_str().unwrap(),
        "--catalog",
        cat.to_str().unwrap(),
        "--k",
        "1,6",
        "--json",
    ]);
    assert_eq!(r["evaluated"], 60);
    // Chance: an item of a group of n is first 1/n of the time.
    let mut size: std::collections::HashMap<&str, f64> = Default::default();
    for p in &lines {
        *size.entry(p["group"].as_str().unwrap()).or_default() += 0.5;
    }
    let chance: f64 = lines
        .iter()
        .map(|p| 1.0 / size[p["group"].as_str().unwrap()])
        .sum::<f64>()
        / lines.len() as f64;
    let (r1, r6) = (f(&r["recall"]["1"]), f(&r["recall"]["6"]));
    assert!(
        r1 > 2.0 * chance,
        "recall@1 {r1} is near chance ({chance}): {r}"
    );
    assert!(r6 >= r1);

    let nothing = work.path().join("nothing");
    let (ok, _, err) = paste_catalog(&cat, &a, &["--backgrounds", utf8(&nothing)]);
    assert!(!ok && err.contains("nothing"), "{err}");
}
