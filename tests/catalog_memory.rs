//! Memory around catalog imports, measured on the real daemon: a very large product photo in an
//! images-only bundle is decoded, scaled down early and its memory given back (issue 11, item 10).

mod common;

use std::time::Duration;

use common::catalog::*;
use vitrine::catalog::synth::Embeddings;

const WAIT: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_photo_leaves_no_memory_behind() {
    let work = tempfile::tempdir().expect("tmp");
    let cfg = seeded_config(work.path(), 20, false, 16);
    let d = serve(&cfg, &[], WAIT);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = d.rss_mib();

    // Two photos, one of them 10000×10000 (300 MB as RGB), both embedded by the appliance.
    let imgs = work.path().join("imgs");
    bundle(&imgs, "big", 2, Embeddings::None, 4);
    let big = imgs.join("images/big-0.jpg");
    assert!(big.is_file(), "the synthetic bundle's first photo");
    std::fs::remove_file(&big).expect("rm");
    let text = std::fs::read_to_string(imgs.join("items.jsonl")).expect("items");
    std::fs::write(
        imgs.join("items.jsonl"),
        text.replace("images/big-0.jpg", "images/big-0.png"),
    )
    .expect("items");
    image::RgbImage::from_fn(10_000, 10_000, |x, y| {
        image::Rgb([(x / 40) as u8, (y / 40) as u8, 128])
    })
    .save(imgs.join("images/big-0.png"))
    .expect("png");
    let body = tar_gz(&imgs);
    let done = upload_inactive(&d, body, WAIT).await;
    assert_eq!(done["state"].as_str(), Some("succeeded"), "{done}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = d.rss_mib();
    println!("resident memory: idle {idle} MiB, after importing a 10000×10000 photo {after} MiB");
    assert!(
        after <= idle + 100,
        "resident memory stayed at {after} MiB after the import (idle: {idle} MiB)"
    );
    assert!(d.terminate(WAIT).success(), "clean exit on SIGTERM");
}
