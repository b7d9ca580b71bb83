//! A real `vitrine serve` subscribed to a test channel: a config derived from the demo one (this
//! checkout's models and replay frames, port 0, a seed catalog and data folder of the test's
//! own, `[appliance] id` and `[catalog.channel]` as the test says), started as a child process
//! whose log is collected, and the few questions the channel tests ask it over HTTP.
//! (A second daemon harness beside `tests/common`: folding it in is still to do.)

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vitrine::catalog::EmbedderFingerprint;
use vitrine::catalog::synth::{self, Embeddings};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The running embedder's fingerprint under the demo config, as the daemon computes it.
pub fn fingerprint() -> EmbedderFingerprint {
    let s = vitrine::config::Settings::load_without_token(&repo().join("vitrine.toml"))
        .expect("the demo config loads");
    EmbedderFingerprint::running(&s.embedder.spec, &s.similarity)
}

/// Writes a seed catalog folder of `n` items `seed-<i>`.
pub fn seed(dir: &Path, n: usize) -> PathBuf {
    synth::write_bundle(
        dir,
        "seed",
        n,
        n.min(8),
        &fingerprint(),
        Embeddings::Inline,
        "seed",
        7,
    )
    .expect("seed bundle");
    dir.into()
}

/// A config in `work/vitrine.toml`: the demo one with this checkout's models and frames, port 0,
/// `seed` and `data`, the box id, and `channel` as `[catalog.channel]`.
pub fn config(
    work: &Path,
    seed: &Path,
    data: &Path,
    box_id: &str,
    channel: toml::Table,
) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("vitrine.toml")).expect("vitrine.toml");
    let mut t: toml::Table = text.parse().expect("demo config parses");
    let abs = |p: &str| repo().join(p).display().to_string();
    let table = |t: &mut toml::Table, name: &str| -> toml::Table {
        t.get(name)
            .and_then(|v| v.as_table())
            .cloned()
            .unwrap_or_default()
    };
    let mut server = table(&mut t, "server");
    server.insert("listen".into(), "127.0.0.1:0".into());
    t.insert("server".into(), server.into());
    let mut camera = table(&mut t, "camera");
    camera.insert("path".into(), abs("models/demo/frames").into());
    t.insert("camera".into(), camera.into());
    for section in ["detector", "embedder", "pose"] {
        let mut s = table(&mut t, section);
        if let Some(m) = s.get("model").and_then(|m| m.as_str()).map(abs) {
            s.insert("model".into(), m.into());
            t.insert(section.into(), s.into());
        }
    }
    let mut catalog = table(&mut t, "catalog");
    catalog.insert("path".into(), seed.display().to_string().into());
    catalog.insert("data_dir".into(), data.display().to_string().into());
    catalog.insert("versions_kept".into(), 20.into());
    catalog.insert("channel".into(), channel.into());
    t.insert("catalog".into(), catalog.into());
    let mut appliance = toml::Table::new();
    appliance.insert("id".into(), box_id.into());
    appliance.insert("store".into(), "test-store".into());
    t.insert("appliance".into(), appliance.into());
    let p = work.join("vitrine.toml");
    std::fs::write(&p, toml::to_string(&t).expect("toml")).expect("write config");
    p
}

/// `[catalog.channel]` for `url`, trusting `key_file`, polling every second.
pub fn channel(url: &str, key_file: &Path) -> toml::Table {
    let mut c = toml::Table::new();
    c.insert("url".into(), url.into());
    c.insert(
        "public_keys".into(),
        toml::Value::Array(vec![key_file.display().to_string().into()]),
    );
    c.insert("poll_interval_s".into(), 1.into());
    c.insert("poll_jitter".into(), 0.2.into());
    c.insert("timeout_s".into(), 5.into());
    c
}

/// A box id whose roll-out bucket is below (`true`) or at/above (`false`) `percent`.
/// A box that follows the channel at `url` and is inside any roll-out: HQ's key (its public
/// half written to `w/hq.pub`), the running embedder's fingerprint, the box's data folder
/// (`w/data`) and its config, seeded with 20 items.
pub struct Following {
    pub key: crate::channel_support::publish::Key,
    pub fp: EmbedderFingerprint,
    pub data: PathBuf,
    pub cfg: PathBuf,
}

pub fn following(w: &Path, url: &str) -> Following {
    let key = crate::channel_support::publish::Key::generate();
    let seed = seed(&w.join("seed"), 20);
    let data = w.join("data");
    let pubkey = key.write_public(&w.join("hq.pub"));
    let cfg = config(w, &seed, &data, &box_id(true, 100), channel(url, &pubkey));
    Following {
        key,
        fp: fingerprint(),
        data,
        cfg,
    }
}

pub fn box_id(below: bool, percent: u8) -> String {
    use vitrine::catalog::channel::doc::rollout_bucket;
    (0..10_000)
        .map(|i| format!("test-box-{i}"))
        .find(|id| (rollout_bucket(id) < percent) == below)
        .expect("some box id falls on each side")
}

pub struct Daemon {
    child: Option<Child>,
    pub addr: String,
    lines: Arc<Mutex<Vec<String>>>,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    /// Starts `vitrine serve` in `cwd` with `env` and waits until it listens.
    pub fn start(config: &Path, cwd: &Path, env: &[(&str, &str)]) -> Daemon {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vitrine"));
        cmd.args(["serve", "--config"])
            .arg(config)
            .current_dir(cwd)
            .env("RUST_LOG", "info")
            .env_remove("VITRINE_CATALOG_PAUSE_AT")
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
            let (lines, log) = (lines.clone(), log.clone());
            std::thread::spawn(move || {
                for l in BufReader::new(out).lines().map_while(Result::ok) {
                    log.lock().expect("log").push_str(&format!("{l}\n"));
                    lines.lock().expect("lines").push(l);
                }
            });
        }
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(err).lines().map_while(Result::ok) {
                    log.lock().expect("log").push_str(&format!("{l}\n"));
                }
            });
        }
        let mut d = Daemon {
            child: Some(child),
            addr: String::new(),
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
            assert!(
                t.elapsed() < timeout,
                "no '{prefix}' within {timeout:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }

    /// SIGKILL: no shutdown code runs, as in a power cut.
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

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        let r = reqwest::blocking::Client::new()
            .get(self.url(path))
            .timeout(Duration::from_secs(30))
            .send()
            .unwrap_or_else(|e| panic!("GET {path}: {e}\nlog:\n{}", self.log()));
        let s = r.status().as_u16();
        (s, r.text().unwrap_or_default())
    }

    pub fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.get("/api/status").1).expect("status JSON")
    }

    pub fn metrics(&self) -> String {
        self.get("/metrics").1
    }

    /// The value of the sample `series` (name and labels as printed) in `/metrics`.
    pub fn metric(&self, series: &str) -> Option<f64> {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// Polls `/api/status` until `pred` holds on it; panics with the last status and the log.
    pub fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let t = Instant::now();
        loop {
            let v = self.status();
            if pred(&v) {
                return v;
            }
            assert!(
                t.elapsed() < timeout,
                "{what}: not within {timeout:?}; channel status: {}\nlog:\n{}",
                serde_json::to_string_pretty(&v["channel"]).unwrap_or_default(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until recommendations come from catalog `version` and show items, all starting with
    /// `prefix`: the live catalog serves (and serves nothing of another version).
    pub fn wait_serving(&self, version: &str, prefix: &str, timeout: Duration) {
        let t = Instant::now();
        loop {
            let (_, body) = self.get("/api/recommendations");
            let r: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let ids: Vec<String> = r["shoppers"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|s| s["garments"].as_array().cloned().unwrap_or_default())
                .flat_map(|g| g["items"].as_array().cloned().unwrap_or_default())
                .filter_map(|it| it["id"].as_str().map(str::to_string))
                .collect();
            let v = r["catalog_version"].as_str().unwrap_or_default();
            if v == version && !ids.is_empty() {
                assert!(
                    ids.iter().all(|i| i.starts_with(prefix)),
                    "catalog {version} shows items outside it: {ids:?}"
                );
                return;
            }
            assert!(
                t.elapsed() < timeout,
                "no recommendations from catalog {version} within {timeout:?} (last: {v}, {ids:?})\nlog:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
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
