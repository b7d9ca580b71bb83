//! Cases from a hostile review of the staff catalog API, against the real daemon: other
//! spellings of a version id (which once got a served version pruned), stalled uploads holding
//! the writer lock, and refusals that reached clients as a broken pipe.

mod common;

use std::path::Path;
use std::time::Duration;

use common::catalog::*;
use reqwest::Method;
use vitrine::catalog::synth::Embeddings;

const WAIT: Duration = Duration::from_secs(90);

/// Uploads a small bundle of items `<prefix>-<i>` without activating it; returns the version.
async fn import_inactive(d: &Daemon, work: &Path, prefix: &str, seed: u64) -> String {
    let body = bundle_tar_gz(work, prefix, 10, Embeddings::Npy, seed);
    let done = upload_inactive(d, body, WAIT).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    done["version"].as_str().expect("version").to_string()
}

/// The active version keeps serving its product images.
async fn image_served(d: &Daemon, item: &str) {
    let (s, it) = staff_get(d, &format!("/api/catalog/items/{item}")).await;
    assert_eq!(s, 200, "{it}");
    let img = it["image"]
        .as_str()
        .expect("image")
        .trim_start_matches("images/");
    let r = client()
        .get(d.url(&format!("/catalog/images/{img}")))
        .send()
        .await
        .expect("image");
    assert_eq!(r.status().as_u16(), 200, "product image {img}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_version_is_never_pruned_whatever_its_id_was_spelled() {
    let work = tempfile::tempdir().expect("tmp");
    let cfg = seeded_config(work.path(), 20, false, 16);
    let data = work.path().join("data");
    set_key(&cfg, "catalog", "versions_kept", 5.into());
    let d = serve(&cfg, &[], WAIT);

    // The review's case: five versions stored inactive, then `./v0002` activated.
    for i in 1..=5 {
        import_inactive(&d, work.path(), &format!("b{i}"), 10 + i).await;
    }
    let before = versions(&d).await;
    assert_eq!(before.0, "v0001");
    assert_eq!(before.1.len(), 6, "{before:?}");
    let abs = data.join("versions/v0002").display().to_string();
    let abs = abs.replace('/', "%2F");
    for bad in [
        ".%2Fv0002",
        "v0002%2F",
        "..%2Fversions%2Fv0002",
        abs.as_str(),
        "v2",
        "V0002",
        "v%2B002",
    ] {
        let (s, r) = activate(&d, bad).await;
        assert_eq!(s, 400, "{bad}: {r}");
        let msg = r["error"].as_str().unwrap_or_default();
        assert!(
            msg.contains("is not a catalog version id") && msg.contains("v0007"),
            "{bad}: the refusal names the expected form: {r}"
        );
        assert_eq!(versions(&d).await, before, "{bad} changed the catalog");
    }
    let (s, r) = activate(&d, "v0002").await;
    assert_eq!((s, r["active"].as_str()), (200, Some("v0002")), "{r}");
    import_inactive(&d, work.path(), "b6", 16).await;
    let (active, ids) = versions(&d).await;
    assert_eq!(active, "v0002");
    assert!(ids.contains(&"v0002".to_string()), "{ids:?}");
    wait_recommendations(&d, "v0002", "b1-", WAIT).await;
    image_served(&d, "b1-0").await;
    assert!(d.terminate(WAIT).success(), "clean exit on SIGTERM");

    // ACTIVE as an older build wrote it after accepting `./v0002`: the next import must not
    // prune the version it names, and a restart serves that version, not an older one.
    std::fs::write(
        data.join("ACTIVE"),
        r#"{"active":"./v0002","history":["v0001"]}"#,
    )
    .expect("ACTIVE");
    let d = serve(&cfg, &[], WAIT);
    let (s, summary) = staff_get(&d, "/api/catalog").await;
    assert_eq!((s, summary["version"].as_str()), (200, Some("v0002")));
    import_inactive(&d, work.path(), "b7", 17).await;
    let (active, ids) = versions(&d).await;
    assert_eq!(active, "v0002");
    assert!(
        ids.contains(&"v0002".to_string()) && ids.contains(&"v0001".to_string()),
        "the active version and its rollback target survive pruning: {ids:?}"
    );
    assert!(!ids.contains(&"v0003".to_string()), "{ids:?}");
    wait_recommendations(&d, "v0002", "b1-", WAIT).await;
    image_served(&d, "b1-0").await;
    assert!(d.terminate(WAIT).success(), "clean exit on SIGTERM");
}

/// A request refused before its body is read: method, path, token, body, status, message.
type Refusal = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Vec<u8>,
    u16,
    &'static str,
);

/// A request as Python's http.client sends it: the whole body written before anything is
/// read. Returns the status and body of the answer, or what went wrong ("broken pipe", …).
fn write_all_then_read(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_secs(30)))
        .and_then(|()| s.set_read_timeout(Some(Duration::from_secs(30))))
        .map_err(|e| e.to_string())?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())
        .and_then(|()| s.write_all(body))
        .map_err(|e| format!("writing the body: {e}"))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .map_err(|e| format!("reading the answer: {e}"))?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP answer: {text:?}"))?;
    Ok((status, text))
}

/// Starts an upload that declares `declared` bytes, sends `sent`, then goes silent (the socket
/// stays open). Returns the socket to read the answer from.
fn stalled_upload(addr: &str, declared: usize, sent: usize) -> std::net::TcpStream {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    let head = format!(
        "POST /api/catalog/bundles HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {declared}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).expect("head");
    s.write_all(&vec![0x1f; sent]).expect("body");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_uploads_free_the_catalog_and_refusals_reach_clients_that_write_first() {
    let work = tempfile::tempdir().expect("tmp");
    let cfg = seeded_config(work.path(), 20, false, 64);
    let data = work.path().join("data");
    set_key(&cfg, "catalog", "receive_timeout_s", 3.into());
    let d = serve(&cfg, &[], WAIT);
    let addr = d.staff();

    // 100 KiB, then silence: the upload holds no lock that activation or rollback need...
    let mut stalled = stalled_upload(&addr, 10 << 20, 100 << 10);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = std::time::Instant::now();
    let (s, r) = activate(&d, "v0001").await;
    assert_eq!((s, r["active"].as_str()), (200, Some("v0001")), "{r}");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "activation waited {:?} behind a receiving upload",
        t.elapsed()
    );
    // ...while a second upload, written in full before reading, hears "busy" (not a broken pipe).
    let big = vec![7u8; 20 << 20];
    let a2 = addr.clone();
    let busy = tokio::task::spawn_blocking(move || {
        write_all_then_read(&a2, "POST", "/api/catalog/bundles", Some(TOKEN), &big)
    })
    .await
    .expect("join");
    let (s, text) = busy.expect("the 409 reaches a client that writes first");
    assert_eq!(s, 409, "{text}");
    assert!(text.contains("being received"), "{text}");

    // After catalog.receive_timeout_s of silence the upload is abandoned with 408.
    let answer = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        stalled
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut buf = vec![0u8; 4096];
        let n = stalled.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).to_string()
    })
    .await
    .expect("join");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("catalog.receive_timeout_s"), "{answer}");
    let (_, jobs) = staff_get(&d, "/api/catalog/jobs").await;
    assert_eq!(jobs["jobs"][0]["state"], "failed", "{jobs}");
    // The catalog is free again: a good upload goes through.
    let body = bundle_tar_gz(work.path(), "good", 10, Embeddings::Npy, 2);
    upload_inactive(&d, body, WAIT).await;

    // Every early refusal drains the body, so a client that writes it all first reads why.
    let cases: Vec<Refusal> = vec![
        (
            "POST",
            "/api/catalog/bundles?activate=false&bogus=1",
            Some(TOKEN),
            vec![1u8; 20 << 20],
            400,
            "unknown field `bogus`",
        ),
        (
            "PUT",
            "/api/catalog/items/huge",
            Some(TOKEN),
            vec![b' '; 40 << 20],
            413,
            "larger than 32 MiB",
        ),
        (
            "POST",
            "/api/catalog/bundles",
            Some("wrong-token-0123456789"),
            vec![1u8; 20 << 20],
            401,
            "bearer token",
        ),
    ];
    for (method, path, token, body, status, needle) in cases {
        let (a, p, t) = (addr.clone(), path.to_string(), token.map(String::from));
        let got = tokio::task::spawn_blocking(move || {
            write_all_then_read(&a, method, &p, t.as_deref(), &body)
        })
        .await
        .expect("join");
        let (s, text) = got.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert_eq!(s, status, "{method} {path}: {text}");
        assert!(text.contains(needle), "{method} {path}: {text}");
    }

    // Error messages name files relative to the data folder, never where it lies.
    let dup = work.path().join("dup");
    bundle(&dup, "dup", 6, Embeddings::Inline, 3);
    replace_in(&dup.join("items.jsonl"), "dup-3", "dup-2");
    let (s, r) = staff_send(&d, Method::POST, "/api/catalog/bundles", Some(tar_gz(&dup))).await;
    assert_eq!(s, 422, "{r}");
    let text = r.to_string();
    let root = data.display().to_string();
    assert!(!text.contains(&root), "{text}");
    assert!(text.contains("catalog work/"), "{text}");
    let job = r["job"].as_str().expect("job");
    let (_, j) = staff_get(&d, &format!("/api/catalog/jobs/{job}")).await;
    assert!(!j.to_string().contains(&root), "{j}");
    assert!(d.terminate(WAIT).success(), "clean exit on SIGTERM");
}
