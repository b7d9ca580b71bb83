//! Shared by the integration tests: start the real `vitrine` binary, find its address, talk to it
//! over HTTP, stop it with SIGTERM.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vitrine"));
    c.current_dir(root());
    c
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

pub struct Daemon {
    pub child: Child,
    pub base: String,
    lines: Receiver<String>,
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
    /// Everything printed on stdout so far (the log goes there too).
    pub stdout: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Daemon {
    /// Starts `vitrine serve --listen 127.0.0.1:0` with extra args and waits until it listens.
    pub fn start(args: &[&str]) -> Daemon {
        Self::start_with(args, |_| {})
    }

    /// [`Self::start`], with `edit` applied to the command first (environment, limits).
    pub fn start_with(args: &[&str], edit: impl FnOnce(&mut Command)) -> Daemon {
        let mut cmd = bin();
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "warn,vitrine=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        edit(&mut cmd);
        let mut child = cmd.spawn().expect("start vitrine");
        let (tx, lines) = channel();
        let out = child.stdout.take().expect("stdout");
        let stdout = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let copy = stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(mut s) = copy.lock() {
                    s.push_str(&line);
                    s.push('\n');
                }
                let _ = tx.send(line);
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let err = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("[vitrine] {line}");
                sink.lock()
                    .map(|mut s| {
                        s.push_str(&line);
                        s.push('\n');
                    })
                    .ok();
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.split("listening on http://").nth(1) {
                        let addr = rest.split('/').next().expect("address");
                        return Daemon {
                            child,
                            base: format!("http://{addr}"),
                            lines,
                            stderr,
                            stdout,
                        };
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "vitrine did not start listening; stderr:\n{}",
                        stderr.lock().map(|s| s.clone()).unwrap_or_default()
                    );
                }
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Waits for the `vitrine ready` line.
    pub fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if line.contains("vitrine ready") {
                return;
            }
        }
        panic!(
            "vitrine did not become ready within {timeout:?}; stderr:\n{}",
            self.stderr_text()
        );
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The log (written to stdout) and stderr so far.
    pub fn log_text(&self) -> String {
        let out = self.stdout.lock().map(|s| s.clone()).unwrap_or_default();
        out + &self.stderr_text()
    }

    pub fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let resp = reqwest::blocking::Client::new()
            .get(self.url(path))
            .timeout(Duration::from_secs(10))
            .send()
            .expect("GET");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(serde_json::Value::Null))
    }

    /// Polls `path` until `pred` holds on its JSON, returning it.
    pub fn poll_json(
        &self,
        path: &str,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        let mut last = serde_json::Value::Null;
        while Instant::now() < deadline {
            let (_, v) = self.get_json(path);
            if pred(&v) {
                return v;
            }
            last = v;
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "{path} never satisfied the condition within {timeout:?}; last: {last}\nstderr:\n{}",
            self.stderr_text()
        );
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(mut self, timeout: Duration) -> ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("vitrine did not exit within {timeout:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
