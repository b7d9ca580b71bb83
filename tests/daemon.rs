//! The real daemon, end to end: `vitrine serve` on port 0 with the replay camera, the shipped
//! int8 models and the demo catalog, queried over HTTP like the display does.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Daemon, bin, config_in, root};

fn catalog_ids() -> HashSet<String> {
    std::fs::read_to_string(root().join("catalog/demo/items.jsonl"))
        .expect("demo catalog")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["id"].as_str().map(String::from))
        .collect()
}

#[test]
fn serve_publishes_real_recommendations_and_stops_on_sigterm() {
    let d = Daemon::start(&[]);
    let (status, _) = d.get_json("/healthz");
    assert_eq!(status, 200);
    d.wait_ready(Duration::from_secs(120));
    // Shoppers walk through the demo footage: wait for garments with catalog items.
    let recs = d.poll_json("/api/recommendations", Duration::from_secs(60), |v| {
        v["shoppers"].as_array().is_some_and(|s| {
            s.iter().any(|s| {
                s["garments"].as_array().is_some_and(|g| {
                    g.iter()
                        .any(|g| g["items"].as_array().is_some_and(|i| !i.is_empty()))
                })
            })
        })
    });
    assert_eq!(recs["frame_width"], 768);
    assert_eq!(recs["frame_height"], 576);
    assert!(recs["latency_ms"].as_f64().is_some_and(|l| l > 0.0));
    let ids = catalog_ids();
    let mut groups = HashSet::new();
    for s in recs["shoppers"].as_array().into_iter().flatten() {
        for g in s["garments"].as_array().into_iter().flatten() {
            let group = g["group"].as_str().unwrap_or_default().to_string();
            for item in g["items"].as_array().into_iter().flatten() {
                assert!(
                    ids.contains(item["id"].as_str().unwrap_or_default()),
                    "{item} is not in the demo catalog"
                );
                let sim = item["similarity"].as_f64().unwrap_or(-9.0);
                assert!((-1.0..=1.0001).contains(&sim), "similarity {sim}");
            }
            groups.insert(group);
        }
    }
    assert!(
        groups.contains("top") && groups.contains("bottom"),
        "body layout gives tops and bottoms: {groups:?}"
    );
    // Items of a garment come from its own group of the catalog.
    let items: serde_json::Value = serde_json::Value::Array(
        std::fs::read_to_string(root().join("catalog/demo/items.jsonl"))
            .expect("items")
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect(),
    );
    let group_of = |id: &str| {
        items
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i["id"] == id)
            .and_then(|i| i["group"].as_str().map(String::from))
    };
    for s in recs["shoppers"].as_array().into_iter().flatten() {
        for g in s["garments"].as_array().into_iter().flatten() {
            for item in g["items"].as_array().into_iter().flatten() {
                assert_eq!(
                    group_of(item["id"].as_str().unwrap_or_default()).as_deref(),
                    g["group"].as_str(),
                    "{item}"
                );
            }
        }
    }
    // The product image the display will load is served.
    let img = recs["shoppers"][0]["garments"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|g| g["items"][0]["image"].as_str().map(String::from));
    if let Some(img) = img {
        let resp = reqwest::blocking::get(d.url(&img)).expect("image");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "image/jpeg");
    }
    let (ready, body) = d.get_json("/readyz");
    assert_eq!(ready, 200, "{body}");
    let status = d.terminate(Duration::from_secs(15));
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
}

#[test]
fn validate_reports_every_problem_at_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config_in(dir.path(), |t| {
        t.replace("score_threshold = 0.4", "score_threshold = 1.5")
            .replace("iou_threshold = 0.5", "iou_threshold = 0")
            .replace(
                "# staff_listen = \"127.0.0.1:8081\"",
                "staff_listen = \"127.0.0.1:8080\"",
            )
            .replace(
                "person_labels = [\"Person\"]",
                "person_labels = [\"Shopper\"]",
            )
            .replace("models/demo/frames", "models/demo/no-such-folder")
            .replace("unpack_limit_mb = 3072", "unpack_limit_mb = 100")
            .replace("idle_timeout_s = 60", "idle_timeout_s = 5")
            .replace("max_connections = 1024", "max_connections = 0")
            .replace("receive_timeout_s = 30", "receive_timeout_s = 0")
    });
    let out = bin()
        .args(["validate", "--config"])
        .arg(&cfg)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "detector.score_threshold = 1.5",
        "detector.iou_threshold = 0",
        "clash",
        "label 'Shopper' is not in the detector's label map",
        "no-such-folder does not exist",
        "catalog.unpack_limit_mb = 100 is below catalog.upload_limit_mb = 2048",
        "server.idle_timeout_s = 5 must be between 20",
        "server.max_connections = 0",
        "catalog.receive_timeout_s = 0",
        "9 problem(s)",
    ] {
        assert!(err.contains(needle), "missing '{needle}' in:\n{err}");
    }
    // The same config refuses to serve.
    let out = bin()
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("9 problem(s)"));
}

#[test]
fn validate_accepts_the_demo_config() {
    let out = bin().arg("validate").output().expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A model file that is not ONNX (truncated download, disk error) names the file and the fix;
/// a label map that disagrees with the model names both class counts.
#[test]
fn broken_models_and_shifted_label_maps_are_refused_with_the_file_named() {
    let dir = tempfile::tempdir().expect("tmp");
    let models = root().join("models");
    let toml =
        std::fs::read_to_string(models.join("ssd_mobilenetv2_oidv4_int8.toml")).expect("toml");
    // Corrupt model: garbage bytes, and no checksum line so the loader itself must complain.
    std::fs::write(dir.path().join("broken.onnx"), b"this is not an onnx model").expect("write");
    std::fs::copy(models.join("oidv4.pbtxt"), dir.path().join("oidv4.pbtxt")).expect("copy");
    let broken: String = toml
        .lines()
        .filter(|l| !l.starts_with("sha256"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("ssd_mobilenetv2_oidv4_int8.onnx", "broken.onnx");
    std::fs::write(dir.path().join("broken.toml"), broken).expect("write");
    let cfg = config_in(dir.path(), |t| {
        t.replace(
            &format!(
                "{}/models/ssd_mobilenetv2_oidv4_int8.toml",
                root().display()
            ),
            &dir.path().join("broken.toml").display().to_string(),
        )
    });
    let out = bin()
        .args(["validate", "--config"])
        .arg(&cfg)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("broken.onnx") && err.contains("valid ONNX model"),
        "{err}"
    );

    // Shifted label map: a background entry numbered 1 pushes every name up by one.
    std::fs::copy(
        models.join("ssd_mobilenetv2_oidv4_int8.onnx"),
        dir.path().join("ssd.onnx"),
    )
    .expect("copy");
    let pbtxt = std::fs::read_to_string(models.join("oidv4.pbtxt")).expect("pbtxt");
    let mut shifted = String::from("item { id: 1 name: 'background' }\n");
    for (i, name) in pbtxt
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("name: '")
                .and_then(|n| n.strip_suffix('\''))
        })
        .enumerate()
    {
        shifted.push_str(&format!("item {{ id: {} name: '{name}' }}\n", i + 2));
    }
    std::fs::write(dir.path().join("shifted.pbtxt"), shifted).expect("write");
    let t: String = toml
        .lines()
        .filter(|l| !l.starts_with("sha256"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("ssd_mobilenetv2_oidv4_int8.onnx", "ssd.onnx")
        .replace("oidv4.pbtxt", "shifted.pbtxt");
    std::fs::write(dir.path().join("shifted.toml"), t).expect("write");
    let cfg = config_in(dir.path(), |t| {
        t.replace(
            &format!(
                "{}/models/ssd_mobilenetv2_oidv4_int8.toml",
                root().display()
            ),
            &dir.path().join("shifted.toml").display().to_string(),
        )
    });
    let out = bin()
        .args(["validate", "--config"])
        .arg(&cfg)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("has 24 classes")
            && err.contains("scores 23 classes")
            && err.contains("ids beyond the model: [24]"),
        "{err}"
    );
}

/// A corrupt embedder whose `sha256` was updated to match: `serve` names the model problem, as
/// `validate` does, not the catalog's "different embedder" that follows from it.
#[test]
fn serve_names_a_corrupt_embedder_like_validate_does() {
    use sha2::Digest;
    let dir = tempfile::tempdir().expect("tmp");
    let models = root().join("models");
    let real = std::fs::read(models.join("efficientnet_lite0_int8.onnx")).expect("model");
    let toml = std::fs::read_to_string(models.join("efficientnet_lite0_int8.toml")).expect("toml");
    for (what, bytes) in [
        ("half", real[..real.len() / 2].to_vec()),
        ("text", b"not a model at all\n".to_vec()),
    ] {
        let onnx = format!("emb-{what}.onnx");
        std::fs::write(dir.path().join(&onnx), &bytes).expect("write");
        let sha = hex::encode(sha2::Sha256::digest(&bytes));
        let t: String = toml
            .lines()
            .map(|l| {
                if l.starts_with("sha256") {
                    format!("sha256 = \"{sha}\"")
                } else {
                    l.replace("efficientnet_lite0_int8.onnx", &onnx)
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let emb_toml = dir.path().join(format!("emb-{what}.toml"));
        std::fs::write(&emb_toml, t).expect("write");
        let cfg = config_in(dir.path(), |t| {
            t.replace(
                &format!("{}/models/efficientnet_lite0_int8.toml", root().display()),
                &emb_toml.display().to_string(),
            )
        });
        let run = |verb: &[&str]| {
            let out = bin()
                .args(verb)
                .arg("--config")
                .arg(&cfg)
                .output()
                .expect("run");
            assert!(!out.status.success(), "{what}: {verb:?} must fail");
            String::from_utf8_lossy(&out.stderr).into_owned()
        };
        let validate = run(&["validate"]);
        let serve = run(&["serve", "--listen", "127.0.0.1:0"]);
        assert!(validate.contains(&onnx), "{what}: {validate}");
        assert!(
            serve.contains(&onnx) && !serve.contains("different embedder"),
            "{what}: serve says\n{serve}\nvalidate says\n{validate}"
        );
    }
}

#[test]
fn a_catalog_item_with_the_wrong_embedding_size_is_named() {
    let dir = tempfile::tempdir().expect("tmp");
    let cat = dir.path().join("cat");
    std::fs::create_dir_all(&cat).expect("mkdir");
    let demo = std::fs::read_to_string(root().join("catalog/demo/items.jsonl")).expect("demo");
    let mut lines: Vec<serde_json::Value> = demo
        .lines()
        .take(20)
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    lines[7]["embedding"] = serde_json::json!([0.5, 0.5]);
    let bad_id = lines[7]["id"].as_str().unwrap_or_default().to_string();
    let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    std::fs::write(cat.join("items.jsonl"), text.join("\n")).expect("write");
    let cfg = config_in(dir.path(), |t| {
        t.replace(
            &format!("{}/catalog/demo", root().display()),
            &cat.display().to_string(),
        )
    });
    let out = bin()
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "line 8, item '{bad_id}': embedding has 2 values but the embedder and its [similarity] recipe make 400"
        )),
        "{err}"
    );
}

/// Corrupt frames in the camera's stream are skipped and counted; the pipeline keeps going.
#[test]
fn corrupt_frames_are_counted_and_skipped() {
    let dir = tempfile::tempdir().expect("tmp");
    let frames = dir.path().join("frames");
    std::fs::create_dir_all(&frames).expect("mkdir");
    for i in 0..4 {
        let name = format!("vtest_{i:04}.jpg");
        std::fs::copy(
            root().join("models/demo/frames").join(&name),
            frames.join(&name),
        )
        .expect("copy");
    }
    std::fs::write(
        frames.join("vtest_0002b.jpg"),
        b"\xff\xd8\xff\xe0 truncated",
    )
    .expect("write");
    let cfg = config_in(dir.path(), |t| {
        t.replace(
            &format!("{}/models/demo/frames", root().display()),
            &frames.display().to_string(),
        )
    });
    let d = Daemon::start(&["--config", cfg.to_str().expect("utf8")]);
    d.wait_ready(Duration::from_secs(120));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = reqwest::blocking::get(d.url("/metrics"))
            .and_then(|r| r.text())
            .unwrap_or_default();
        let value = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().last())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let corrupt = value("vitrine_frames_corrupt_total");
        if corrupt >= 3.0 && value("vitrine_frames_processed_total") >= 6.0 {
            // Logged at warn, naming the file, but not once per frame.
            let log = d.log_text();
            let warned: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("skipped a corrupt frame"))
                .collect();
            assert!(
                warned
                    .first()
                    .is_some_and(|l| l.contains("WARN") && l.contains("vtest_0002b.jpg")),
                "{log}"
            );
            assert!((warned.len() as f64) < corrupt, "rate-limited: {warned:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "corrupt frames not counted or pipeline stalled:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(d.terminate(Duration::from_secs(15)).success());
}

/// A truncated JPEG or PNG is an error naming the file, not a grey-filled image with detections.
#[test]
fn detect_refuses_a_truncated_image() {
    let dir = tempfile::tempdir().expect("tmp");
    let jpeg = std::fs::read(root().join("models/demo/frames/vtest_0000.jpg")).expect("frame");
    let mut png = Vec::new();
    image::RgbImage::from_pixel(64, 48, image::Rgb([10, 200, 30]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .expect("png");
    for (name, bytes) in [("cut.jpg", &jpeg), ("cut.png", &png)] {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes[..bytes.len() * 2 / 3]).expect("write");
        let out = bin().arg("detect").arg(&path).output().expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: {err}");
        assert!(
            err.contains(name) && err.contains("truncated"),
            "{name}: {err}"
        );
    }
}

#[test]
fn detect_prints_one_json_line_per_image_in_original_pixels() {
    let stills = root().join("models/demo/stills");
    let out = bin()
        .arg("detect")
        .arg(stills.join("messi5.jpg"))
        .arg(root().join("models/demo/frames/vtest_0000.jpg"))
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        (lines[1]["width"].as_u64(), lines[1]["height"].as_u64()),
        (Some(768), Some(576))
    );
    for l in &lines {
        let (w, h) = (
            l["width"].as_f64().unwrap_or(0.0),
            l["height"].as_f64().unwrap_or(0.0),
        );
        let boxes = l["boxes"].as_array().expect("boxes");
        assert!(boxes.iter().any(|b| b["label"] == "Person"), "{l}");
        for b in boxes {
            let bb: Vec<f64> = b["bbox"]
                .as_array()
                .expect("bbox")
                .iter()
                .filter_map(|v| v.as_f64())
                .collect();
            assert!(
                bb[0] >= 0.0
                    && bb[1] >= 0.0
                    && bb[2] <= w
                    && bb[3] <= h
                    && bb[0] < bb[2]
                    && bb[1] < bb[3],
                "{b}"
            );
        }
    }
    let out = bin()
        .arg("detect")
        .arg(root().join("README.md"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot decode image"));
}
