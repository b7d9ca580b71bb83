//! The storefront display in a real browser: headless Chromium opens the page of a real daemon
//! (replay camera, shipped models, demo catalog) and must show catalog items from the pipeline,
//! then different ones as shoppers walk through; when the daemon is replaced by another on the
//! same address (a restart) the page reconnects by itself and, with nobody in view, shows the
//! attract screen. Screenshots land in `target/test-artifacts/`.
//!
//! Needs Debian's `chromium` (`scripts/bootstrap --tests`); without it the test fails saying so.

#[path = "display_support/cdp.rs"]
mod cdp;
mod common;

use std::collections::HashSet;
use std::time::Duration;

use cdp::{Browser, artifacts_dir};
use common::{Daemon, config_with_frames, demo_ids};
use serde_json::Value;

/// What the page shows, as the test reads it.
const PAGE_STATE: &str = r#"(() => {
  if (!document.body || !window.__vitrine) return { state: 'loading' };
  // Elements fading out (themselves or a panel around them) no longer count as shown.
  const live = [...document.querySelectorAll('#live [data-item-id]')]
    .filter((e) => !e.closest('.leave'));
  const shown = [...document.querySelectorAll('#showcase [data-showcase-id]')]
    .filter((e) => !e.closest('.leave'));
  return {
    state: document.body.dataset.state,
    link: document.body.dataset.link,
    boot: document.body.dataset.boot || null,
    items: live.map((e) => e.dataset.itemId),
    groups: [...document.querySelectorAll('#live .garment .group')].map((e) => e.textContent),
    prices: live.map((e) => e.querySelector('.price').textContent),
    names: live.map((e) => e.querySelector('.name').textContent),
    imagesLoaded: live.every((e) => { const i = e.querySelector('img'); return i.complete && i.naturalWidth > 0; }),
    showcase: shown.map((e) => e.dataset.showcaseId),
    debugHidden: document.getElementById('debug').hidden,
    cameraImages: [...document.images].filter((i) => i.src.includes('/debug/')).length,
    events: window.__vitrine.events,
  };
})()"#;

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(String::from))
        .collect()
}

/// Saves a screenshot once the transitions under way have finished.
fn save(browser: &mut Browser, name: &str) {
    std::thread::sleep(Duration::from_millis(1500));
    let png = browser.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let path = artifacts_dir().join(name);
    std::fs::write(&path, &png).expect("write screenshot");
    eprintln!("screenshot: {}", path.display());
}

#[test]
fn the_display_shows_live_items_then_new_ones_and_survives_a_restart() {
    let mut browser = Browser::launch(1920, 1080);
    let ids = demo_ids();

    let d = Daemon::start(&[]);
    d.wait_ready(Duration::from_secs(120));
    let addr = d.addr.clone();
    browser.navigate(&d.url("/"));

    // Catalog items from the real pipeline appear, with names, prices and loaded images.
    let first = browser.wait_for(
        "live catalog items",
        PAGE_STATE,
        Duration::from_secs(90),
        |v| v["state"] == "live" && !strings(&v["items"]).is_empty() && v["imagesLoaded"] == true,
    );
    let first_items: HashSet<String> = strings(&first["items"]).into_iter().collect();
    for id in &first_items {
        assert!(ids.contains(id), "{id} is not a demo catalog item");
    }
    assert!(
        strings(&first["prices"]).iter().all(|p| p.contains('€')),
        "prices carry their currency: {first}"
    );
    assert!(strings(&first["names"]).iter().all(|n| !n.is_empty()));
    assert!(
        strings(&first["groups"])
            .iter()
            .any(|g| g == "Tops" || g == "Bottoms"),
        "garment groups are labelled: {first}"
    );
    assert_eq!(first["link"], "up");
    // Privacy: no camera image unless the debug view is configured.
    assert_eq!(first["debugHidden"], true);
    assert_eq!(first["cameraImages"], 0);
    let boot = first["boot"].as_str().expect("boot id").to_string();
    save(&mut browser, "display-live.png");

    // As shoppers come and go, the page follows: a different set of items shows up.
    let changed = browser.wait_for(
        "the items change",
        PAGE_STATE,
        Duration::from_secs(120),
        |v| {
            let now: HashSet<String> = strings(&v["items"]).into_iter().collect();
            !now.is_empty() && now != first_items
        },
    );
    for id in strings(&changed["items"]) {
        assert!(ids.contains(&id), "{id} is not a demo catalog item");
    }
    assert!(changed["events"].as_u64().unwrap_or(0) >= 2, "{changed}");
    save(&mut browser, "display-changed.png");

    // A restart: the daemon goes away and a new one (here watching an empty scene) comes up on
    // the same address. The page notices the new daemon on its own.
    let status = d.terminate(Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    let dir = tempfile::tempdir().expect("tmp");
    let frames = dir.path().join("frames");
    std::fs::create_dir_all(&frames).expect("mkdir");
    // An empty shop front: a plain wall, nobody in view.
    image::RgbImage::from_pixel(768, 576, image::Rgb([92, 96, 104]))
        .save(frames.join("empty.jpg"))
        .expect("frame");
    let cfg = config_with_frames(dir.path(), &frames, |t| t);
    let second = Daemon::serve(
        &["--listen", &addr, "--config", cfg.to_str().expect("utf8")],
        |_| {},
    );
    second.wait_ready(Duration::from_secs(120));
    let idle = browser.wait_for(
        "the restarted daemon's attract screen",
        PAGE_STATE,
        // Generous: the new daemon loads its models and the page's reconnect backs off, and CI
        // machines are busy.
        Duration::from_secs(120),
        |v| {
            v["boot"].as_str().is_some_and(|b| b != boot)
                && v["state"] == "idle"
                && v["link"] == "up"
                && !strings(&v["showcase"]).is_empty()
                && strings(&v["items"]).is_empty()
        },
    );
    for id in strings(&idle["showcase"]) {
        assert!(
            ids.contains(&id),
            "showcase item {id} is not in the catalog"
        );
    }
    save(&mut browser, "display-idle.png");
    drop(second);
}
