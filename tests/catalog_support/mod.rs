//! Shared by the catalog integration tests: a real `vitrine serve` on port 0 with the replay
//! camera and the shipped models, a config derived from the demo one, synthetic bundles made
//! for the running embedder, and a small staff HTTP client.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vitrine::catalog::items::EmbedderFingerprint;
use vitrine::catalog::synth::{self, Embeddings};

pub const TOKEN: &str = "test-staff-token-0123456789abcdef";
pub const TOKEN_ENV: &str = "VITRINE_TEST_STAFF_TOKEN";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The running embedder's fingerprint (with the default `[similarity]` recipe), read from its
/// model config like the daemon does.
pub fn fingerprint() -> EmbedderFingerprint {
    let spec = vitrine::config::model::ModelSpec::embedder(
        &repo().join("models/efficientnet_lite0_int8.toml"),
    )
    .expect("the shipped embedder config (models/efficientnet_lite0_int8.toml) must load");
    let recipe = vitrine::vision::fusion::RawSimilarity::default()
        .validate()
        .expect("the default [similarity] is valid");
    EmbedderFingerprint::running(&spec, &recipe)
}

/// Writes a bundle folder of `n` items named `<prefix>-<i>`.
pub fn bundle(dir: &Path, prefix: &str, n: usize, emb: Embeddings, seed: u64) -> Vec<Vec<f32>> {
    synth::write_bundle(dir, prefix, n, n.min(8), &fingerprint(), emb, prefix, seed)
        .expect("bundle")
}

pub fn tar_gz(dir: &Path, out: &Path) -> Vec<u8> {
    vitrine::catalog::bundle::pack_tar_gz(dir, out).expect("pack");
    std::fs::read(out).expect("read archive")
}

/// A config from the demo one: models and replay frames of this checkout, port 0, the given
/// seed and data folder, the staff token from [`TOKEN_ENV`].
pub fn config(dir: &Path, seed: &Path, data: &Path, staff_apart: bool, upload_mb: u64) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("vitrine.toml")).expect("vitrine.toml");
    let mut t: toml::Table = text.parse().expect("demo config parses");
    let abs = |p: &str| repo().join(p).display().to_string();
    let set = |t: &mut toml::Table, table: &str, key: &str, v: toml::Value| {
        t.entry(table)
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .expect("table")
            .insert(key.into(), v);
    };
    set(&mut t, "server", "listen", "127.0.0.1:0".into());
    if staff_apart {
        set(&mut t, "server", "staff_listen", "127.0.0.1:0".into());
    }
    set(&mut t, "camera", "path", abs("models/demo/frames").into());
    for section in ["detector", "embedder", "pose"] {
        let Some(model) = t.get(section).and_then(|s| s["model"].as_str()) else {
            continue;
        };
        let model = abs(model);
        set(&mut t, section, "model", model.into());
    }
    set(&mut t, "catalog", "path", seed.display().to_string().into());
    set(
        &mut t,
        "catalog",
        "data_dir",
        data.display().to_string().into(),
    );
    set(&mut t, "catalog", "token_env", TOKEN_ENV.into());
    set(
        &mut t,
        "catalog",
        "upload_limit_mb",
        (upload_mb as i64).into(),
    );
    set(&mut t, "catalog", "versions_kept", 20.into());
    let p = dir.join("vitrine.toml");
    std::fs::write(&p, toml::to_string(&t).expect("toml")).expect("write config");
    p
}

pub struct Daemon {
    child: Option<Child>,
    pub addr: String,
    pub staff: String,
    lines: Arc<Mutex<Vec<String>>>,
    pub log: Arc<Mutex<String>>,
}

impl Daemon {
    /// Starts `vitrine serve` and waits until it listens.
    pub fn start(config: &Path, env: &[(&str, &str)]) -> Daemon {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vitrine"));
        cmd.args(["serve", "--config"])
            .arg(config)
            .env(TOKEN_ENV, TOKEN)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start vitrine");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(out).lines().map_while(Result::ok) {
                    lines.lock().expect("lines").push(l);
                }
            });
        }
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(err).lines().map_while(Result::ok) {
                    let mut g = log.lock().expect("log");
                    g.push_str(&l);
                    g.push('\n');
                }
            });
        }
        let mut d = Daemon {
            child: Some(child),
            addr: String::new(),
            staff: String::new(),
            lines,
            log,
        };
        let l = d.wait_line("vitrine listening on http://", Duration::from_secs(60));
        d.addr = l
            .trim_start_matches("vitrine listening on http://")
            .split('/')
            .next()
            .expect("addr")
            .to_string();
        d.staff = match d.find_line("vitrine staff API listening on http://") {
            Some(l) => l
                .trim_start_matches("vitrine staff API listening on http://")
                .split('/')
                .next()
                .expect("staff addr")
                .to_string(),
            None => d.addr.clone(),
        };
        d
    }

    pub fn find_line(&self, prefix: &str) -> Option<String> {
        self.lines
            .lock()
            .expect("lines")
            .iter()
            .find(|l| l.starts_with(prefix))
            .cloned()
    }

    /// Waits for a stdout line starting with `prefix`; panics with the daemon's log on timeout.
    pub fn wait_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let t = Instant::now();
        loop {
            if let Some(l) = self.find_line(prefix) {
                return l;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "vitrine exited ({status}) before printing '{prefix}'; log:\n{}",
                    self.log()
                );
            }
            if t.elapsed() > timeout {
                panic!("no '{prefix}' within {timeout:?}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }

    /// SIGKILL: no shutdown code runs, like a power cut for the process.
    pub fn kill(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait.
    pub fn stop(mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child by its pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }

    /// The daemon's resident memory, from /proc.
    pub fn rss_mib(&self) -> u64 {
        let pid = self.child.as_ref().map_or(0, Child::id);
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))?
                    .split_whitespace()
                    .nth(1)?
                    .parse::<u64>()
                    .ok()
            })
            .map_or(0, |kib| kib >> 10)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn staff_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.staff)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client")
}

/// GET with the staff token; returns (status, JSON body).
pub async fn staff_get(d: &Daemon, path: &str) -> (u16, serde_json::Value) {
    let r = client()
        .get(d.staff_url(path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("request");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(serde_json::Value::Null))
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

/// Polls a job until it is no longer running; returns its last status.
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

/// Uploads a bundle without activating it and waits for its job; returns the finished job.
pub async fn upload_inactive(d: &Daemon, body: Vec<u8>, timeout: Duration) -> serde_json::Value {
    let (s, j) = staff_send(
        d,
        reqwest::Method::POST,
        "/api/catalog/bundles?activate=false",
        Some(body),
    )
    .await;
    assert_eq!(s, 202, "{j}");
    wait_job(d, j["job"]["id"].as_str().expect("job id"), timeout).await
}

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
    let mut ids = Vec::new();
    for s in r["shoppers"].as_array().into_iter().flatten() {
        for g in s["garments"].as_array().into_iter().flatten() {
            for it in g["items"].as_array().into_iter().flatten() {
                ids.push(it["id"].as_str().unwrap_or_default().to_string());
            }
        }
    }
    (
        r["catalog_version"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        ids,
    )
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
        if v == version && !ids.is_empty() {
            assert!(
                ids.iter().all(|i| i.starts_with(prefix)),
                "catalog {version} shows items outside it: {ids:?}"
            );
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
    let stream = tokio::net::TcpStream::connect(d.staff.to_string())
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
