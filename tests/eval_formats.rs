//! Each input format read from small fixtures in its documented layout (tests/data/eval/), and
//! the conversions between them through the `vitrine` binary.

mod common;

use std::path::{Path, PathBuf};

use common::{eval_data, root, utf8, vitrine};

use vitrine::eval::formats::{
    DeepFashionFiles, Role, read_consumer2shop, read_deepfashion, read_deepfashion2, read_jsonl,
    read_pairs_jsonl,
};

#[test]
fn deepfashion_lists_join_into_one_labelled_box_per_image() {
    let files = DeepFashionFiles::locate(&eval_data("deepfashion")).expect("found in Anno/");
    assert!(files.partition.is_some(), "Eval/list_eval_partition.txt");
    assert_eq!(files.root, eval_data("deepfashion"));
    let (ds, cats) = read_deepfashion(&files, None).expect("reads");
    assert_eq!(cats.len(), 5);
    assert_eq!(
        (cats[3].id, cats[3].name.as_str(), cats[3].kind_name()),
        (4, "Romper", "full-body")
    );
    assert_eq!(ds.images.len(), 5);
    let first = &ds.images[0];
    assert_eq!(first.image, "img/Hooded_Anorak/img_00000001.jpg");
    assert_eq!(first.boxes.len(), 1);
    assert_eq!(first.boxes[0].label, "Anorak");
    // Zero-padded "072 079 232 273" in the file.
    assert_eq!(
        <[f32; 4]>::from(first.boxes[0].bbox),
        [72.0, 79.0, 232.0, 273.0]
    );
    assert_eq!(
        ds.images[1].boxes[0].label, "Blouse",
        "category_label 3 is row 3"
    );
    assert!(
        first.width.is_none(),
        "DeepFashion's lists carry no image size"
    );

    let (test, _) = read_deepfashion(&files, Some("test")).expect("split");
    let names: Vec<&str> = test.images.iter().map(|r| r.image.as_str()).collect();
    assert_eq!(
        names,
        [
            "img/Sheer_Pleated-Front_Blouse/img_00000002.jpg",
            "img/Floral_Romper/img_00000003.jpg"
        ]
    );
    let e = read_deepfashion(&files, Some("tset")).expect_err("unknown split");
    assert!(
        e.to_string().contains("its splits: test, train, val"),
        "{e}"
    );
}

#[test]
fn deepfashion_with_a_category_beyond_the_list_names_the_line() {
    let dir = tempfile::tempdir().expect("tmp");
    for f in ["list_bbox.txt", "list_category_cloth.txt"] {
        std::fs::copy(eval_data("deepfashion/Anno").join(f), dir.path().join(f)).expect("copy");
    }
    // Label 6 of a 5-row category list: the kind of file an off-by-one script writes.
    let text = std::fs::read_to_string(eval_data("deepfashion/Anno/list_category_img.txt"))
        .expect("read")
        .replace(
            "img_00000004.jpg                                     5",
            "img_00000004.jpg 6",
        );
    std::fs::write(dir.path().join("list_category_img.txt"), text).expect("write");
    let files = DeepFashionFiles::locate(dir.path()).expect("found");
    let e = read_deepfashion(&files, None).expect_err("must refuse");
    assert!(
        e.to_string()
            .contains("line 6: category_label '6' is not between 1 and 5"),
        "{e}"
    );
}

#[test]
fn deepfashion2_items_become_boxes_in_item_order() {
    let ds = read_deepfashion2(&eval_data("deepfashion2/annos")).expect("reads");
    assert_eq!(ds.images.len(), 2);
    assert_eq!(ds.images[0].image, "000001.jpg");
    let labels: Vec<&str> = ds.images[0]
        .boxes
        .iter()
        .map(|b| b.label.as_str())
        .collect();
    assert_eq!(labels, ["short sleeve top", "trousers"]);
    assert_eq!(
        <[f32; 4]>::from(ds.images[0].boxes[1].bbox),
        [275.0, 571.0, 457.0, 753.0]
    );
    assert_eq!(ds.images[1].boxes[0].label, "long sleeve dress");
}

#[test]
fn consumer_to_shop_pairs_with_their_boxes_and_split() {
    let pairs = read_consumer2shop(
        &eval_data("consumer2shop/list_eval_partition.txt"),
        Some("test"),
        Some(&eval_data("consumer2shop/list_bbox_consumer2shop.txt")),
    )
    .expect("reads");
    assert_eq!(pairs.len(), 2);
    assert_eq!(
        pairs[0].query,
        "img/WOMEN/Dresses/id_00000007/comsumer_01.jpg"
    );
    assert_eq!(pairs[0].item, "id_00000007");
    assert_eq!(
        pairs[0].bbox.map(<[f32; 4]>::from),
        Some([5.0, 6.0, 150.0, 260.0])
    );
    let all = read_consumer2shop(
        &eval_data("consumer2shop/list_eval_partition.txt"),
        None,
        None,
    )
    .expect("reads");
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|p| p.bbox.is_none()));
}

#[test]
fn jsonl_pairs_and_their_errors() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("pairs.jsonl");
    std::fs::write(
        &p,
        "{\"query\": \"q/1.jpg\", \"item\": \"A1\", \"bbox\": [1, 2, 30, 40], \"group\": \"top\"}\n\n{\"query\": \"q/2.jpg\", \"item\": \"B2\"}\n",
    )
    .expect("write");
    let pairs = read_pairs_jsonl(&p).expect("reads");
    assert_eq!(pairs.len(), 2);
    assert_eq!(pairs[0].group.as_deref(), Some("top"));
    assert!(pairs[1].bbox.is_none());
    std::fs::write(&p, "{\"query\": \"q/1.jpg\"}\n").expect("write");
    let e = read_pairs_jsonl(&p).expect_err("no item");
    assert!(
        e.to_string().contains("line 1: missing field `item`"),
        "{e}"
    );
}

#[test]
fn convert_applies_split_and_taxonomy_and_writes_readable_jsonl() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("gt.jsonl");
    let (ok, _, err) = vitrine(&[
        "dataset",
        "convert",
        "--deepfashion",
        eval_data("deepfashion").to_str().expect("utf8"),
        "--split",
        "test",
        "--taxonomy",
        eval_data("taxonomy.toml").to_str().expect("utf8"),
        "--out",
        out.to_str().expect("utf8"),
    ]);
    assert!(ok, "{err}");
    // The taxonomy merges Anorak and Bomber, which the test split does not have: a warning.
    assert!(
        err.contains("merges categories the data does not have"),
        "{err}"
    );
    let ds = read_jsonl(&out, Role::GroundTruth).expect("reads back");
    let labels: Vec<&str> = ds
        .images
        .iter()
        .map(|r| r.boxes[0].label.as_str())
        .collect();
    assert_eq!(labels, ["Blouse", "Dress"], "Romper merged into Dress");
}

#[test]
fn run_detector_scores_and_saves_predictions_that_read_back() {
    // The real detector on a plain grey frame. Kept down to the default 0.01 it "finds" a dozen
    // faint things even there, so the threshold is raised: nothing above 0.5 is in a grey frame,
    // and the Person box of the ground truth is missed (AP 0, not NaN).
    let dir = tempfile::tempdir().expect("tmp");
    let img = dir.path().join("grey.png");
    image::RgbImage::from_pixel(160, 120, image::Rgb([128, 128, 128]))
        .save(&img)
        .expect("save");
    let cfg = root().join("vitrine.toml");
    let (ok, out, err) = vitrine(&[
        "eval",
        "detections",
        "--gt",
        write_gt(dir.path(), "grey.png").to_str().expect("utf8"),
        "--run-detector",
        "--config",
        cfg.to_str().expect("utf8"),
        "--min-score",
        "0.5",
        "--save-pred",
        dir.path().join("pred.jsonl").to_str().expect("utf8"),
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["per_category"]["Person"]["ap"], 0.0, "{v}");
    assert_eq!(v["per_category"]["Person"]["num_det"], 0, "{v}");
    let pred = read_jsonl(&dir.path().join("pred.jsonl"), Role::Predictions).expect("reads");
    assert_eq!(pred.images[0].image, "grey.png");
    assert_eq!(
        (pred.images[0].width, pred.images[0].height),
        (Some(160), Some(120))
    );
}

fn write_gt(dir: &Path, image: &str) -> PathBuf {
    let p = dir.join("gt.jsonl");
    std::fs::write(
        &p,
        format!(
            "{{\"image\": \"{image}\", \"width\": 160, \"height\": 120, \"boxes\": [{{\"label\": \"Person\", \"bbox\": [40, 10, 100, 115]}}]}}\n"
        ),
    )
    .expect("gt");
    p
}

#[test]
fn vitrine_detect_output_is_a_prediction_file() {
    // `vitrine detect` prints the records `eval detections --pred` reads; its image paths (as
    // given on the command line) align with the ground truth's names by their common suffix.
    let root = root();
    let still = root.join("models/demo/stills/astronaut.png");
    let (ok, out, err) = vitrine(&[
        "detect",
        "--config",
        utf8(&root.join("vitrine.toml")),
        utf8(&still),
    ]);
    assert!(ok, "{err}");
    let dir = tempfile::tempdir().expect("tmp");
    let pred = dir.path().join("pred.jsonl");
    std::fs::write(&pred, &out).expect("write");
    let gt = dir.path().join("gt.jsonl");
    std::fs::write(
        &gt,
        "{\"image\": \"stills/astronaut.png\", \"width\": 512, \"height\": 512, \"boxes\": [{\"label\": \"Person\", \"bbox\": [18, 14, 365, 512]}]}\n",
    )
    .expect("gt");
    let (ok, out, err) = vitrine(&[
        "eval",
        "detections",
        "--gt",
        utf8(&gt),
        "--pred",
        utf8(&pred),
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["per_category"]["Person"]["ap"], 1.0, "{v}");
}

#[test]
fn deepfashion_images_are_found_from_the_benchmark_folder_or_its_anno_folder() {
    let dir = tempfile::tempdir().expect("tmp");
    let anno = dir.path().join("Anno");
    std::fs::create_dir_all(&anno).expect("mkdir");
    std::fs::create_dir_all(dir.path().join("img")).expect("mkdir");
    for f in [
        "list_bbox.txt",
        "list_category_img.txt",
        "list_category_cloth.txt",
    ] {
        std::fs::copy(eval_data("deepfashion/Anno").join(f), anno.join(f)).expect("copy");
    }
    for given in [dir.path().to_path_buf(), anno.clone()] {
        let files = DeepFashionFiles::locate(&given).expect("found");
        assert_eq!(files.root, dir.path(), "given {}", given.display());
        assert!(files.partition.is_none());
    }
    let e = DeepFashionFiles::locate(&dir.path().join("img")).expect_err("no lists there");
    assert!(e.to_string().contains("has no list_bbox.txt"), "{e}");
}
