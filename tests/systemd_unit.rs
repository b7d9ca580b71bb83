//! The systemd unit in `systemd/`: `systemd-analyze verify` accepts it without a single warning
//! (with and without the GPU drop-in), its hardening keeps the exposure score low, and it says
//! what the appliance relies on (notify, watchdog, restart, validate first, state directory,
//! cameras allowed, the token's environment file).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::root;

fn systemd_analyze() -> &'static str {
    match Command::new("systemd-analyze").arg("--version").output() {
        Ok(o) if o.status.success() => "systemd-analyze",
        _ => panic!(
            "systemd-analyze is not installed: the unit is checked with systemd's own verifier. \
             Run `scripts/bootstrap --tests` (installs Debian's systemd package)"
        ),
    }
}

/// The unit with its binary paths pointed at the binary under test (verify checks that the
/// commands exist and are executable), written into `dir`.
fn unit_in(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let text = std::fs::read_to_string(root().join("systemd/vitrine.service")).expect("unit");
    let text = text.replace("/opt/vitrine/bin/vitrine", env!("CARGO_BIN_EXE_vitrine"));
    let path = dir.join(name);
    std::fs::write(&path, format!("{text}{extra}")).expect("write unit");
    path
}

fn verify(unit: &Path) {
    let out = Command::new(systemd_analyze())
        .arg("verify")
        .arg(unit)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("run systemd-analyze");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // verify exits 0 even for unknown keys or bad values (it only warns), so any output fails.
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify {}:\n{said}",
        unit.display()
    );
}

#[test]
fn the_unit_and_the_gpu_drop_in_verify_without_warnings() {
    let dir = tempfile::tempdir().expect("tmp");
    verify(&unit_in(dir.path(), "vitrine.service", ""));
    // A drop-in is parsed like more lines of the unit: verify the two together.
    let gpu = std::fs::read_to_string(root().join("systemd/gpu.conf")).expect("gpu drop-in");
    verify(&unit_in(
        dir.path(),
        "vitrine-gpu.service",
        &format!("\n{gpu}"),
    ));
}

#[test]
fn the_verifier_catches_a_broken_unit() {
    // Guards the test above: a typo must produce output.
    let dir = tempfile::tempdir().expect("tmp");
    let bad = unit_in(dir.path(), "bad.service", "\n[Service]\nWatchdogSecs=30\n");
    let out = Command::new(systemd_analyze())
        .arg("verify")
        .arg(&bad)
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("WatchdogSecs"));
}

#[test]
fn the_unit_is_hardened() {
    let dir = tempfile::tempdir().expect("tmp");
    let unit = unit_in(dir.path(), "vitrine.service", "");
    // systemd's own exposure score, 0 (locked down) to 10; "OK" is below 4.
    let out = Command::new(systemd_analyze())
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for vitrine.service: ")
                .nth(1)
        })
        .and_then(|r| r.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in:\n{text}"));
    assert!(score <= 2.5, "exposure {score}:\n{text}");
}

#[test]
fn the_unit_says_what_the_appliance_relies_on() {
    let text = std::fs::read_to_string(root().join("systemd/vitrine.service")).expect("unit");
    let has = |line: &str| text.lines().any(|l| l.trim() == line);
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        // Longer than the capture supervisor's longest reconnect wait (10 s): a camera hiccup
        // is handled in-process, only a wedge restarts the service.
        "WatchdogSec=30s",
        "Restart=on-failure",
        "ExecStartPre=/opt/vitrine/bin/vitrine validate --config /etc/vitrine/vitrine.toml",
        "ExecStart=/opt/vitrine/bin/vitrine serve --config /etc/vitrine/vitrine.toml",
        "EnvironmentFile=/etc/vitrine/vitrine.env",
        "DynamicUser=yes",
        "SupplementaryGroups=video",
        "ProtectSystem=strict",
        "StateDirectory=vitrine vitrine/catalog vitrine/tensorrt",
        "DeviceAllow=char-video4linux rw",
        "NoNewPrivileges=yes",
    ] {
        assert!(has(line), "the unit lacks `{line}`");
    }
    // PrivateDevices= would hide /dev/video*: the camera must stay reachable.
    assert!(
        !text
            .lines()
            .any(|l| l.trim_start().starts_with("PrivateDevices="))
    );
    let env = std::fs::read_to_string(root().join("systemd/vitrine.env.example")).expect("env");
    assert!(env.lines().any(|l| l.starts_with("VITRINE_STAFF_TOKEN=")));
}
