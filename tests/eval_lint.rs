//! `vitrine dataset lint` finds each planted problem, reports it against the right file, and the
//! cleaned set repairs or drops exactly what it should. Images are made here (block patterns, so
//! every image has its own perceptual hash); the person check runs the shipped detector on the
//! demo stills.

mod common;

use std::path::Path;

use common::{bin, root};

use image::{Rgb, RgbImage};
use vitrine::eval::formats::{BoxRecord, Dataset, ImageRecord, Role, read_jsonl};
use vitrine::eval::lint::{LintOptions, LintReport, lint};
use vitrine::eval::models::DetectorSetup;
use vitrine::vision::geometry::PixelBox;

const W: u32 = 160;
const H: u32 = 120;

/// A 160×120 image of 16×12 grey blocks from a seeded generator: distinct seeds give unrelated
/// difference hashes.
fn pattern(seed: u64) -> RgbImage {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut levels = [0u8; 16 * 12];
    for l in levels.iter_mut() {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *l = (state >> 56) as u8;
    }
    RgbImage::from_fn(W, H, |x, y| {
        let v = levels[((y / 10) * 16 + x / 10) as usize];
        Rgb([v, v / 2 + 40, 255 - v])
    })
}

fn b(label: &str, c: [f32; 4]) -> BoxRecord {
    BoxRecord {
        label: label.into(),
        score: None,
        bbox: PixelBox::from(c),
    }
}

fn rec(image: &str, size: Option<(u32, u32)>, boxes: Vec<BoxRecord>) -> ImageRecord {
    ImageRecord {
        image: image.into(),
        width: size.map(|s| s.0),
        height: size.map(|s| s.1),
        boxes,
    }
}

const INSIDE: [f32; 4] = [20.0, 10.0, 120.0, 110.0];

/// The planted dataset: twelve clean Dress images and one problem each in the rest.
fn planted(dir: &Path) -> Dataset {
    let mut images = Vec::new();
    for i in 0..12 {
        let name = format!("ok_{i:02}.png");
        pattern(i).save(dir.join(&name)).expect("save");
        images.push(rec(&name, Some((W, H)), vec![b("Dress", INSIDE)]));
    }
    // Each a pattern image of its own, listed with its boxes as drawn on an image of `size`.
    let mut add = |name: &str, seed: u64, size: Option<(u32, u32)>, boxes: Vec<BoxRecord>| {
        pattern(seed).save(dir.join(name)).expect("save");
        images.push(rec(name, size, boxes));
    };
    let full = Some((W, H));
    let dress = |c| vec![b("Dress", c)];
    add(
        "past_edge.png",
        100,
        full,
        dress([100.0, 20.0, 200.0, 100.0]),
    );
    add("outside.png", 101, full, dress([170.0, 10.0, 190.0, 50.0]));
    let zero = [b("Dress", [10.0, 10.0, 10.0, 50.0]), b("Dress", INSIDE)];
    add("zero.png", 102, full, zero.into());
    let inverted = [b("Dress", [50.0, 50.0, 10.0, 10.0]), b("Dress", INSIDE)];
    add("inverted.png", 103, full, inverted.into());
    // Boxes drawn on a 320×240 copy of a 160×120 file.
    add(
        "resized.png",
        104,
        Some((320, 240)),
        dress([40.0, 40.0, 280.0, 200.0]),
    );
    // Normalised coordinates stored as if they were pixels.
    add("normalised.png", 105, None, dress([0.1, 0.2, 0.5, 0.9]));
    add("scarf.png", 106, full, vec![b("Scarf", INSIDE)]);
    add("typo.png", 107, full, vec![b("Dres", INSIDE)]);
    // Byte-identical copy of ok_00, and a brighter JPEG re-encoding of ok_01.
    std::fs::copy(dir.join("ok_00.png"), dir.join("copy_of_ok_00.png")).expect("copy");
    images.push(rec("copy_of_ok_00.png", full, dress(INSIDE)));
    let mut brighter = pattern(1);
    for p in brighter.pixels_mut() {
        p.0 = p.0.map(|v| v.saturating_add(6));
    }
    brighter
        .save_with_format(dir.join("ok_01_again.jpg"), image::ImageFormat::Jpeg)
        .expect("jpeg");
    images.push(rec("ok_01_again.jpg", full, dress(INSIDE)));
    std::fs::write(dir.join("corrupt.jpg"), b"this is not a jpeg").expect("write");
    images.push(rec("corrupt.jpg", full, dress(INSIDE)));
    images.push(rec("missing.png", full, dress(INSIDE)));
    Dataset {
        images,
        source: dir.join("gt.jsonl"),
    }
}

/// Options that check the images in `dir` on two threads.
fn with_images(dir: &Path) -> LintOptions {
    LintOptions {
        images: Some(dir.to_path_buf()),
        threads: 2,
        ..Default::default()
    }
}

fn images_of(r: &LintReport, check: &str) -> Vec<String> {
    r.checks
        .get(check)
        .map(|c| c.findings.iter().map(|f| f.image.clone()).collect())
        .unwrap_or_default()
}

#[test]
fn every_planted_problem_is_found_against_its_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let ds = planted(dir.path());
    let opts = LintOptions {
        categories: Some(vec!["Dress".into(), "Scarf".into()]),
        ..with_images(dir.path())
    };
    let r = lint(&ds, &opts, None).expect("lints");
    assert_eq!(images_of(&r, "missing_image"), ["missing.png"]);
    assert_eq!(images_of(&r, "unreadable_image"), ["corrupt.jpg"]);
    assert_eq!(
        images_of(&r, "out_of_image"),
        ["past_edge.png", "outside.png"]
    );
    assert_eq!(images_of(&r, "zero_area"), ["zero.png"]);
    assert_eq!(images_of(&r, "invalid_box"), ["inverted.png"]);
    assert_eq!(images_of(&r, "size_mismatch"), ["resized.png"]);
    assert_eq!(images_of(&r, "normalised_boxes"), ["normalised.png"]);
    assert_eq!(images_of(&r, "exact_duplicate"), ["copy_of_ok_00.png"]);
    assert_eq!(images_of(&r, "near_duplicate"), ["ok_01_again.jpg"]);
    assert!(
        r.checks["near_duplicate"].findings[0]
            .detail
            .contains("looks like ok_01.png"),
        "{:?}",
        r.checks["near_duplicate"]
    );
    assert_eq!(images_of(&r, "unknown_category"), ["typo.png"]);
    let rare: Vec<&str> = r.checks["rare_category"]
        .findings
        .iter()
        .filter_map(|f| f.label.as_deref())
        .collect();
    assert_eq!(rare, ["Dres", "Scarf"]);
    assert_eq!(r.categories[0], ("Dress".to_string(), 24));
    assert!((r.imbalance - 24.0).abs() < 1e-9);
    // Nothing else is flagged: the twelve clean images and the planted ones' good boxes pass.
    assert_eq!(r.total_findings(), 13, "{}", r.render(50));
}

#[test]
fn the_cleaned_set_repairs_what_it_can_and_drops_the_rest() {
    let dir = tempfile::tempdir().expect("tmp");
    let ds = planted(dir.path());
    let r = lint(&ds, &with_images(dir.path()), None).expect("lints");
    let kept: Vec<&str> = r.cleaned.iter().map(|i| i.image.as_str()).collect();
    for gone in [
        "missing.png",
        "corrupt.jpg",
        "outside.png",
        "copy_of_ok_00.png",
        "ok_01_again.jpg",
    ] {
        assert!(!kept.contains(&gone), "{gone} must be dropped: {kept:?}");
    }
    assert_eq!(kept.len(), 12 + 7);
    let get = |name: &str| {
        r.cleaned
            .iter()
            .find(|i| i.image == name)
            .expect("kept")
            .clone()
    };
    assert_eq!(
        <[f32; 4]>::from(get("past_edge.png").boxes[0].bbox),
        [100.0, 20.0, 160.0, 100.0],
        "clamped to the image"
    );
    let resized = get("resized.png");
    assert_eq!((resized.width, resized.height), (Some(W), Some(H)));
    assert_eq!(
        <[f32; 4]>::from(resized.boxes[0].bbox),
        [20.0, 20.0, 140.0, 100.0],
        "rescaled to the file's size"
    );
    let norm = <[f32; 4]>::from(get("normalised.png").boxes[0].bbox);
    let want = [16.0, 24.0, 80.0, 108.0];
    assert!(
        norm.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-3),
        "{norm:?}"
    );
    assert_eq!(get("zero.png").boxes.len(), 1);
    assert_eq!(get("inverted.png").boxes.len(), 1);
    let c = &r.clean;
    assert_eq!((c.images_kept, c.images_dropped), (19, 5));
    assert_eq!((c.boxes_clamped, c.boxes_rescaled), (1, 2));
    assert_eq!(c.boxes_kept + c.boxes_dropped, ds.box_count());
}

#[test]
fn boxes_drawn_on_larger_copies_give_the_dataset_hint() {
    // Ten images whose boxes were drawn on 1.5× copies and carry no declared size: only the
    // overshoot gives them away, image by image and as a pattern.
    let dir = tempfile::tempdir().expect("tmp");
    let images = (0..10u64)
        .map(|i| {
            let name = format!("big_{i}.png");
            pattern(200 + i).save(dir.path().join(&name)).expect("save");
            let x0 = 10.0 + i as f32;
            rec(
                &name,
                None,
                vec![b(
                    "Dress",
                    [x0 * 1.5, 15.0, (x0 + 110.0) * 1.5, 115.0 * 1.5],
                )],
            )
        })
        .collect();
    let ds = Dataset {
        images,
        source: "big".into(),
    };
    let r = lint(&ds, &with_images(dir.path()), None).expect("lints");
    assert_eq!(r.checks["out_of_image"].count, 10);
    assert_eq!(r.hints.len(), 1, "{:?}", r.hints);
    assert!(
        r.hints[0].contains("10 of 10 images") && r.hints[0].contains("drawn on larger copies"),
        "{}",
        r.hints[0]
    );
}

#[test]
fn without_images_only_the_annotation_checks_run() {
    let ds = Dataset {
        images: vec![
            rec(
                "a.jpg",
                Some((W, H)),
                vec![b("Dress", [10.0, 10.0, 10.0, 20.0])],
            ),
            rec("b.jpg", None, vec![b("Dress", [10.0, 10.0, 500.0, 20.0])]),
        ],
        source: "gt".into(),
    };
    let r = lint(&ds, &LintOptions::default(), None).expect("lints");
    assert_eq!(images_of(&r, "zero_area"), ["a.jpg"]);
    assert!(
        !r.checks.contains_key("out_of_image"),
        "b.jpg has no known size"
    );
    assert!(
        r.skipped.iter().any(|s| s.contains("no images folder")),
        "{:?}",
        r.skipped
    );
    assert!(
        r.skipped
            .iter()
            .any(|s| s.contains("1 image(s) without a known size"))
    );
}

#[test]
fn the_person_detector_flags_empty_and_crowded_images() {
    // Real photos from models/demo: the astronaut (one person), a vtest frame (a street with
    // several pedestrians), and a plain grey image (nobody). Person counts use the config's
    // detector and its score threshold, as `serve` would see them.
    let dir = tempfile::tempdir().expect("tmp");
    for (src, name) in [
        ("models/demo/stills/astronaut.png", "astronaut.png"),
        ("models/demo/frames/vtest_0000.jpg", "street.jpg"),
    ] {
        std::fs::copy(root().join(src), dir.path().join(name)).expect("demo image");
    }
    RgbImage::from_pixel(300, 300, Rgb([128, 128, 128]))
        .save(dir.path().join("grey.png"))
        .expect("save");
    let ds = Dataset {
        images: ["astronaut.png", "street.jpg", "grey.png"]
            .iter()
            .map(|n| rec(n, None, vec![b("Dress", [1.0, 1.0, 50.0, 50.0])]))
            .collect(),
        source: "gt".into(),
    };
    let setup =
        DetectorSetup::from_config(&root().join("vitrine.toml"), None, None).expect("config");
    let mut det = setup.build().expect("detector");
    let persons = setup.person_labels().to_vec();
    let mut count = |img: &RgbImage| {
        Ok(det
            .detect(img)?
            .iter()
            .filter(|d| persons.contains(&d.label))
            .count())
    };
    let r = lint(&ds, &with_images(dir.path()), Some(&mut count)).expect("lints");
    assert_eq!(images_of(&r, "no_person"), ["grey.png"]);
    assert_eq!(images_of(&r, "several_people"), ["street.jpg"]);
    let kept: Vec<&str> = r.cleaned.iter().map(|i| i.image.as_str()).collect();
    assert_eq!(kept, ["astronaut.png"]);
}

#[test]
fn cli_reports_writes_the_clean_set_and_fails_when_strict() {
    let dir = tempfile::tempdir().expect("tmp");
    let ds = planted(dir.path());
    let gt = dir.path().join("gt.jsonl");
    vitrine::eval::formats::write_jsonl_file(&ds.images, &gt).expect("gt");
    let clean = dir.path().join("clean.jsonl");
    let run = |extra: &[&str]| {
        let (gt, clean) = (gt.to_str().expect("utf8"), clean.to_str().expect("utf8"));
        bin()
            .args(["dataset", "lint", "--gt", gt, "--write-clean", clean])
            .args(extra)
            .output()
            .expect("runs")
    };
    let out = run(&["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["images"], 24);
    assert_eq!(v["checks"]["near_duplicate"]["count"], 1);
    assert_eq!(
        v["checks"]["size_mismatch"]["findings"][0]["image"],
        "resized.png"
    );
    assert_eq!(v["clean"]["images_kept"], 19);
    let cleaned = read_jsonl(&clean, Role::GroundTruth).expect("clean set reads back");
    assert_eq!(cleaned.images.len(), 19);

    let out = run(&["--show", "1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("out_of_image (boxes past the image's edges): 2")
            && text.contains("… and 1 more"),
        "{text}"
    );
    let out = run(&["--strict"]);
    assert!(!out.status.success(), "--strict fails on findings");
    assert!(String::from_utf8_lossy(&out.stderr).contains("finding(s) (--strict)"));
}
