//! The real box of the fleet bench: this binary's own `vitrine serve`, on a box config (its
//! models and camera) with the catalog, the channel and the listen address the bench gives it.
//! It follows the channel through its own nginx server block (same folder, own access log), so
//! the simulated fleet's request counts stay exact. The bench reads its `/metrics` every 250 ms:
//! frames processed (the frame rate before and during the roll-out) and `vitrine_channel_info`
//! (which version is active).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{FleetError, RealBox, fail};
use crate::config::Settings;

/// What the real box did during the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DaemonReport {
    pub config: String,
    /// Its poll interval (whole seconds, as `[catalog.channel]` takes it).
    pub poll_interval_s: u64,
    /// Seconds from the publish until the new version was active (`None`: not within the wait).
    pub to_active_s: Option<f64>,
    /// Seconds from the start of its download of the new bundle until the new version was
    /// active: download, size/SHA-256/signature checks, unpacking, import, swap.
    pub download_to_active_s: Option<f64>,
    /// Frames processed per second before the publish, and from the start of that download
    /// until the new version was active (at least 3 s: a frame either way is 3 % at 10 frames/s).
    pub fps_before: f64,
    pub fps_during: f64,
    /// `100 × (1 − during / before)`.
    pub fps_drop_percent: f64,
    /// Requests it made to the channel (its own access log), and the bundle bytes it was sent.
    pub requests: u64,
    pub bundle_bytes: u64,
}

/// The shortest span the frame rate during a roll-out is measured over.
const MIN_WINDOW: Duration = Duration::from_secs(3);

/// One `/metrics` reading.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    /// The same moment in seconds since the epoch, as nginx's log writes time.
    wall: f64,
    frames: f64,
    on_new: bool,
}

pub struct Daemon {
    child: Child,
    client: crate::bench::http::Daemon,
    config: PathBuf,
    /// Its folder: config, seed, data folder and `daemon.log` (its stderr).
    dir: PathBuf,
    pub poll_interval_s: u64,
    samples: Vec<Sample>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The box's config, from `config`: paths made absolute against its folder, port 0, no staff
/// API, `seed` as its first catalog, `data` as its data folder, and the channel at `url`.
pub fn box_config(
    config: &Path,
    seed: &Path,
    data: &Path,
    url: &str,
    public_key: &str,
    poll_interval_s: u64,
    jitter: f64,
) -> Result<toml::Table, FleetError> {
    let text = std::fs::read_to_string(config).map_err(fail(config.display()))?;
    let mut t: toml::Table = text
        .parse()
        .map_err(|e| FleetError(format!("{}: {e}", config.display())))?;
    let config = std::path::absolute(config).map_err(fail(config.display()))?;
    let base = config.parent().unwrap_or(Path::new("/"));
    // The config's own paths, which resolve against its folder and the copy is elsewhere.
    for (section, key) in [
        ("runtime", "onnxruntime"),
        ("runtime", "tensorrt_cache"),
        ("camera", "path"),
        ("detector", "model"),
        ("embedder", "model"),
        ("pose", "model"),
    ] {
        let entry = t.get_mut(section).and_then(|s| s.as_table_mut());
        let value = entry.and_then(|s| s.get_mut(key));
        if let Some(p) = value
            .as_ref()
            .and_then(|v| v.as_str())
            .map(|p| base.join(p))
        {
            *value.expect("just read") = p.display().to_string().into();
        }
    }
    let server = section(&mut t, "server");
    server.insert("listen".into(), "127.0.0.1:0".into());
    server.remove("staff_listen");
    let catalog = section(&mut t, "catalog");
    catalog.insert("path".into(), seed.display().to_string().into());
    catalog.insert("data_dir".into(), data.display().to_string().into());
    catalog.remove("token_env");
    catalog.remove("token_file");
    let mut channel = toml::Table::new();
    channel.insert("url".into(), url.into());
    channel.insert("public_keys".into(), vec![public_key.to_string()].into());
    channel.insert("poll_interval_s".into(), (poll_interval_s as i64).into());
    channel.insert("poll_jitter".into(), jitter.into());
    catalog.insert("channel".into(), channel.into());
    let appliance = section(&mut t, "appliance");
    appliance.insert("id".into(), "fleet-bench-daemon".into());
    appliance.insert("store".into(), "bench".into());
    Ok(t)
}

/// The config's `[name]` table, made if missing.
fn section<'a>(t: &'a mut toml::Table, name: &str) -> &'a mut toml::Table {
    t.entry(name)
        .or_insert_with(|| toml::Table::new().into())
        .as_table_mut()
        .expect("a config section is a table")
}

/// The embedder fingerprint and index parameters of the box `config` describes.
pub fn settings(config: &Path) -> Result<Settings, FleetError> {
    Settings::load_without_token(config).map_err(|e| FleetError(e.to_string()))
}

impl Daemon {
    /// Writes `table` to `dir/vitrine.toml` and starts `vitrine serve` on it; waits until it
    /// listens.
    pub fn start(table: &toml::Table, dir: &Path, real: &RealBox) -> Result<Self, FleetError> {
        let path = dir.join("vitrine.toml");
        let text = toml::to_string(table).map_err(|e| FleetError(e.to_string()))?;
        std::fs::write(&path, text).map_err(fail(path.display()))?;
        let log = std::fs::File::create(dir.join("daemon.log")).map_err(fail("daemon.log"))?;
        let mut child = Command::new(&real.binary)
            .args(["serve", "--config"])
            .arg(&path)
            .env("RUST_LOG", "warn,vitrine=info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(fail(format!("starting {} serve", real.binary.display())))?;
        let out = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let addr = line
                    .strip_prefix("vitrine listening on http://")
                    .and_then(|r| r.split('/').next());
                if let Some(a) = addr {
                    let _ = tx.send(a.to_string());
                }
            }
        });
        let poll_interval_s = table["catalog"]["channel"]["poll_interval_s"]
            .as_integer()
            .unwrap_or(1) as u64;
        let addr = rx.recv_timeout(Duration::from_secs(120)).map_err(|e| {
            let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
            let what = match e {
                std::sync::mpsc::RecvTimeoutError::Timeout => "did not listen within 120 s",
                std::sync::mpsc::RecvTimeoutError::Disconnected => "exited before listening",
            };
            FleetError(format!("the real box {what}; its log:\n{log}"))
        })?;
        let addr = addr
            .parse()
            .map_err(|e| FleetError(format!("the real box's address {addr}: {e}")))?;
        Ok(Self {
            child,
            client: crate::bench::http::Daemon::new(addr),
            config: real.config.clone(),
            dir: dir.into(),
            poll_interval_s,
            samples: Vec::new(),
        })
    }

    async fn metrics(&self) -> Option<String> {
        let got = tokio::time::timeout(Duration::from_secs(5), self.client.get("/metrics"));
        match got.await {
            Ok(Ok((200, body))) => String::from_utf8(body).ok(),
            _ => None,
        }
    }

    /// Reads `/metrics` once: frames processed, and whether `version` is active.
    pub async fn sample(&mut self, version: &str) -> Option<bool> {
        let text = self.metrics().await?;
        let frames = text.lines().find_map(|l| {
            l.strip_prefix("vitrine_frames_processed_total ")?
                .parse()
                .ok()
        })?;
        let active = format!("active=\"{version}\"");
        let on_new = text
            .lines()
            .any(|l| l.starts_with("vitrine_channel_info{") && l.contains(&active));
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.samples.push(Sample {
            at: Instant::now(),
            wall,
            frames,
            on_new,
        });
        Some(on_new)
    }

    /// Samples every 250 ms until `version` is active or `timeout` passes.
    pub async fn wait_active(
        &mut self,
        version: &str,
        timeout: Duration,
    ) -> Result<(), FleetError> {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if self.sample(version).await == Some(true) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(FleetError(format!(
            "the real box did not activate {version} within {timeout:?}; the end of its log:\n{}",
            self.log_tail(40)
        )))
    }

    /// Samples every 250 ms for [`MIN_WINDOW`] more, so a roll-out taken in a flash still has a
    /// window to measure the frame rate over.
    pub async fn settle(&mut self, version: &str) {
        let until = Instant::now() + MIN_WINDOW;
        while Instant::now() < until {
            self.sample(version).await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The last `n` lines of its log.
    fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The report: frame rate over `[from, published)` and from the start of the new bundle's
    /// download (nginx's log of its requests, `access_log`) until the new version was active.
    pub fn report(&self, from: Instant, published: Instant, access_log: &str) -> DaemonReport {
        let rate = |a: Option<&Sample>, b: Option<&Sample>| match (a, b) {
            (Some(a), Some(b)) if b.at > a.at => {
                (b.frames - a.frames) / (b.at - a.at).as_secs_f64()
            }
            _ => 0.0,
        };
        let first_after = |t: Instant| self.samples.iter().find(|s| s.at >= t);
        let last_before = |t: Instant| self.samples.iter().rev().find(|s| s.at <= t);
        let active = self.samples.iter().find(|s| s.at >= published && s.on_new);
        let bundles = bundle_requests(access_log);
        // The last bundle it fetched is the new version's (the first one's came before `from`).
        let download = bundles.last().map(|&(start, _)| start);
        let download_start = download.and_then(|w| self.samples.iter().rev().find(|s| s.wall <= w));
        let fps_before = rate(first_after(from), last_before(published));
        // A small bundle is taken in a fraction of a second: a window that short is a frame or
        // two either way, so it reaches at least MIN_WINDOW past the download's start.
        let until = download_start
            .zip(active)
            .map(|(d, a)| a.at.max(d.at + MIN_WINDOW));
        let fps_during = rate(download_start, until.and_then(first_after));
        DaemonReport {
            config: self.config.display().to_string(),
            poll_interval_s: self.poll_interval_s,
            to_active_s: active.map(|s| (s.at - published).as_secs_f64()),
            download_to_active_s: active.zip(download).map(|(a, w)| a.wall - w),
            fps_before,
            fps_during,
            fps_drop_percent: if fps_before > 0.0 {
                100.0 * (1.0 - fps_during / fps_before)
            } else {
                0.0
            },
            requests: access_log.lines().count() as u64,
            bundle_bytes: bundles.iter().map(|&(_, b)| b).sum(),
        }
    }
}

/// The bundle requests in a `fleet`-format access log: when each started (seconds since the
/// epoch: logged at its end, less its duration) and the bytes sent.
fn bundle_requests(log: &str) -> Vec<(f64, u64)> {
    log.lines()
        .filter(|l| l.contains(" /bundles/"))
        .filter_map(|l| {
            let (msec, rest) = l.split_once(' ')?;
            let mut tail = rest.rsplit(' ');
            let seconds: f64 = tail.next()?.parse().ok()?;
            let bytes: u64 = tail.next()?.parse().ok()?;
            Some((msec.parse::<f64>().ok()? - seconds, bytes))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_requests_start_at_their_end_less_their_duration() {
        let log = "100.500 \"GET /channel.json HTTP/1.1\" 200 900 0.001\n\
                   130.000 \"GET /bundles/ab.tar.gz HTTP/1.1\" 200 5000 2.500\n\
                   131.000 \"GET /bundles/cd.tar.gz HTTP/1.1\" 206 700 0.250\n";
        assert_eq!(bundle_requests(log), vec![(127.5, 5000), (130.75, 700)]);
    }
}
