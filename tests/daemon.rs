//! The real daemon, end to end: `vitrine serve` on port 0 with the replay camera, the shipped
//! int8 models and the demo catalog, queried over HTTP like the display does.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{
    Daemon, assert_success, bin, config_in, config_with_frames, demo_frames, demo_ids, demo_items,
    floats, root,
};

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
    let ids = demo_ids();
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
    let items = demo_items();
    let group_of = |id: &str| {
        items
            .iter()
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
fn validate_accepts_the_demo_config() {
    let out = bin().arg("validate").output().expect("run");
    assert_success(&out, "vitrine validate");
}

/// One way to break the config or a model it names, and what the refusal must say.
struct Refusal {
    /// What is broken, as failures name the case.
    what: &'static str,
    /// Writes the broken files into an empty folder; returns the config that uses them.
    make: fn(&Path) -> PathBuf,
    /// Words `vitrine validate` must print (empty: the case does not run it).
    validate: Vec<String>,
    /// Words `vitrine serve` must print (empty: the case does not run it).
    serve: Vec<String>,
    /// Words `vitrine serve` must not print.
    serve_not: &'static [&'static str],
}

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| s.to_string()).collect()
}

/// Every refusal of a broken config or model: each names the problem (the file, the setting,
/// the item) rather than a consequence of it.
fn refusals() -> Vec<Refusal> {
    let wrong_size_id = demo_items()[7]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    vec![
        Refusal {
            what: "nine problems in one config, all reported at once",
            make: nine_problems,
            validate: words(&[
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
            ]),
            serve: words(&["9 problem(s)"]),
            serve_not: &[],
        },
        // A model file that is not ONNX (truncated download, disk error) names the file and the
        // fix.
        Refusal {
            what: "a detector that is not ONNX, without a checksum",
            make: detector_not_onnx,
            validate: words(&["broken.onnx", "valid ONNX model"]),
            serve: vec![],
            serve_not: &[],
        },
        // A label map that disagrees with the model names both class counts.
        Refusal {
            what: "a label map shifted by a background entry",
            make: shifted_label_map,
            validate: words(&[
                "has 24 classes",
                "scores 23 classes",
                "ids beyond the model: [24]",
            ]),
            serve: vec![],
            serve_not: &[],
        },
        // A corrupt embedder whose `sha256` was updated to match: `serve` names the model
        // problem, as `validate` does, not the catalog's "different embedder" that follows.
        Refusal {
            what: "an embedder cut in half, checksum matching",
            make: embedder_cut_in_half,
            validate: words(&["emb-half.onnx"]),
            serve: words(&["emb-half.onnx"]),
            serve_not: &["different embedder"],
        },
        Refusal {
            what: "an embedder that is text, checksum matching",
            make: embedder_of_text,
            validate: words(&["emb-text.onnx"]),
            serve: words(&["emb-text.onnx"]),
            serve_not: &["different embedder"],
        },
        Refusal {
            what: "a catalog item with the wrong embedding size",
            make: wrong_embedding_size,
            validate: vec![],
            serve: vec![format!(
                "line 8, item '{wrong_size_id}': embedding has 2 values but the embedder and its [similarity] recipe make 400"
            )],
            serve_not: &[],
        },
    ]
}

#[test]
fn broken_configs_and_models_are_refused_naming_the_problem() {
    let cases = refusals();
    // One thread a case: each runs the binary once or twice, loading the models.
    let failures: Vec<String> = std::thread::scope(|s| {
        let runs: Vec<_> = cases.iter().map(|c| s.spawn(|| check(c))).collect();
        runs.into_iter()
            .flat_map(|r| r.join().expect("case thread"))
            .collect()
    });
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Runs the case's verbs; returns what went wrong.
fn check(case: &Refusal) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = (case.make)(dir.path());
    let verbs: [(&[&str], &[String], &[&str]); 2] = [
        (&["validate"], &case.validate, &[]),
        (
            &["serve", "--listen", "127.0.0.1:0"],
            &case.serve,
            case.serve_not,
        ),
    ];
    let mut failures = Vec::new();
    for (verb, must, must_not) in verbs {
        if must.is_empty() {
            continue;
        }
        let out = bin()
            .args(verb)
            .arg("--config")
            .arg(&cfg)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        let missing: Vec<&String> = must.iter().filter(|w| !err.contains(w.as_str())).collect();
        let said: Vec<&&str> = must_not.iter().filter(|w| err.contains(**w)).collect();
        if out.status.success() || !missing.is_empty() || !said.is_empty() {
            failures.push(format!(
                "{}: `vitrine {}` ({}) lacks {missing:?}, says {said:?}:\n{err}",
                case.what,
                verb.join(" "),
                out.status
            ));
        }
    }
    failures
}

fn nine_problems(dir: &Path) -> PathBuf {
    config_in(dir, |t| {
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
    })
}

/// Writes `dir/<name>.toml`, the shipped model config `shipped` with `edit` applied to each line
/// (a line it maps to `None` is dropped), and returns a config using it instead.
fn with_model(
    dir: &Path,
    shipped: &str,
    name: &str,
    edit: impl Fn(&str) -> Option<String>,
) -> PathBuf {
    let text = std::fs::read_to_string(root().join("models").join(shipped)).expect("model toml");
    let model: Vec<String> = text.lines().filter_map(edit).collect();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, model.join("\n")).expect("write model toml");
    config_in(dir, |t| {
        t.replace(
            &format!("{}/models/{shipped}", root().display()),
            &path.display().to_string(),
        )
    })
}

const DETECTOR: &str = "ssd_mobilenetv2_oidv4_int8";
const EMBEDDER: &str = "efficientnet_lite0_int8";

fn detector_not_onnx(dir: &Path) -> PathBuf {
    std::fs::write(dir.join("broken.onnx"), b"this is not an onnx model").expect("write");
    std::fs::copy(root().join("models/oidv4.pbtxt"), dir.join("oidv4.pbtxt")).expect("copy");
    // No checksum line, so the loader itself must complain.
    with_model(dir, &format!("{DETECTOR}.toml"), "broken", |l| {
        (!l.starts_with("sha256")).then(|| l.replace(&format!("{DETECTOR}.onnx"), "broken.onnx"))
    })
}

fn shifted_label_map(dir: &Path) -> PathBuf {
    std::fs::copy(
        root().join(format!("models/{DETECTOR}.onnx")),
        dir.join("ssd.onnx"),
    )
    .expect("copy");
    // A background entry numbered 1 pushes every name up by one.
    let pbtxt = std::fs::read_to_string(root().join("models/oidv4.pbtxt")).expect("pbtxt");
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
    std::fs::write(dir.join("shifted.pbtxt"), shifted).expect("write");
    with_model(dir, &format!("{DETECTOR}.toml"), "shifted", |l| {
        (!l.starts_with("sha256")).then(|| {
            l.replace(&format!("{DETECTOR}.onnx"), "ssd.onnx")
                .replace("oidv4.pbtxt", "shifted.pbtxt")
        })
    })
}

/// The embedder's file replaced by `bytes` as `emb-<what>.onnx`, its `sha256` updated to match.
fn corrupt_embedder(dir: &Path, what: &str, bytes: &[u8]) -> PathBuf {
    use sha2::Digest;
    let onnx = format!("emb-{what}.onnx");
    std::fs::write(dir.join(&onnx), bytes).expect("write");
    let sha = hex::encode(sha2::Sha256::digest(bytes));
    with_model(
        dir,
        &format!("{EMBEDDER}.toml"),
        &format!("emb-{what}"),
        |l| {
            Some(if l.starts_with("sha256") {
                format!("sha256 = \"{sha}\"")
            } else {
                l.replace(&format!("{EMBEDDER}.onnx"), &onnx)
            })
        },
    )
}

fn embedder_cut_in_half(dir: &Path) -> PathBuf {
    let real = std::fs::read(root().join(format!("models/{EMBEDDER}.onnx"))).expect("model");
    corrupt_embedder(dir, "half", &real[..real.len() / 2])
}

fn embedder_of_text(dir: &Path) -> PathBuf {
    corrupt_embedder(dir, "text", b"not a model at all\n")
}

/// The demo catalog's first 20 items, the 8th with a 2-value embedding.
fn wrong_embedding_size(dir: &Path) -> PathBuf {
    let cat = dir.join("cat");
    std::fs::create_dir_all(&cat).expect("mkdir");
    let mut items: Vec<serde_json::Value> = demo_items().into_iter().take(20).collect();
    items[7]["embedding"] = serde_json::json!([0.5, 0.5]);
    let text: Vec<String> = items.iter().map(|l| l.to_string()).collect();
    std::fs::write(cat.join("items.jsonl"), text.join("\n")).expect("write");
    config_in(dir, |t| {
        t.replace(
            &format!("{}/catalog/demo", root().display()),
            &cat.display().to_string(),
        )
    })
}

/// Corrupt frames in the camera's stream are skipped and counted; the pipeline keeps going.
#[test]
fn corrupt_frames_are_counted_and_skipped() {
    let dir = tempfile::tempdir().expect("tmp");
    let frames = demo_frames(dir.path(), 4);
    std::fs::write(
        frames.join("vtest_0002b.jpg"),
        b"\xff\xd8\xff\xe0 truncated",
    )
    .expect("write");
    let cfg = config_with_frames(dir.path(), &frames, |t| t);
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
            let log = d.log();
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
    assert_success(&out, "vitrine detect");
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
            let bb = floats(&b["bbox"]);
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
