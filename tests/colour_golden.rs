//! Parity with the Python reference: colour descriptors computed by `models/prepare/colour_ref.py`
//! (written to tests/data/golden/colour.json by `models/prepare/golden.py colour`) for catalog
//! photos (non-background pixels) and garment crops (with a mask, and the central half without
//! one) must be reproduced by `vision::colour` within 1e-4, and the fusion of a fixed embedding
//! by `vision::fusion` likewise.

mod common;

use common::{floats, read_json, root};
use vitrine::capture::replay::read_image;
use vitrine::vision::colour::{self, Selection};
use vitrine::vision::fusion::RawSimilarity;
use vitrine::vision::garment::CropMask;

const TOL: f64 = 1e-4;

fn golden() -> serde_json::Value {
    read_json(&root().join("tests/data/golden/colour.json"))
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn mask_from_runs(w: u32, h: u32, runs: &serde_json::Value) -> CropMask {
    let mut data = vec![0u8; (w * h) as usize];
    for (y, row) in runs.as_array().expect("rows").iter().enumerate() {
        for run in row.as_array().expect("runs") {
            let (a, b) = (run[0].as_u64().expect("a"), run[1].as_u64().expect("b"));
            for x in a..b {
                data[y * w as usize + x as usize] = 255;
            }
        }
    }
    CropMask {
        width: w,
        height: h,
        data,
    }
}

#[test]
fn descriptors_match_the_python_reference() {
    let g = golden();
    assert_eq!(g["descriptor"], colour::DESCRIPTOR);
    assert_eq!(g["dim"].as_u64(), Some(colour::DIM as u64));
    let cases = g["cases"].as_array().expect("cases");
    assert!(cases.len() >= 10);
    for case in cases {
        let name = format!("{} ({})", case["image"], case["selection"]);
        let img = read_image(&root().join(case["image"].as_str().expect("image"))).expect("image");
        let (rect, mask) = match case["selection"].as_str().expect("selection") {
            "background" => ((0, 0, img.width(), img.height()), None),
            sel => {
                let r: Vec<u32> = case["rect"]
                    .as_array()
                    .expect("rect")
                    .iter()
                    .map(|v| v.as_u64().expect("int") as u32)
                    .collect();
                let mask = (sel == "mask").then(|| mask_from_runs(r[2], r[3], &case["mask_runs"]));
                ((r[0], r[1], r[2], r[3]), mask)
            }
        };
        let sel = match (&mask, case["selection"].as_str()) {
            (Some(m), _) => Selection::Mask(m),
            (None, Some("background")) => Selection::Background {
                rgb: [255, 255, 255],
                min_delta_e: case["background_delta_e"].as_f64().expect("dE"),
            },
            _ => Selection::Central,
        };
        let px = colour::garment_pixels(&img, rect, sel);
        assert_eq!(
            px.len() as u64,
            case["pixels"].as_u64().expect("n"),
            "{name}"
        );
        let med = colour::median_lab(&px).expect("median");
        let d = max_diff(&[med.l, med.a, med.b], &floats(&case["median_lab"]));
        assert!(d <= TOL, "{name}: median Lab differs by {d}");
        let desc: Vec<f64> = colour::descriptor(&px)
            .iter()
            .map(|&x| f64::from(x))
            .collect();
        let d = max_diff(&desc, &floats(&case["descriptor"]));
        assert!(d <= TOL, "{name}: descriptor differs by {d}");
    }
}

#[test]
fn fusion_matches_the_python_reference() {
    let g = golden();
    let f = &g["fusion"];
    let recipe = RawSimilarity {
        colour_weight: f["weight"].as_f64().expect("w") as f32,
        ..Default::default()
    }
    .validate()
    .expect("recipe");
    assert_eq!(recipe.describe(), f["recipe"].as_str().expect("recipe"));
    let e: Vec<f32> = floats(&f["embedding"]).iter().map(|&x| x as f32).collect();
    let c: Vec<f32> = floats(&f["descriptor"]).iter().map(|&x| x as f32).collect();
    let fused: Vec<f64> = recipe.fuse(e, &c).iter().map(|&x| f64::from(x)).collect();
    let d = max_diff(&fused, &floats(&f["fused"]));
    assert!(d <= TOL, "fused vector differs by {d}");
}
