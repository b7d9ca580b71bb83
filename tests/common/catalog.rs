//! The catalog tests' layer on the harness: a config derived from the demo one with its own seed
//! catalog and data folder, the daemon started with the staff token, synthetic bundles made for
//! the running embedder, and a small staff HTTP client (uploads, jobs, versions, what the display
//! is shown).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vitrine::catalog::items::EmbedderFingerprint;
use vitrine::catalog::synth::{self, Embeddings};

pub use super::Daemon;
use super::{config_in, root, serves, shown_in};

pub const TOKEN: &str = "test-staff-token-0123456789abcdef";
pub const TOKEN_ENV: &str = "VITRINE_TEST_STAFF_TOKEN";

/// The running embedder's fingerprint under the demo config, as the daemon computes it.
pub fn fingerprint() -> EmbedderFingerprint {
    let s = vitrine::config::Settings::load_without_token(&root().join("vitrine.toml"))
        .expect("the demo config (vitrine.toml) must load");
    EmbedderFingerprint::running(&s.embedder.spec, &s.similarity)
}

/// Writes a bundle folder of `n` items named `<prefix>-<i>`.
pub fn bundle(dir: &Path, prefix: &str, n: usize, emb: Embeddings, seed: u64) -> Vec<Vec<f32>> {
    synth::write_bundle(dir, prefix, n, n.min(8), &fingerprint(), emb, prefix, seed)
        .expect("bundle")
}

/// Packs a bundle folder as `<dir>.tar.gz` beside it and returns the archive's bytes.
pub fn tar_gz(dir: &Path) -> Vec<u8> {
    let out = dir.with_extension("tar.gz");
    vitrine::catalog::bundle::pack_tar_gz(dir, &out).expect("pack");
    std::fs::read(out).expect("read archive")
}

/// A bundle of `n` items `<prefix>-<i>` in `work/<prefix>`, packed: an upload's body.
pub fn bundle_tar_gz(work: &Path, prefix: &str, n: usize, emb: Embeddings, seed: u64) -> Vec<u8> {
    let dir = work.join(prefix);
    bundle(&dir, prefix, n, emb, seed);
    tar_gz(&dir)
}

/// Rewrites a text file of a bundle, every occurrence of `from` becoming `to` (one id made
/// another's duplicate, say).
pub fn replace_in(file: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(file).expect("read a bundle file");
    std::fs::write(file, text.replace(from, to)).expect("write a bundle file");
}

/// Sets `[table] key = value` in a config file.
pub fn set_key(cfg: &Path, table: &str, key: &str, value: toml::Value) {
    let mut t: toml::Table = std::fs::read_to_string(cfg)
        .expect("read config")
        .parse()
        .expect("config parses");
    t.entry(table)
        .or_insert_with(|| toml::Value::Table(Default::default()))
        .as_table_mut()
        .expect("a table")
        .insert(key.into(), value);
    std::fs::write(cfg, toml::to_string(&t).expect("toml")).expect("write config");
}

/// A config from the demo one ([`config_in`]): port 0, the given seed folder and data folder,
/// the staff token from [`TOKEN_ENV`], 20 versions kept.
pub fn config(dir: &Path, seed: &Path, data: &Path, staff_apart: bool, upload_mb: u64) -> PathBuf {
    let p = config_in(dir, |t| t);
    set_key(&p, "server", "listen", "127.0.0.1:0".into());
    if staff_apart {
        set_key(&p, "server", "staff_listen", "127.0.0.1:0".into());
    }
    let path = |p: &Path| toml::Value::from(p.display().to_string());
    set_key(&p, "catalog", "path", path(seed));
    set_key(&p, "catalog", "data_dir", path(data));
    set_key(&p, "catalog", "token_env", TOKEN_ENV.into());
    set_key(&p, "catalog", "upload_limit_mb", (upload_mb as i64).into());
    set_key(&p, "catalog", "versions_kept", 20.into());
    p
}

/// [`config`] in `work`, seeded with `items` synthetic items `seed-<i>` (folder `work/seed`),
/// its data folder at `work/data`.
pub fn seeded_config(work: &Path, items: usize, staff_apart: bool, upload_mb: u64) -> PathBuf {
    let seed = work.join("seed");
    bundle(&seed, "seed", items, Embeddings::Inline, 1);
    config(work, &seed, &work.join("data"), staff_apart, upload_mb)
}

/// `vitrine serve --config CFG` with the staff token and `env` set, once it is ready.
pub fn serve(cfg: &Path, env: &[(&str, &str)], ready_within: Duration) -> Daemon {
    let d = Daemon::start_with(&["--config", cfg.to_str().expect("utf8 path")], |c| {
        c.env(TOKEN_ENV, TOKEN).envs(env.iter().copied());
    });
    d.wait_ready(ready_within);
    d
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client")
}

/// GET with the staff token; returns (status, JSON body).
pub async fn staff_get(d: &Daemon, path: &str) -> (u16, serde_json::Value) {
    staff_send(d, reqwest::Method::GET, path, None).await
}

pub async fn staff_send(
    d: &Daemon,
    method: reqwest::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> (u16, serde_json::Value) {
    let mut rq = client()
        .request(method, d.staff_url(path))
        .bearer_auth(TOKEN);
    if let Some(b) = body {
        rq = rq.body(b);
    }
    let r = rq.send().await.expect("request");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// `POST /api/catalog/versions/ID/activate` (`id` as it goes in the path, escapes and all).
pub async fn activate(d: &Daemon, id: &str) -> (u16, serde_json::Value) {
    let path = format!("/api/catalog/versions/{id}/activate");
    staff_send(d, reqwest::Method::POST, &path, None).await
}

/// The active version and every stored one, as the staff API lists them.
pub async fn versions(d: &Daemon) -> (String, Vec<String>) {
    let (s, v) = staff_get(d, "/api/catalog/versions").await;
    assert_eq!(s, 200, "{v}");
    let ids = v["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| x["id"].as_str().unwrap_or_default().to_string())
        .collect();
    (v["active"].as_str().unwrap_or_default().to_string(), ids)
}

/// Uploads a bundle to `/api/catalog/bundles?QUERY` (`activate=false`, `label=…`; none: the
/// defaults), which must start an import job (202), and waits for the job; returns the finished
/// job.
pub async fn upload(
    d: &Daemon,
    query: &str,
    body: Vec<u8>,
    timeout: Duration,
) -> serde_json::Value {
    let path = match query {
        "" => "/api/catalog/bundles".to_string(),
        q => format!("/api/catalog/bundles?{q}"),
    };
    let (s, j) = staff_send(d, reqwest::Method::POST, &path, Some(body)).await;
    assert_eq!(s, 202, "{j}");
    assert_eq!(j["job"]["kind"], "import", "{j}");
    wait_job(d, j["job"]["id"].as_str().expect("job id"), timeout).await
}

/// Uploads a bundle without activating it and waits for its job; returns the finished job.
pub async fn upload_inactive(d: &Daemon, body: Vec<u8>, timeout: Duration) -> serde_json::Value {
    upload(d, "activate=false", body, timeout).await
}

/// Polls a job until it is no longer running; returns its last status.
pub async fn wait_job(d: &Daemon, id: &str, timeout: Duration) -> serde_json::Value {
    let t = Instant::now();
    loop {
        let (s, j) = staff_get(d, &format!("/api/catalog/jobs/{id}")).await;
        assert_eq!(s, 200, "job {id}: {j}");
        if j["state"] != "running" {
            return j;
        }
        assert!(t.elapsed() < timeout, "job {id} still running: {j}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The ids of every item shown in the newest recommendations, and their catalog version.
pub async fn shown(d: &Daemon) -> (String, Vec<String>) {
    let r: serde_json::Value = client()
        .get(d.url("/api/recommendations"))
        .send()
        .await
        .expect("recommendations")
        .json()
        .await
        .expect("json");
    shown_in(&r)
}

/// Waits until recommendations come from `version` and show at least one item, all with ids
/// starting with `prefix`.
pub async fn wait_recommendations(
    d: &Daemon,
    version: &str,
    prefix: &str,
    timeout: Duration,
) -> Vec<String> {
    let t = Instant::now();
    loop {
        let (v, ids) = shown(d).await;
        if serves(version, prefix, &v, &ids) {
            return ids;
        }
        assert!(
            t.elapsed() < timeout,
            "no recommendations from catalog {version} within {timeout:?} (last: {v}, {ids:?})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// POSTs a body over a raw connection, reading the response while the body is still being
/// written: a server that refuses an oversize upload answers 413 and stops reading, and an HTTP
/// client that insists on finishing the write only sees a broken pipe.
pub async fn staff_post_raw(d: &Daemon, path: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(d.staff())
        .await
        .expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    // The write half is handed back, not dropped: dropping it would half-close the connection,
    // which the server takes as the client going away before its answer.
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(head.as_bytes()).await;
        let _ = wr.write_all(&body).await;
        wr
    });
    let mut buf = Vec::new();
    // A reset after the response arrived is expected; what was read stays in `buf`.
    let _ = tokio::time::timeout(Duration::from_secs(30), rd.read_to_end(&mut buf)).await;
    writer.abort();
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let json = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| {
            let b = b.trim();
            // Tolerate a chunked body: the JSON object is between the first '{' and the last '}'.
            let (i, j) = (b.find('{')?, b.rfind('}')?);
            serde_json::from_str(&b[i..=j]).ok()
        })
        .unwrap_or(serde_json::Value::Null);
    (status, json)
}

/// The data folder's versions as written on disk: the active id, and every stored version
/// (each with its `version.json`, i.e. complete). Panics on leftovers of a half-written version
/// that a start did not sweep.
pub fn versions_on_disk(data: &Path) -> (String, Vec<String>) {
    let active: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("ACTIVE")).expect("ACTIVE"))
            .expect("ACTIVE json");
    let mut ids = Vec::new();
    for e in std::fs::read_dir(data.join("versions"))
        .expect("versions")
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        assert!(
            e.path().join("version.json").is_file(),
            "version {name} is incomplete"
        );
        ids.push(name);
    }
    ids.sort();
    (
        active["active"].as_str().unwrap_or_default().to_string(),
        ids,
    )
}

/// The `source` a stored version records.
pub fn version_source(data: &Path, id: &str) -> String {
    let v: serde_json::Value = serde_json::from_slice(
        &std::fs::read(data.join("versions").join(id).join("version.json")).expect("version.json"),
    )
    .expect("version json");
    v["source"].as_str().unwrap_or_default().to_string()
}

/// Hidden entries in the data folder's `versions/`: a version being written (`.tmp-…`) or
/// deleted. None may outlive a start.
pub fn half_written(data: &Path) -> Vec<String> {
    std::fs::read_dir(data.join("versions"))
        .expect("versions")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}
