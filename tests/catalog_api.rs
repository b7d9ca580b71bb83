//! The staff catalog flow over HTTP against the real daemon (replay camera, shipped models,
//! staff API on its own port): upload → job → activate → recommendations use the new items →
//! item edits → rollback; then every kind of bad request gets a clear 4xx and changes nothing.

mod common;

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use common::catalog::*;
use reqwest::Method;
use serde_json::json;
use vitrine::catalog::synth::Embeddings;

const WAIT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_upload_activate_edit_rollback_and_refusals() {
    let work = tempfile::tempdir().expect("tmp");
    let cfg = seeded_config(work.path(), 30, true, 4);
    let d = serve(&cfg, &[], WAIT);
    assert_ne!(
        d.staff(),
        d.addr,
        "the staff API listens on its own address"
    );

    // First start: the seed folder became version v0001.
    let (s, summary) = staff_get(&d, "/api/catalog").await;
    assert_eq!(
        (s, summary["version"].as_str(), summary["items"].as_u64()),
        (200, Some("v0001"), Some(30)),
        "{summary}"
    );
    wait_recommendations(&d, "v0001", "seed-", WAIT).await;

    // The token guards every staff route, and the staff API is not on the display's address.
    let c = client();
    let r = c
        .get(d.staff_url("/api/catalog/versions"))
        .send()
        .await
        .expect("req");
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let r = c
        .get(d.staff_url("/api/catalog"))
        .bearer_auth("wrong-token-0123456789")
        .send()
        .await
        .expect("req");
    assert_eq!(r.status().as_u16(), 401);
    let r = c
        .get(d.url("/api/catalog"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("req");
    assert_eq!(
        r.status().as_u16(),
        404,
        "no staff routes on the display address"
    );

    // Upload without activating; the job reports its stages and finishes.
    let b = work.path().join("new");
    bundle(&b, "new", 40, Embeddings::Npy, 2);
    let done = upload(&d, "activate=false&label=spring", tar_gz(&b), WAIT).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["version"], "v0002");
    assert_eq!(done["activated"], false);
    assert!(
        done["finished"].is_string() && done["started"].is_string(),
        "{done}"
    );
    let (active, stored) = versions(&d).await;
    assert_eq!((active.as_str(), stored.len()), ("v0001", 2));
    // Still serving the old catalog, and ready, while and after importing.
    let r = c.get(d.url("/readyz")).send().await.expect("readyz");
    assert_eq!(r.status().as_u16(), 200, "{:?}", r.text().await);
    wait_recommendations(&d, "v0001", "seed-", WAIT).await;

    // Activate: the pipeline picks the new snapshot up on its next frame.
    let (s, a) = activate(&d, "v0002").await;
    assert_eq!(
        (s, a["active"].as_str(), a["label"].as_str()),
        (200, Some("v0002"), Some("spring")),
        "{a}"
    );
    wait_recommendations(&d, "v0002", "new-", WAIT).await;

    // Single-item edits make new active versions.
    let img = std::fs::read(b.join("images/new-0.jpg")).expect("img");
    let emb = vitrine::catalog::synth::clustered_vectors(1, fingerprint().dim, 1, 77).remove(0);
    let put = json!({
        "name": "Added coat", "group": "top", "category": "Coat", "price": 99.5, "currency": "EUR",
        "embedding": emb, "image_base64": base64::engine::general_purpose::STANDARD.encode(&img),
    });
    let (s, e) = staff_send(
        &d,
        Method::PUT,
        "/api/catalog/items/new-extra",
        Some(put.to_string().into_bytes()),
    )
    .await;
    assert_eq!((s, e["active"].as_str()), (200, Some("v0003")), "{e}");
    let (s, it) = staff_get(&d, "/api/catalog/items/new-extra").await;
    assert_eq!((s, it["name"].as_str()), (200, Some("Added coat")), "{it}");
    let image = it["image"]
        .as_str()
        .expect("image")
        .trim_start_matches("images/")
        .to_string();
    let (s, e) = staff_send(&d, Method::DELETE, "/api/catalog/items/new-0", None).await;
    assert_eq!(
        (s, e["active"].as_str(), e["items"].as_u64()),
        (200, Some("v0004"), Some(40)),
        "{e}"
    );
    let (s, _) = staff_get(&d, "/api/catalog/items/new-0").await;
    assert_eq!(s, 404);
    let (_, ids) = {
        wait_recommendations(&d, "v0004", "new-", WAIT).await;
        shown(&d).await
    };
    assert!(
        !ids.contains(&"new-0".to_string()),
        "a removed item is never shown"
    );

    // Product images: cache headers, revalidation, no way out of the images folder.
    let r = c
        .get(d.url(&format!("/catalog/images/{image}")))
        .send()
        .await
        .expect("img");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    assert!(
        r.headers()["cache-control"]
            .to_str()
            .expect("cc")
            .contains("max-age")
    );
    let etag = r.headers()["etag"].clone();
    let r = c
        .get(d.url(&format!("/catalog/images/{image}")))
        .header("if-none-match", etag)
        .send()
        .await
        .expect("img");
    assert_eq!(r.status().as_u16(), 304);
    for bad in [
        "..%2F..%2Fversion.json",
        "..%2F..%2F..%2FACTIVE",
        "%2Fetc%2Fpasswd",
    ] {
        let r = c
            .get(d.url(&format!("/catalog/images/{bad}")))
            .send()
            .await
            .expect("img");
        assert!(
            matches!(r.status().as_u16(), 400 | 404),
            "{bad}: {}",
            r.status()
        );
    }

    // An images-only bundle: the import's own embedder session (on the import thread, never in
    // a handler) computes the vectors. Stored without activating, so history is unchanged.
    let body = bundle_tar_gz(work.path(), "img", 6, Embeddings::None, 9);
    let done = upload_inactive(&d, body, WAIT).await;
    assert_eq!(
        (done["state"].as_str(), done["version"].as_str()),
        (Some("succeeded"), Some("v0005")),
        "{done}"
    );

    // Roll back step by step to the seed catalog.
    for expect in ["v0003", "v0002", "v0001"] {
        let (s, r) = staff_send(&d, Method::POST, "/api/catalog/rollback", None).await;
        assert_eq!((s, r["active"].as_str()), (200, Some(expect)), "{r}");
    }
    wait_recommendations(&d, "v0001", "seed-", WAIT).await;
    let (s, r) = staff_send(&d, Method::POST, "/api/catalog/rollback", None).await;
    assert_eq!(s, 409, "nothing left to roll back to: {r}");

    // Every bad upload: a clear 4xx, and nothing changes.
    let before = versions(&d).await;
    let dim = fingerprint().dim;
    let variant = |name: &str, f: &dyn Fn(&Path)| -> Vec<u8> {
        let dir = work.path().join(name);
        bundle(&dir, name, 12, Embeddings::Inline, 5);
        f(&dir);
        tar_gz(&dir)
    };
    // The variant with line `i` of its items.jsonl rewritten.
    let line_edited = |name: &str, i: usize, f: &dyn Fn(String) -> String| {
        variant(name, &|dir| {
            let p = dir.join("items.jsonl");
            let text = std::fs::read_to_string(&p).expect("read");
            let mut lines: Vec<String> = text.lines().map(String::from).collect();
            lines[i] = f(std::mem::take(&mut lines[i]));
            std::fs::write(&p, lines.join("\n")).expect("write");
        })
    };
    let json_edited = |l: String, f: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value = serde_json::from_str(&l).expect("j");
        f(&mut v);
        v.to_string()
    };
    let good = variant("trunc", &|_| {});
    let bad: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "wrong size",
            line_edited("wsize", 3, &|l| {
                json_edited(l, &|v| v["embedding"] = json!(vec![0.1f32; dim / 2]))
            }),
            422,
            "embedding has",
        ),
        (
            "NaN",
            line_edited("nan", 2, &|l| {
                l.replacen("\"embedding\":[", "\"embedding\":[NaN,", 1)
            }),
            422,
            "NaN",
        ),
        (
            "duplicate ids",
            line_edited("dup", 5, &|l| l.replace("dup-5", "dup-4")),
            422,
            "duplicate id",
        ),
        (
            "missing field",
            line_edited("miss", 1, &|l| {
                json_edited(l, &|v| {
                    v.as_object_mut().expect("o").remove("price");
                })
            }),
            422,
            "missing field `price`",
        ),
        (
            "wrong embedder",
            variant("fp", &|d| {
                let zeros = "0".repeat(64);
                replace_in(&d.join("manifest.json"), &fingerprint().sha256, &zeros)
            }),
            422,
            "different embedder",
        ),
        (
            "truncated archive",
            good[..good.len() * 2 / 3].to_vec(),
            422,
            "truncated or corrupt",
        ),
        (
            "not an archive",
            b"hello, this is not a tarball at all".repeat(40),
            422,
            "truncated or corrupt",
        ),
        (
            "path traversal",
            raw_tar(&[("../../escape.txt", b"x")], false),
            422,
            "outside the bundle",
        ),
        (
            "absolute path",
            raw_tar(&[("/tmp/vitrine-escape.txt", b"x")], false),
            422,
            "outside the bundle",
        ),
        (
            "symlink",
            raw_tar(&[("manifest.json", b"")], true),
            422,
            "symbolic link",
        ),
        ("oversize", vec![0u8; 5 << 20], 413, "larger than the limit"),
        // An ordinary client writes the whole body before it reads: the server reads the refused
        // rest too, so it still gets the 413 and its explanation rather than a reset connection.
        (
            "oversize, written in full",
            vec![0u8; 5 << 20],
            413,
            "larger than the limit",
        ),
    ];
    for (what, body, status, needle) in bad {
        let (s, r) = if what == "oversize" {
            staff_post_raw(&d, "/api/catalog/bundles", body).await
        } else {
            staff_send(&d, Method::POST, "/api/catalog/bundles", Some(body)).await
        };
        assert_eq!(s, status, "{what}: {r}");
        let text = r.to_string();
        assert!(
            text.contains(needle),
            "{what}: the error should say '{needle}': {text}"
        );
        assert_eq!(versions(&d).await, before, "{what} changed the catalog");
    }
    assert!(!std::path::Path::new("/tmp/vitrine-escape.txt").exists());
    // Bad item edits too.
    let (s, r) = staff_send(
        &d,
        Method::PUT,
        "/api/catalog/items/x1",
        Some(br#"{"name":"No image","group":"top","price":1}"#.to_vec()),
    )
    .await;
    assert_eq!(s, 422, "{r}");
    assert!(r.to_string().contains("needs an image"), "{r}");
    let (s, _) = staff_send(
        &d,
        Method::DELETE,
        "/api/catalog/items/does-not-exist",
        None,
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = activate(&d, "v0999").await;
    assert_eq!(s, 404);
    assert_eq!(versions(&d).await, before);
    wait_recommendations(&d, "v0001", "seed-", WAIT).await;
    assert!(d.terminate(WAIT).success(), "clean exit on SIGTERM");
}

/// A tar whose entry names are written raw (the tar crate refuses to build hostile ones).
fn raw_tar(entries: &[(&str, &[u8])], symlink: bool) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(if symlink {
            tar::EntryType::Symlink
        } else {
            tar::EntryType::Regular
        });
        h.set_size(if symlink { 0 } else { data.len() as u64 });
        h.set_mode(0o644);
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        if symlink {
            h.set_link_name("/etc/passwd").expect("link");
        }
        h.set_cksum();
        b.append(&h, if symlink { &b""[..] } else { *data })
            .expect("append");
    }
    b.into_inner().expect("tar")
}
