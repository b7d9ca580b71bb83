//! Hostile uploads against the real daemon's staff API (issue 11): decompression bombs and an
//! npy header that declares 8 GiB are refused with 422 while resident memory stays within 300 MB
//! of idle; a truncated photo, two photos that would share one stored file, and an archive whose
//! entry is both a file and a folder are 422s that name the culprits.

mod common;

use std::path::Path;
use std::time::Duration;

use common::catalog::*;
use vitrine::catalog::synth::{self, Embeddings};

const WAIT: Duration = Duration::from_secs(120);

/// Uploads `body` and returns (status, answer, peak resident MiB sampled while it ran).
async fn upload_measured(d: &Daemon, body: Vec<u8>) -> (u16, serde_json::Value, u64) {
    let req = client()
        .post(d.staff_url("/api/catalog/bundles?activate=false"))
        .bearer_auth(TOKEN)
        .body(body)
        .send();
    let task = tokio::spawn(async move {
        let r = req.await.expect("request");
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(serde_json::Value::Null))
    });
    let mut peak = 0;
    while !task.is_finished() {
        peak = peak.max(d.rss_mib());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (s, j) = task.await.expect("task");
    (s, j, peak.max(d.rss_mib()))
}

/// The bound on a refused upload's memory: its peak within 300 MiB of the idle daemon's.
fn within_300_mib(what: &str, idle: u64, peak: u64) {
    println!("{what}: refused, resident idle {idle} MiB, peak {peak} MiB");
    assert!(
        peak < idle + 300,
        "{what}: {peak} MiB resident, idle {idle} MiB"
    );
}

fn manifest(n: usize, embeddings: &str) -> Vec<u8> {
    let fp = fingerprint();
    serde_json::to_vec(&serde_json::json!({
        "format": "vitrine-catalog/1", "version": "hostile", "item_count": n,
        "embedder": {"sha256": fp.sha256, "dim": fp.dim}, "embeddings": embeddings,
    }))
    .expect("json")
}

fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, *data).expect("append");
    }
    b.into_inner().expect("tar")
}

/// Uploads `body`, which must be refused with 422 and an answer saying each of `says`; returns
/// the peak resident MiB sampled while it ran.
async fn refused(d: &Daemon, what: &str, body: Vec<u8>, says: &[&str]) -> u64 {
    let (s, j, peak) = upload_measured(d, body).await;
    assert_eq!(s, 422, "{what}: {j}");
    let all = j.to_string();
    for w in says {
        assert!(all.contains(w), "{what}: should say '{w}': {all}");
    }
    peak
}

fn item_of(dir: &Path, image_suffix: &str) -> String {
    std::fs::read_to_string(dir.join("items.jsonl"))
        .expect("items")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| {
            v["image"]
                .as_str()
                .is_some_and(|i| i.ends_with(image_suffix))
        })
        .and_then(|v| v["id"].as_str().map(String::from))
        .expect("an item with that image")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_uploads_are_422s_in_bounded_memory() {
    let work = tempfile::tempdir().expect("tmp");
    let cfg = seeded_config(work.path(), 20, false, 64);
    let d = serve(&cfg, &[], WAIT);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = d.rss_mib();

    // Bombs: 1 GiB unpacked from a few MiB each.
    const GIB: u64 = 1 << 30;
    let m = manifest(3, "inline");
    let bombs: [(&str, Vec<synth::Member>, &str); 3] = [
        (
            "items.jsonl",
            vec![
                ("manifest.json", m.len() as u64, &m),
                ("items.jsonl", GIB, b"{}\n"),
            ],
            "more than the 3 items manifest.json declares can need",
        ),
        (
            "manifest.json",
            vec![("manifest.json", GIB, b" ")],
            "larger than 64 KiB",
        ),
        (
            "items.jsonl of one line",
            vec![
                ("manifest.json", m.len() as u64, &m),
                ("items.jsonl", GIB, b"x"),
            ],
            "line 1 is longer than",
        ),
    ];
    for (what, members, expect) in bombs {
        let path = work.path().join("bomb.tar.gz");
        synth::write_bomb(&path, &members).expect("bomb");
        let body = std::fs::read(&path).expect("read");
        let size = body.len();
        let peak = refused(&d, what, body, &[expect]).await;
        let what = format!("bomb {what} ({} KiB, 1 GiB unpacked)", size >> 10);
        within_300_mib(&what, idle, peak);
    }

    // An npy header declaring (8388608, 256) over a 1 KiB body.
    let npy_dir = work.path().join("npy");
    bundle(&npy_dir, "npy", 4, Embeddings::Npy, 2);
    let npy = npy_dir.join("embeddings.npy");
    let mut header =
        String::from("{'descr': '<f4', 'fortran_order': False, 'shape': (8388608, 256), }");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&[0u8; 1024]);
    std::fs::write(&npy, &out).expect("write");
    let says = ["has shape (8388608, 256)"];
    let peak = refused(&d, "npy", tar_gz(&npy_dir), &says).await;
    within_300_mib("npy header of 8 GiB", idle, peak);

    // A truncated JPEG in an images-only bundle.
    let cut = work.path().join("cut");
    bundle(&cut, "cut", 3, Embeddings::None, 3);
    let photo = cut.join("images/cut-1.jpg");
    let bytes = std::fs::read(&photo).expect("photo");
    std::fs::write(&photo, &bytes[..bytes.len() * 2 / 3]).expect("cut");
    let id = item_of(&cut, "cut-1.jpg");
    let says = [&format!("item '{id}'"), "truncated"];
    refused(&d, "truncated", tar_gz(&cut), &says).await;

    // Two items whose different photos would both be stored as images/same.jpg.
    let jpeg = std::fs::read(cut.join("images/cut-0.jpg")).expect("photo");
    let m = manifest(2, "none");
    let line = |id: &str, image: &str| {
        format!(
            "{{\"id\":\"{id}\",\"name\":\"Shirt\",\"group\":\"top\",\"price\":1,\"image\":\"{image}\"}}\n"
        )
    };
    let items = format!(
        "{}{}",
        line("first", "images/same.jpg"),
        line("second", "same.jpg")
    );
    let body = tar_of(&[
        ("manifest.json", &m),
        ("items.jsonl", items.as_bytes()),
        ("images/same.jpg", &jpeg),
        ("same.jpg", &bytes),
    ]);
    refused(&d, "collision", body, &["item 'second'", "item 'first'"]).await;

    // Entry `x` then `x/y`.
    let body = tar_of(&[
        ("manifest.json", &m),
        ("x", b"file"),
        ("x/y", b"under a file"),
    ]);
    refused(&d, "x then x/y", body, &["'x' and 'x/y' clash"]).await;

    let (s, v) = staff_get(&d, "/api/catalog/versions").await;
    assert_eq!(
        (s, v["versions"].as_array().map_or(0, Vec::len)),
        (200, 1),
        "nothing was stored: {v}"
    );
    assert!(d.terminate(WAIT).success(), "clean exit on SIGTERM");
}
