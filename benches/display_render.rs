//! First render of the storefront display in a real browser: the release daemon on the demo
//! replay, headless Chromium loading `/` again and again, timing (from navigation start) the first
//! contentful paint and the first frame after the first live data was rendered.
//! `cargo bench --bench display_render` (needs Debian's chromium: `scripts/bootstrap --tests`).
//! Under `cargo test --all-targets` (no `--bench` argument) it makes two loads only, as a check
//! that the benchmark still runs.

#[path = "../tests/display_support/cdp.rs"]
mod cdp;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let loads: usize = if std::env::args().any(|a| a == "--bench") {
        15
    } else {
        2
    };
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_vitrine"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start vitrine");
    let mut base = None;
    for line in BufReader::new(daemon.stdout.take().expect("stdout"))
        .lines()
        .map_while(Result::ok)
    {
        if let Some(rest) = line.split("listening on http://").nth(1) {
            base = rest.split('/').next().map(|a| format!("http://{a}/"));
        }
        if line.contains("vitrine ready") {
            break;
        }
    }
    let base = base.expect("the daemon listened");
    // Let shoppers appear so the first data is a live render, as in a shop with people passing.
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let body = reqwest::blocking::get(format!("{base}api/recommendations"))
            .and_then(|r| r.text())
            .unwrap_or_default();
        if body.contains("\"items\":[{") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    let mut browser = cdp::Browser::launch(1920, 1080);
    let (mut data, mut fcp, mut live) = (Vec::new(), Vec::new(), 0usize);
    let mut cold = None;
    // Load 0 is the first after the browser started (its renderer process and caches are cold):
    // reported on its own, as a kiosk's boot would see it; loads 1.. are page (re)loads.
    for load in 0..=loads {
        browser.navigate("about:blank");
        browser.navigate(&base);
        let v = browser.wait_for(
            "its first render",
            "(() => window.__vitrine && window.__vitrine.firstDataRenderMs !== null ? {
                data: window.__vitrine.firstDataRenderMs,
                live: window.__vitrine.firstLiveRenderMs,
                fcp: (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime || null,
             } : null)()",
            Duration::from_secs(30),
            |v| !v.is_null(),
        );
        let d = v["data"].as_f64().expect("ms");
        if load == 0 {
            cold = Some(d);
            continue;
        }
        eprintln!("load {load}: {d:.0} ms");
        data.push(d);
        if let Some(f) = v["fcp"].as_f64() {
            fcp.push(f);
        }
        if v["live"].as_f64().is_some() {
            live += 1;
        }
    }
    let stats = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        (v[n / 2], v[n - 1])
    };
    let (d50, dmax) = stats(data);
    let (f50, fmax) = stats(fcp);
    println!(
        "display first render over {loads} page loads (localhost, headless Chromium, 1920x1080):"
    );
    println!("  first contentful paint:            median {f50:.0} ms, max {fmax:.0} ms");
    println!("  first data rendered (next frame):  median {d50:.0} ms, max {dmax:.0} ms");
    println!("  loads whose first data was live:   {live}/{loads}");
    println!(
        "  first load after the browser started: first data rendered at {:.0} ms",
        cold.unwrap_or(f64::NAN)
    );
    drop(browser);
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let _ = daemon.wait();
}
