//! Parity with the reference: detections and embeddings computed by ONNX Runtime in Python with
//! the documented pre- and post-processing (models/prepare/golden.py, models/CONTRACTS.md) must be
//! reproduced by the daemon's Rust pipeline — boxes within 1 px, scores within 1e-3; poses
//! (models/prepare/pose_golden.py) to the tolerances of models/CONTRACTS.md section 8.

mod common;

use common::{floats, read_json, root};
use vitrine::capture::replay::read_image;
use vitrine::config::model::ModelSpec;
use vitrine::config::{DetectorSettings, RuntimeSettings};
use vitrine::vision::detector::Detector;
use vitrine::vision::embedder::Embedder;
use vitrine::vision::geometry::{NmsParams, PixelBox};
use vitrine::vision::pose::PoseEstimator;
use vitrine::vision::preprocess::ResizeMode;
use vitrine::vision::runtime::SessionOptions;

const BOX_TOL: f64 = 1.0;
const SCORE_TOL: f64 = 1e-3;

fn golden_files(prefix: &str) -> Vec<std::path::PathBuf> {
    let dir = root().join("tests/data/golden");
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".json"))
        })
        .collect();
    v.sort();
    assert!(
        !v.is_empty(),
        "no {prefix}*.json goldens in {}",
        dir.display()
    );
    v
}

#[test]
fn detections_match_the_python_reference() {
    for file in golden_files("detector_") {
        let g = read_json(&file);
        let spec =
            ModelSpec::detector(&root().join(g["model_config"].as_str().expect("model_config")))
                .expect("model spec");
        let p = &g["params"];
        let params = NmsParams {
            score_threshold: p["score_threshold"].as_f64().expect("score") as f32,
            iou_threshold: p["iou_threshold"].as_f64().expect("iou") as f32,
            max_detections: p["max_detections"].as_u64().expect("max") as usize,
        };
        let resize = match p["resize"].as_str() {
            Some("letterbox") => ResizeMode::Letterbox,
            _ => ResizeMode::Stretch,
        };
        let settings = DetectorSettings {
            spec,
            nms: params,
            resize,
        };
        let runtime = RuntimeSettings {
            library: None,
            session: SessionOptions::default(),
        };
        let mut det = Detector::build(&settings, &runtime).expect("detector");
        let (mut compared, mut worst_px, mut worst_score) = (0, 0f64, 0f64);
        // One preparer for all frames, so later frames are made in the buffers of earlier ones.
        let mut preparer = det.preparer();
        for img in g["images"].as_array().expect("images") {
            let path = root().join(img["image"].as_str().expect("image"));
            let frame = read_image(&path).expect("decode");
            assert_eq!(
                (frame.width() as u64, frame.height() as u64),
                (
                    img["width"].as_u64().unwrap_or(0),
                    img["height"].as_u64().unwrap_or(0)
                )
            );
            let ours = det.detect(&frame).expect("detect");
            // The daemon's path: the input made ahead on the capture thread, by a preparer that
            // owns (and recycles) its own buffers, gives the very same detections.
            let input = preparer.prepare(&frame).expect("prepare");
            let (ahead, _) = det.detect_prepared(&input).expect("detect prepared");
            assert_eq!(ahead, ours, "{}: prepared input differs", path.display());
            let mut used = vec![false; ours.len()];
            let near_threshold =
                |s: f64| (s - params.score_threshold as f64).abs() <= 2.0 * SCORE_TOL;
            for want in img["boxes"].as_array().expect("boxes") {
                let wb = floats(&want["bbox"]);
                let ws = want["score"].as_f64().expect("score");
                let found = ours.iter().enumerate().find(|(i, d)| {
                    let b: [f32; 4] = d.bbox.into();
                    !used[*i]
                        && d.label == want["label"].as_str().unwrap_or_default()
                        && b.iter()
                            .zip(&wb)
                            .all(|(a, e)| (*a as f64 - e).abs() <= BOX_TOL)
                });
                match found {
                    Some((i, d)) => {
                        used[i] = true;
                        let b: [f32; 4] = d.bbox.into();
                        worst_px = b
                            .iter()
                            .zip(&wb)
                            .map(|(a, e)| (*a as f64 - e).abs())
                            .fold(worst_px, f64::max);
                        worst_score = worst_score.max((d.score as f64 - ws).abs());
                        assert!(
                            (d.score as f64 - ws).abs() <= SCORE_TOL,
                            "{}: {} score {} vs reference {ws}",
                            path.display(),
                            d.label,
                            d.score
                        );
                        compared += 1;
                    }
                    // A box the reference scored at the threshold may fall either side of it here.
                    None if near_threshold(ws) => {}
                    None => panic!(
                        "{} ({}): reference box {want} not found among ours: {ours:?}",
                        path.display(),
                        file.display()
                    ),
                }
            }
            for (d, _) in ours.iter().zip(&used).filter(|(_, u)| !**u) {
                assert!(
                    near_threshold(d.score as f64),
                    "{}: extra detection {d:?} not in the reference",
                    path.display()
                );
            }
        }
        println!(
            "{}: {compared} boxes matched, worst box error {worst_px:.3} px, worst score error {worst_score:.2e}",
            file.display()
        );
        assert!(compared > 0, "{} compared nothing", file.display());
    }
}

#[test]
fn embeddings_match_the_python_reference() {
    let g = read_json(&root().join("tests/data/golden/embedder.json"));
    let spec = ModelSpec::embedder(&root().join(g["model_config"].as_str().expect("model_config")))
        .expect("spec");
    let mut emb = Embedder::build(&spec, &SessionOptions::default(), None).expect("embedder");
    let mut worst = 1f64;
    for c in g["crops"].as_array().expect("crops") {
        let frame = read_image(&root().join(c["image"].as_str().expect("image"))).expect("decode");
        let b: Vec<u32> = c["bbox"]
            .as_array()
            .expect("bbox")
            .iter()
            .filter_map(|v| v.as_u64().map(|v| v as u32))
            .collect();
        let ours = emb
            .embed(&frame, &[(b[0], b[1], b[2] - b[0], b[3] - b[1])])
            .expect("embed")
            .remove(0);
        let want = floats(&c["embedding"]);
        assert_eq!(ours.len(), want.len());
        let cos: f64 = ours.iter().zip(&want).map(|(a, b)| *a as f64 * b).sum();
        worst = worst.min(cos);
        assert!(cos >= 0.999, "crop {c:?}: cosine {cos} to the reference");
    }
    println!("embedder parity: worst cosine {worst:.6}");
}

/// Batching must not change a vector: all crops in one run equal each crop on its own.
#[test]
fn a_batch_gives_the_same_vectors_as_one_by_one() {
    let spec =
        ModelSpec::embedder(&root().join("models/efficientnet_lite0_int8.toml")).expect("spec");
    let mut emb = Embedder::build(&spec, &SessionOptions::default(), None).expect("embedder");
    let frame = read_image(&root().join("models/demo/frames/vtest_0000.jpg")).expect("frame");
    let crops = [
        (170, 350, 80, 90),
        (175, 440, 70, 90),
        (580, 155, 35, 40),
        (640, 300, 36, 50),
        (0, 0, 768, 576),
    ];
    let batch = emb.embed(&frame, &crops).expect("batch");
    for (c, b) in crops.iter().zip(&batch) {
        let single = emb.embed(&frame, &[*c]).expect("single").remove(0);
        let diff = single
            .iter()
            .zip(b)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            diff <= 1e-5,
            "crop {c:?}: batch differs from single by {diff}"
        );
    }
}

/// Pose parity (models/CONTRACTS.md section 8, tests/data/golden/README.md): the crop of each
/// person box exactly, keypoints within 0.05 px, visibility, presence and confidence within 1e-3,
/// the mask's 32×32 area means within 1e-3, and its pixel counts within a few pixels (a
/// probability within 1e-3 of the threshold may fall either side). All people of a frame go in
/// one batch, as in the daemon; the reference ran them one by one.
#[test]
fn poses_match_the_python_reference() {
    const PX_TOL: f64 = 0.05;
    const PROB_TOL: f64 = 1e-3;
    const COUNT_TOL: i64 = 8;
    let g = read_json(&root().join("tests/data/golden/pose_full.json"));
    let spec = ModelSpec::pose(&root().join(g["model_config"].as_str().expect("model_config")))
        .expect("spec");
    let mut pose = PoseEstimator::build(&spec, &SessionOptions::default(), None).expect("pose");
    let threshold = g["mask_threshold"].as_f64().expect("mask_threshold") as f32;
    let (mut people, mut worst_px, mut worst_p, mut worst_cell, mut worst_count) =
        (0, 0f64, 0f64, 0f64, 0i64);
    let f = |v: &serde_json::Value| v.as_f64().expect("number");
    for img in g["images"].as_array().expect("images") {
        let path = root().join(img["image"].as_str().expect("image"));
        let frame = read_image(&path).expect("decode");
        let persons = img["persons"].as_array().expect("persons");
        let boxes: Vec<PixelBox> = persons
            .iter()
            .map(|p| {
                let b: Vec<f32> = p["box"]
                    .as_array()
                    .expect("box")
                    .iter()
                    .map(|v| f(v) as f32)
                    .collect();
                PixelBox::from([b[0], b[1], b[2], b[3]])
            })
            .collect();
        let ours = pose.estimate(&frame, &boxes).expect("estimate");
        for (p, want) in ours.iter().zip(persons) {
            let at = format!("{} box {}", path.display(), want["box"]);
            let c = &want["crop"];
            assert_eq!(
                (p.crop.x0, p.crop.y0, i64::from(p.crop.side)),
                (
                    c["x0"].as_i64().unwrap_or(i64::MIN),
                    c["y0"].as_i64().unwrap_or(i64::MIN),
                    c["s"].as_i64().unwrap_or(i64::MIN)
                ),
                "{at}: crop"
            );
            let mut prob = |ours: f32, want: f64, what: &str| {
                let d = (f64::from(ours) - want).abs();
                worst_p = worst_p.max(d);
                assert!(d <= PROB_TOL, "{at}: {what} {ours} vs reference {want}");
            };
            prob(p.confidence, f(&want["confidence"]), "confidence");
            let kps = want["keypoints"].as_array().expect("keypoints");
            assert_eq!(p.keypoints.len(), kps.len(), "{at}: keypoint count");
            for (k, (ours, w)) in p.keypoints.iter().zip(kps).enumerate() {
                let w: Vec<f64> = w.as_array().expect("keypoint").iter().map(f).collect();
                let d = (f64::from(ours.x) - w[0])
                    .abs()
                    .max((f64::from(ours.y) - w[1]).abs());
                worst_px = worst_px.max(d);
                assert!(
                    d <= PX_TOL,
                    "{at}: keypoint {k} at ({}, {}) vs {w:?}",
                    ours.x,
                    ours.y
                );
                prob(ours.visibility, w[2], &format!("keypoint {k} visibility"));
                prob(ours.presence, w[3], &format!("keypoint {k} presence"));
            }
            let (grid, gw, gh) = p.mask.grid();
            let (gw, gh) = (gw as usize, gh as usize);
            let wgrid = want["mask"]["grid32"].as_array().expect("grid32");
            let (cw, ch) = (gw / 32, gh / 32);
            for (r, row) in wgrid.iter().enumerate() {
                for (c, w) in row.as_array().expect("row").iter().enumerate() {
                    let mut sum = 0f64;
                    for y in r * ch..(r + 1) * ch {
                        for x in c * cw..(c + 1) * cw {
                            sum += f64::from(grid[y * gw + x]);
                        }
                    }
                    let d = (sum / (cw * ch) as f64 - f(w)).abs();
                    worst_cell = worst_cell.max(d);
                    assert!(d <= PROB_TOL, "{at}: mask cell ({r}, {c}) off by {d}");
                }
            }
            let mut count = |ours: usize, want: &serde_json::Value, what: &str| {
                let d = (ours as i64 - want.as_i64().expect("count")).abs();
                worst_count = worst_count.max(d);
                assert!(d <= COUNT_TOL, "{at}: {what} {ours} vs reference {want}");
            };
            count(
                grid.iter().filter(|&&v| v > 0.5).count(),
                &want["mask"]["count_gt_0_5"],
                "mask count > 0.5",
            );
            let r: Vec<u32> = want["box_mask"]["rect"]
                .as_array()
                .expect("rect")
                .iter()
                .filter_map(|v| v.as_u64().map(|v| v as u32))
                .collect();
            let m = p.mask.crop_mask((r[0], r[1], r[2], r[3]), threshold);
            count(
                m.data.iter().filter(|&&v| v == 255).count(),
                &want["box_mask"]["count"],
                "shopper pixels in the box",
            );
            people += 1;
        }
        assert_eq!(ours.len(), persons.len());
    }
    println!(
        "pose parity: {people} people, worst keypoint {worst_px:.4} px, worst probability {worst_p:.2e}, \
         worst mask cell {worst_cell:.2e}, worst mask count {worst_count} px"
    );
    assert!(people > 0);
}
