//! `vitrine labels …`: maps made from DeepFashion, the off-by-one caught against a real model and
//! against a dataset (with the offending ids), and a taxonomy applied to maps and catalog items.

mod common;

use std::path::Path;

use common::{eval_data, root, utf8, vitrine};

use vitrine::vision::labels::LabelMap;

#[test]
fn from_deepfashion_numbers_categories_from_one_in_list_order() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("deepfashion.pbtxt");
    let cats = eval_data("deepfashion/Anno/list_category_cloth.txt");
    let (ok, _, err) = vitrine(&[
        "labels",
        "from-deepfashion",
        "--categories",
        utf8(&cats),
        "--out",
        utf8(&out),
    ]);
    assert!(ok, "{err}");
    let map = LabelMap::load(&out).expect("a valid TF OD API map");
    assert_eq!(map.len(), 5);
    assert_eq!(map.name(1), Some("Anorak"));
    assert_eq!(map.name(3), Some("Blouse"), "id = category_label");
    // The map made here passes the check against the dataset it came from.
    let (ok, stdout, err) = vitrine(&[
        "labels",
        "check",
        "--labels",
        utf8(&out),
        "--deepfashion",
        utf8(&eval_data("deepfashion")),
    ]);
    assert!(ok, "{stdout}{err}");

    // With the taxonomy: Anorak → Jacket, Romper → Dress, renumbered from 1.
    let (ok, stdout, err) = vitrine(&[
        "labels",
        "from-deepfashion",
        "--categories",
        utf8(&cats),
        "--taxonomy",
        utf8(&eval_data("taxonomy.toml")),
    ]);
    assert!(ok, "{err}");
    let merged = LabelMap::parse_pbtxt(&stdout, Path::new("stdout.pbtxt")).expect("valid");
    let names: Vec<&str> = merged.iter().map(|(_, n)| n).collect();
    assert_eq!(names, ["Jacket", "Blazer", "Blouse", "Dress", "Skirt"]);
}

#[test]
fn a_zero_based_map_is_caught_against_the_dataset_with_its_ids() {
    let dir = tempfile::tempdir().expect("tmp");
    let map = dir.path().join("zero.pbtxt");
    // What `enumerate()` without `start=1` writes: the source project's bug.
    std::fs::write(
        &map,
        "item { id: 0 name: 'Anorak' }\nitem { id: 1 name: 'Blazer' }\nitem { id: 2 name: 'Blouse' }\n\
         item { id: 3 name: 'Romper' }\nitem { id: 4 name: 'Skirt' }\n",
    )
    .expect("write");
    let (ok, out, err) = vitrine(&[
        "labels",
        "check",
        "--labels",
        utf8(&map),
        "--categories",
        utf8(&eval_data("deepfashion/Anno/list_category_cloth.txt")),
    ]);
    assert!(!ok, "must fail");
    assert!(err.contains("failed"), "{err}");
    assert!(out.contains("id 0 ('Anorak') is background"), "{out}");
    assert!(
        out.contains("shifted by -1") && out.contains("(ids 1, 2, 3, 4, 5)"),
        "{out}"
    );
    assert!(
        out.contains("'Blouse' is id 3 in the dataset but 2 in the map (map id 3 is 'Romper')"),
        "{out}"
    );

    let (ok, json, _) = vitrine(&[
        "labels",
        "check",
        "--labels",
        utf8(&map),
        "--deepfashion",
        utf8(&eval_data("deepfashion")),
        "--json",
    ]);
    assert!(!ok);
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    // Only the categories the data uses (Blazer has no image in the fixture).
    let ids: Vec<u64> = v["offending_ids"]
        .as_array()
        .expect("array")
        .iter()
        .map(|o| o["dataset_id"].as_u64().expect("id"))
        .collect();
    assert_eq!(ids, [1, 3, 4, 5]);
}

#[test]
fn map_against_the_real_models_class_count() {
    // The shipped OIDv4 SSD scores 24 columns (background + 23); its map agrees.
    let model = root().join("models/ssd_mobilenetv2_oidv4_int8.toml");
    let real_map = root().join("models/oidv4.pbtxt");
    let (ok, out, err) = vitrine(&[
        "labels",
        "check",
        "--labels",
        utf8(&real_map),
        "--model",
        utf8(&model),
    ]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("the map's 23 classes agree with the model's 23"),
        "{out}"
    );

    // The same names numbered from 0.
    let dir = tempfile::tempdir().expect("tmp");
    let real = LabelMap::load(&real_map).expect("map");
    let zero: String = real
        .iter()
        .map(|(id, n)| format!("item {{ id: {} name: '{n}' }}\n", id - 1))
        .collect();
    let shifted = dir.path().join("zero.pbtxt");
    std::fs::write(&shifted, zero).expect("write");
    let (ok, out, _) = vitrine(&[
        "labels",
        "check",
        "--labels",
        utf8(&shifted),
        "--model",
        utf8(&model),
    ]);
    assert!(!ok);
    assert!(
        out.contains(
            "numbers its 23 classes from 0; the model scores 23 classes after its background column"
        ),
        "{out}"
    );

    // One class short (a category dropped from the map): the detector's own guard, ids named.
    let short: String = real
        .iter()
        .filter(|(id, _)| *id < 23)
        .map(|(id, n)| format!("item {{ id: {id} name: '{n}' }}\n"))
        .collect();
    std::fs::write(&shifted, short).expect("write");
    let (ok, out, _) = vitrine(&[
        "labels",
        "check",
        "--labels",
        utf8(&shifted),
        "--classes",
        "24",
    ]);
    assert!(!ok);
    assert!(
        out.contains("has 22 classes") && out.contains("ids missing: [23]"),
        "{out}"
    );
}

#[test]
fn dataset_names_missing_from_the_map_are_problems() {
    let dir = tempfile::tempdir().expect("tmp");
    let map = dir.path().join("map.txt");
    std::fs::write(&map, "Shirt\nHat\nScarf\n").expect("write");
    let (ok, out, _) = vitrine(&[
        "labels",
        "check",
        "--labels",
        utf8(&map),
        "--gt",
        utf8(&eval_data("ap_gt.jsonl")),
    ]);
    assert!(!ok);
    assert!(
        out.contains(
            "categories 'Coat' (2 boxes), 'Dress' (2 boxes), 'Skirt' (1 boxes) are not in the map"
        ),
        "{out}"
    );
    assert!(out.contains("no box in the dataset: 3 'Scarf'"), "{out}");
}

/// `vitrine labels apply-taxonomy` of the fixture taxonomy to `input` (a `--labels` map or a
/// `--catalog`), written to `out`.
fn apply_taxonomy(kind: &str, input: &Path, out: &Path) -> (bool, String, String) {
    let taxonomy = eval_data("taxonomy.toml");
    vitrine(&[
        "labels",
        "apply-taxonomy",
        "--taxonomy",
        utf8(&taxonomy),
        kind,
        utf8(input),
        "--out",
        utf8(out),
    ])
}

#[test]
fn taxonomy_on_a_label_map_prints_the_id_table() {
    let dir = tempfile::tempdir().expect("tmp");
    let map = dir.path().join("df.pbtxt");
    let (ok, _, err) = vitrine(&[
        "labels",
        "from-deepfashion",
        "--categories",
        utf8(&eval_data("deepfashion/Anno/list_category_cloth.txt")),
        "--out",
        utf8(&map),
    ]);
    assert!(ok, "{err}");
    let out_map = dir.path().join("merged.pbtxt");
    let (ok, out, err) = apply_taxonomy("--labels", &map, &out_map);
    assert!(ok, "{err}");
    assert!(out.contains("     4 -> 4    Romper"), "{out}");
    assert!(out.contains("     5 -> 5    Skirt"), "{out}");
    let merged = LabelMap::load(&out_map).expect("valid");
    assert_eq!(merged.name(1), Some("Jacket"));
    assert_eq!(merged.name(4), Some("Dress"));
}

#[test]
fn taxonomy_on_catalog_items_keeps_unknown_fields() {
    let dir = tempfile::tempdir().expect("tmp");
    let items = dir.path().join("items.jsonl");
    std::fs::write(
        &items,
        "{\"id\":\"a\",\"name\":\"Rain anorak\",\"group\":\"outer\",\"category\":\"Anorak\",\"price\":80,\"image\":\"a.jpg\",\"embedding\":[1,0],\"future_field\":7}\n\
         {\"id\":\"b\",\"name\":\"Playsuit\",\"group\":\"top\",\"category\":\"Romper\",\"price\":30,\"image\":\"b.jpg\",\"embedding\":[0,1]}\n\
         {\"id\":\"c\",\"name\":\"Skirt\",\"group\":\"bottom\",\"category\":\"Skirt\",\"price\":20,\"image\":\"c.jpg\",\"embedding\":[0,1]}\n",
    )
    .expect("write");
    let out = dir.path().join("merged.jsonl");
    let (ok, stdout, err) = apply_taxonomy("--catalog", &items, &out);
    assert!(ok, "{err}");
    assert!(
        stdout.contains("item 'a': category 'Anorak' → 'Jacket'")
            && stdout.contains("item 'a': group 'outer' → 'top'")
            && stdout.contains("item 'b': category 'Romper' → 'Dress'")
            && stdout.contains("3 change(s)"),
        "{stdout}"
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .expect("read")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines[0]["category"], "Jacket");
    assert_eq!(lines[0]["future_field"], 7);
    assert_eq!(lines[0]["embedding"], serde_json::json!([1, 0]));
    assert_eq!(lines[2]["group"], "bottom", "untouched");
}
