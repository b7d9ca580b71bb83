//! `scripts/install` staged into a temporary root (`--root`): the layout the unit expects, models
//! that still match their checksums, a private random staff token, a config whose tuning follows
//! the demo config, the unit installed, a second run that keeps config and token, and a clear
//! refusal of `--gpu` without a GPU build of ONNX Runtime.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use common::{assert_success, root};

fn install(args: &[&str]) -> Output {
    Command::new(root().join("scripts/install"))
        .args(["--binary", env!("CARGO_BIN_EXE_vitrine")])
        .args(args)
        .current_dir(root())
        .output()
        .expect("run scripts/install")
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "scripts/install failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

fn token(env: &Path) -> String {
    std::fs::read_to_string(env)
        .expect("env file")
        .lines()
        .find_map(|l| l.strip_prefix("VITRINE_STAFF_TOKEN="))
        .expect("token line")
        .to_string()
}

fn table(text: &str) -> toml::Table {
    text.parse().expect("TOML")
}

#[test]
fn install_stages_binary_runtime_models_catalog_config_token_and_unit() {
    let dir = tempfile::tempdir().expect("tmp");
    let r = dir.path().to_str().expect("utf8");
    ok(&install(&["--root", r, "--camera", "replay"]));
    let p = dir.path();
    let opt = p.join("opt/vitrine");

    assert_eq!(mode(&opt.join("bin/vitrine")), 0o755);
    let lib = std::fs::canonicalize(opt.join("lib/libonnxruntime.so")).expect("library link");
    assert!(lib.starts_with(std::fs::canonicalize(&opt).expect("opt")));
    let sums = Command::new("sha256sum")
        .args(["--quiet", "-c", "SHA256SUMS"])
        .current_dir(opt.join("models"))
        .status()
        .expect("sha256sum");
    assert!(sums.success(), "installed models match their checksums");
    assert!(opt.join("catalog/demo/items.jsonl").is_file());
    assert!(
        opt.join("models/demo/frames").is_dir(),
        "replay frames for --camera replay"
    );

    // The staff token: random, long, readable by root only.
    let env = p.join("etc/vitrine/vitrine.env");
    assert_eq!(mode(&env), 0o600);
    let t = token(&env);
    assert_eq!(t.len(), 48);
    assert!(t.chars().all(|c| c.is_ascii_hexdigit()), "{t}");

    // The config: every field filled in, absolute paths into the install, the demo's tuning.
    let text = std::fs::read_to_string(p.join("etc/vitrine/vitrine.toml")).expect("config");
    assert!(!text.contains('@'), "a placeholder was left:\n{text}");
    let cfg = table(&text);
    let demo = table(&std::fs::read_to_string(root().join("vitrine.toml")).expect("demo config"));
    for section in ["regions", "recommend", "health"] {
        assert_eq!(
            cfg[section], demo[section],
            "[{section}] differs from vitrine.toml"
        );
    }
    assert_eq!(cfg["catalog"]["index"], demo["catalog"]["index"]);
    // The tuning the installer copies from the demo config, key by key.
    let tuning: [(&str, &[&str]); 5] = [
        (
            "catalog",
            &[
                "versions_kept",
                "upload_limit_mb",
                "unpack_limit_mb",
                "import_threads",
                "import_nice",
                "receive_timeout_s",
            ],
        ),
        (
            "server",
            &["max_connections", "header_timeout_s", "idle_timeout_s"],
        ),
        (
            "pose",
            &[
                "min_confidence",
                "min_visibility",
                "mask_threshold",
                "background",
                "min_garment_share",
                "refresh_ms",
            ],
        ),
        ("runtime", &["intra_threads", "spinning", "require_gpu"]),
        (
            "detector",
            &[
                "score_threshold",
                "iou_threshold",
                "max_detections",
                "resize",
            ],
        ),
    ];
    for (section, keys) in tuning {
        for key in keys {
            assert_eq!(cfg[section][key], demo[section][key], "{section}.{key}");
        }
    }
    assert_eq!(
        cfg["detector"]["model"].as_str(),
        Some("/opt/vitrine/models/ssd_mobilenetv2_oidv4_int8.toml")
    );
    assert_eq!(cfg["server"]["listen"].as_str(), Some("0.0.0.0:8080"));
    assert_eq!(cfg["server"]["debug_view"].as_bool(), Some(false));
    assert_eq!(
        cfg["runtime"]["tensorrt_cache"].as_str(),
        Some("/var/lib/vitrine/tensorrt")
    );
    assert_eq!(
        cfg["catalog"]["token_env"].as_str(),
        Some("VITRINE_STAFF_TOKEN"),
        "the token comes from the unit's EnvironmentFile"
    );
    assert_eq!(
        cfg["catalog"]["data_dir"].as_str(),
        Some("/var/lib/vitrine/catalog"),
        "catalog versions live in the unit's StateDirectory"
    );
    // The paths the config names exist in the staged tree.
    for key in [
        ("detector", "model"),
        ("embedder", "model"),
        ("catalog", "path"),
    ] {
        let path = cfg[key.0][key.1].as_str().expect("path");
        assert!(p.join(path.trim_start_matches('/')).exists(), "{path}");
    }

    // The installed config passes the check the unit runs before every start (ExecStartPre),
    // with the staged tree standing in for / and the token from the environment file.
    let staged = text
        .replace("/opt/vitrine", &opt.display().to_string())
        .replace(
            "/var/lib/vitrine",
            &p.join("var/lib/vitrine").display().to_string(),
        );
    std::fs::create_dir_all(p.join("var/lib/vitrine/catalog")).expect("state dir");
    let staged_cfg = p.join("staged.toml");
    std::fs::write(&staged_cfg, staged).expect("write");
    let out = Command::new(opt.join("bin/vitrine"))
        .args(["validate", "--config"])
        .arg(&staged_cfg)
        .env("VITRINE_STAFF_TOKEN", &t)
        .env_remove("ORT_DYLIB_PATH")
        .output()
        .expect("run the installed vitrine");
    assert_success(&out, "the installed config does not validate");

    let unit = std::fs::read_to_string(p.join("etc/systemd/system/vitrine.service"))
        .expect("unit installed");
    assert!(
        unit.contains(
            "ExecStart=/opt/vitrine/bin/vitrine serve --config /etc/vitrine/vitrine.toml"
        )
    );
    assert!(
        !p.join("etc/systemd/system/vitrine.service.d").exists(),
        "no GPU drop-in"
    );

    // A second run (an update) keeps the technician's config and the token.
    std::fs::write(
        p.join("etc/vitrine/vitrine.toml"),
        format!("{text}\n# edited on site\n"),
    )
    .expect("edit");
    ok(&install(&["--root", r]));
    assert_eq!(token(&env), t, "the token survives an update");
    assert!(
        std::fs::read_to_string(p.join("etc/vitrine/vitrine.toml"))
            .expect("config")
            .ends_with("# edited on site\n")
    );
}

#[test]
fn a_camera_config_and_an_onnxruntime_wheel() {
    // A wheel is a zip with the libraries in onnxruntime/capi/ (as JetPack's onnxruntime-gpu).
    let dir = tempfile::tempdir().expect("tmp");
    let ort = root().join(".runtime/onnxruntime");
    let so = std::fs::read_dir(&ort)
        .expect("scripts/bootstrap places ONNX Runtime in .runtime/onnxruntime")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so.") && !p.is_symlink())
        })
        .expect("libonnxruntime.so.X.Y.Z");
    let wheel = dir.path().join("onnxruntime-1.0.0-cp3-none-linux.whl");
    let zipped = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1], 'w'); \
             z.write(sys.argv[2], 'onnxruntime/capi/' + sys.argv[2].rsplit('/', 1)[1]); z.close()",
        ])
        .arg(&wheel)
        .arg(&so)
        .status()
        .expect("python3");
    assert!(zipped.success());
    let staged = dir.path().join("root");
    ok(&install(&[
        "--root",
        staged.to_str().expect("utf8"),
        "--onnxruntime",
        wheel.to_str().expect("utf8"),
        "--camera",
        "/dev/video2",
        "--listen",
        "127.0.0.1:9090",
    ]));
    assert!(
        std::fs::canonicalize(staged.join("opt/vitrine/lib/libonnxruntime.so"))
            .expect("link")
            .is_file()
    );
    let cfg =
        table(&std::fs::read_to_string(staged.join("etc/vitrine/vitrine.toml")).expect("config"));
    assert_eq!(cfg["camera"]["source"].as_str(), Some("camera"));
    assert_eq!(cfg["camera"]["device"].as_str(), Some("/dev/video2"));
    assert_eq!(cfg["server"]["listen"].as_str(), Some("127.0.0.1:9090"));
}

#[test]
fn gpu_without_a_gpu_build_of_onnxruntime_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = install(&["--root", dir.path().to_str().expect("utf8"), "--gpu"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("libonnxruntime_providers_cuda.so") && err.contains("GPU build"),
        "{err}"
    );
    assert!(
        !dir.path().join("opt/vitrine/bin/vitrine").exists(),
        "nothing half-installed"
    );
}
