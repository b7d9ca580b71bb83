//! Parity with the reference: detections and embeddings computed by ONNX Runtime in Python with
//! the documented pre- and post-processing (models/prepare/golden.py, models/CONTRACTS.md) must be
//! reproduced by the daemon's Rust pipeline — boxes within 1 px, scores within 1e-3.

mod common;

use std::path::Path;

use common::root;
use vitrine::capture::replay::read_image;
use vitrine::config::model::ModelSpec;
use vitrine::vision::detector::Detector;
use vitrine::vision::embedder::Embedder;
use vitrine::vision::geometry::NmsParams;
use vitrine::vision::preprocess::ResizeMode;
use vitrine::vision::runtime::SessionOptions;

const BOX_TOL: f64 = 1.0;
const SCORE_TOL: f64 = 1e-3;

fn load(path: &Path) -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .expect("json")
}

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
        let g = load(&file);
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
        let mut det = Detector::build(&spec, &SessionOptions::default(), None, params, resize)
            .expect("detector");
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
                let wb: Vec<f64> = want["bbox"]
                    .as_array()
                    .expect("bbox")
                    .iter()
                    .filter_map(|v| v.as_f64())
                    .collect();
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
    let g = load(&root().join("tests/data/golden/embedder.json"));
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
        let want: Vec<f64> = c["embedding"]
            .as_array()
            .expect("embedding")
            .iter()
            .filter_map(|v| v.as_f64())
            .collect();
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
