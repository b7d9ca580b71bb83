//! The one harness of the integration tests: start the real `vitrine` binary, find its
//! addresses, wait for what it prints, talk to it over HTTP, stop it with SIGTERM (or SIGKILL, as
//! a power cut). Configs are the demo one with paths pointing back at this checkout.
//! [`catalog`] layers the staff catalog helpers (token, synthetic bundles, staff client) on it.
#![allow(dead_code)]

pub mod catalog;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vitrine"));
    c.current_dir(root());
    c
}

/// A fixture of the evaluation tests, `tests/data/eval/NAME`.
pub fn eval_data(name: &str) -> PathBuf {
    root().join("tests/data/eval").join(name)
}

/// A path as an argument list takes it.
pub fn utf8(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

/// A JSON file, parsed; the path named if it cannot be read.
pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A JSON array of numbers (a box, an embedding), every element a number.
pub fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_f64().expect("a number"))
        .collect()
}

/// Asserts a finished run succeeded; the failure says `what` and shows the run's stderr.
pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `vitrine ARGS…` to its end: whether it succeeded, its stdout, its stderr.
pub fn vitrine(args: &[&str]) -> (bool, String, String) {
    let out = bin().args(args).output().expect("runs vitrine");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const LISTENING: &str = "vitrine listening on http://";
const STAFF_LISTENING: &str = "vitrine staff API listening on http://";

/// Everything the daemon printed. Stdout is kept line by line so a wait can find a line that
/// came before it was asked for (the log goes to stdout too, between the markers).
#[derive(Default)]
struct Printed {
    stdout: Mutex<Vec<String>>,
    stderr: Mutex<String>,
    /// Stdout reached its end: the daemon exited (or closed it), no line is coming.
    ended: AtomicBool,
}

/// A running `vitrine serve`; killed on drop, so a failing test leaves no daemon behind.
pub struct Daemon {
    child: Child,
    /// The display's `host:port`.
    pub addr: String,
    printed: Arc<Printed>,
}

impl Daemon {
    /// Starts `vitrine serve --listen 127.0.0.1:0 ARGS…` and waits until it listens.
    pub fn start(args: &[&str]) -> Daemon {
        Self::start_with(args, |_| {})
    }

    /// [`Self::start`], with `edit` applied to the command first (environment, limits).
    pub fn start_with(args: &[&str], edit: impl FnOnce(&mut Command)) -> Daemon {
        let mut all = vec!["--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        Self::serve(&all, edit)
    }

    /// Starts `vitrine serve --config CONFIG` in `cwd` with `env`, as a box in the field runs:
    /// the whole log at info (a test may look for what any crate printed) and no crash-test
    /// pause inherited from the test's own environment. Waits until it listens.
    pub fn with_config(config: &Path, cwd: &Path, env: &[(&str, &str)]) -> Daemon {
        Self::serve(&["--config", utf8(config)], |c| {
            c.current_dir(cwd)
                .env("RUST_LOG", "info")
                .env_remove("VITRINE_CATALOG_PAUSE_AT")
                .envs(env.iter().copied());
        })
    }

    /// Starts `vitrine serve ARGS…` as given (a restart names its address) and waits until it
    /// listens.
    pub fn serve(args: &[&str], edit: impl FnOnce(&mut Command)) -> Daemon {
        let mut cmd = bin();
        cmd.arg("serve")
            .args(args)
            .env("RUST_LOG", "warn,vitrine=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        edit(&mut cmd);
        let mut child = cmd.spawn().expect("start vitrine");
        let printed = Arc::new(Printed::default());
        let out = child.stdout.take().expect("stdout");
        let sink = printed.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(mut lines) = sink.stdout.lock() {
                    lines.push(line);
                }
            }
            sink.ended.store(true, Ordering::Release);
        });
        let err = child.stderr.take().expect("stderr");
        let sink = printed.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("[vitrine] {line}");
                if let Ok(mut s) = sink.stderr.lock() {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        });
        let mut d = Daemon {
            child,
            addr: String::new(),
            printed,
        };
        d.addr = address(&d.wait_line(LISTENING, Duration::from_secs(120)), LISTENING);
        d
    }

    /// The first stdout line starting with `prefix` printed so far.
    pub fn find_line(&self, prefix: &str) -> Option<String> {
        let lines = self.printed.stdout.lock().ok()?;
        lines.iter().find(|l| l.starts_with(prefix)).cloned()
    }

    /// Waits for a stdout line starting with `prefix` (printed before or after the call);
    /// panics with the log when the daemon exits or the time is up first.
    pub fn wait_line(&self, prefix: &str, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            // Read before looking, so a line printed just before the end is still found.
            let ended = self.printed.ended.load(Ordering::Acquire);
            if let Some(l) = self.find_line(prefix) {
                return l;
            }
            if ended {
                panic!(
                    "vitrine exited before printing '{prefix}'; log:\n{}",
                    self.log()
                );
            }
            if start.elapsed() > timeout {
                panic!("no '{prefix}' within {timeout:?}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the `vitrine ready` line.
    pub fn wait_ready(&self, timeout: Duration) {
        self.wait_line("vitrine ready", timeout);
    }

    /// The staff API's `host:port`: its own address when `server.staff_listen` gives it one,
    /// else the display's. Looked up when asked, as the daemon may print the two addresses in
    /// either order; ask once it is ready.
    pub fn staff(&self) -> String {
        self.find_line(STAFF_LISTENING)
            .map_or_else(|| self.addr.clone(), |l| address(&l, STAFF_LISTENING))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn staff_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.staff())
    }

    /// Everything printed so far: stdout (the log and the markers), then stderr.
    pub fn log(&self) -> String {
        let mut text = self
            .printed
            .stdout
            .lock()
            .map(|l| l.join("\n"))
            .unwrap_or_default();
        text.push('\n');
        text + &self
            .printed
            .stderr
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// GET `path`: its status and body; panics with the log if the daemon does not answer.
    pub fn get(&self, path: &str) -> (u16, String) {
        let r = reqwest::blocking::Client::new()
            .get(self.url(path))
            .timeout(Duration::from_secs(30))
            .send()
            .unwrap_or_else(|e| panic!("GET {path}: {e}\nlog:\n{}", self.log()));
        let status = r.status().as_u16();
        (status, r.text().unwrap_or_default())
    }

    /// GET `path` as JSON (`Null` when the body is not JSON).
    pub fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let (status, body) = self.get(path);
        (status, serde_json::from_str(&body).unwrap_or_default())
    }

    /// Polls `path` until `pred` holds on its JSON, returning it.
    pub fn poll_json(
        &self,
        path: &str,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        self.poll(path, path, timeout, pred, |last| last.to_string())
    }

    /// `/api/status`.
    pub fn status(&self) -> serde_json::Value {
        let (code, v) = self.get_json("/api/status");
        assert_eq!(code, 200, "/api/status: {v}\nlog:\n{}", self.log());
        v
    }

    /// Polls `/api/status` until `pred` holds on it; a failure says `what` and shows the last
    /// channel status and the log.
    pub fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        self.poll("/api/status", what, timeout, pred, |last| {
            format!(
                "channel status: {}",
                serde_json::to_string_pretty(&last["channel"]).unwrap_or_default()
            )
        })
    }

    /// Polls `path` until `pred` holds; past `timeout` panics naming `what`, with `shown(last)`
    /// and the log.
    fn poll(
        &self,
        path: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
        shown: impl Fn(&serde_json::Value) -> String,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (_, v) = self.get_json(path);
            if pred(&v) {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "{what}: not within {timeout:?}; last {}\nlog:\n{}",
                    shown(&v),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `/metrics`, as text.
    pub fn metrics(&self) -> String {
        self.get("/metrics").1
    }

    /// The value of the sample `series` (name and labels as printed) in `/metrics`.
    pub fn metric(&self, series: &str) -> Option<f64> {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// The catalog version of the newest recommendations and the ids of every item they show.
    pub fn shown(&self) -> (String, Vec<String>) {
        shown_in(&self.get_json("/api/recommendations").1)
    }

    /// Waits until recommendations come from catalog `version` and show items, all starting with
    /// `prefix`: the live catalog serves (and serves nothing of another version).
    pub fn wait_serving(&self, version: &str, prefix: &str, timeout: Duration) -> Vec<String> {
        let t = Instant::now();
        loop {
            let (v, ids) = self.shown();
            if serves(version, prefix, &v, &ids) {
                return ids;
            }
            assert!(
                t.elapsed() < timeout,
                "no recommendations from catalog {version} within {timeout:?} (last: {v}, {ids:?})\nlog:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The daemon's resident memory, from /proc.
    pub fn rss_mib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
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

    /// SIGTERM, as systemd stops the service.
    pub fn sigterm(&self) {
        // SAFETY: signalling our own child, not yet reaped (waiting takes `self`), by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }

    /// Waits for the exit until `bound` after `since` (when the signal went); panics with the
    /// log past it.
    pub fn wait_exit(mut self, since: Instant, bound: Duration) -> ExitStatus {
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if since.elapsed() > bound {
                panic!(
                    "vitrine did not exit within {bound:?} of SIGTERM; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then waits (at most `bound`) for the exit.
    pub fn terminate(self, bound: Duration) -> ExitStatus {
        let sent = Instant::now();
        self.sigterm();
        self.wait_exit(sent, bound)
    }

    /// SIGTERM, and waits for the exit as long as systemd would (a minute) before failing.
    pub fn stop(self) {
        self.terminate(Duration::from_secs(60));
    }

    /// SIGKILL: no shutdown code runs, like a power cut for the process.
    pub fn kill(self) {
        // Drop kills and reaps.
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The catalog version of a `/api/recommendations` answer and the ids of every item it shows.
pub fn shown_in(r: &serde_json::Value) -> (String, Vec<String>) {
    let ids = r["shoppers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["garments"].as_array().into_iter().flatten())
        .flat_map(|g| g["items"].as_array().into_iter().flatten())
        .map(|it| it["id"].as_str().unwrap_or_default().to_string())
        .collect();
    let version = r["catalog_version"].as_str().unwrap_or_default();
    (version.to_string(), ids)
}

/// Whether what is shown (`shown`, `ids`) comes from catalog `version` and has items; panics if
/// that version shows an item whose id does not start with `prefix`.
pub fn serves(version: &str, prefix: &str, shown: &str, ids: &[String]) -> bool {
    if shown != version || ids.is_empty() {
        return false;
    }
    assert!(
        ids.iter().all(|i| i.starts_with(prefix)),
        "catalog {version} shows items outside it: {ids:?}"
    );
    true
}

/// The `host:port` in a `… listening on http://HOST:PORT/…` line.
fn address(line: &str, prefix: &str) -> String {
    line.trim_start_matches(prefix)
        .split('/')
        .next()
        .expect("an address")
        .to_string()
}

/// The demo catalog's items, in the order `catalog/demo/items.jsonl` lists them.
pub fn demo_items() -> Vec<serde_json::Value> {
    std::fs::read_to_string(root().join("catalog/demo/items.jsonl"))
        .expect("demo catalog")
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The demo catalog's item ids.
pub fn demo_ids() -> std::collections::HashSet<String> {
    demo_items()
        .iter()
        .filter_map(|v| v["id"].as_str().map(String::from))
        .collect()
}

/// Copies the demo config into `dir` with its relative paths pointing back at the repository,
/// applying `edit` to the TOML text.
pub fn config_in(dir: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    let text = std::fs::read_to_string(root().join("vitrine.toml")).expect("demo config");
    let r = root();
    let text = text
        .replace(
            "path = \"models/",
            &format!("path = \"{}/models/", r.display()),
        )
        .replace(
            "model = \"models/",
            &format!("model = \"{}/models/", r.display()),
        )
        .replace(
            "path = \"catalog/",
            &format!("path = \"{}/catalog/", r.display()),
        );
    let p = dir.join("vitrine.toml");
    std::fs::write(&p, edit(text)).expect("write config");
    p
}

/// [`config_in`] with the replay camera reading `frames`, a folder the test fills (and empties)
/// instead of the demo footage.
pub fn config_with_frames(dir: &Path, frames: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    config_in(dir, |t| {
        edit(t.replace(
            &format!("{}/models/demo/frames", root().display()),
            &frames.display().to_string(),
        ))
    })
}

/// Copies the first `n` frames of the demo footage into `dir/frames` and returns that folder.
pub fn demo_frames(dir: &Path, n: usize) -> PathBuf {
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames).expect("mkdir frames");
    for i in 0..n {
        let name = format!("vtest_{i:04}.jpg");
        std::fs::copy(
            root().join("models/demo/frames").join(&name),
            frames.join(&name),
        )
        .expect("copy a demo frame");
    }
    frames
}
