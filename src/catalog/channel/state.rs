//! What a box remembers about its channel, on disk and in memory.
//!
//! - [`Persisted`] (`<data>/channel/state.json`, written durably): the highest sequence accepted,
//!   so a replayed old document is refused after a restart too; the bundle last taken, so an
//!   unchanged offer is not imported twice (nor over a staff import made since); and since when
//!   the box has been behind. Kept per channel URL: re-pointing a box at another channel starts
//!   afresh, with a warning.
//! - [`ChannelView`]: what `/api/status` shows, updated by the poller and cloned by the handler.
//!
//! Downloads live beside the state (`<data>/channel/downloads/`), outside the store's `work/`
//! folder, which every start clears: a partial bundle must survive a restart to be resumed.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::doc::RefusalReason;
use super::metrics::ErrorKind;
use crate::catalog::CatalogError;

pub const STATE_FILE: &str = "state.json";
const FORMAT: &str = "vitrine-channel-state/1";

/// Seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

pub fn rfc3339(unix: f64) -> String {
    let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs_f64(unix.max(0.0));
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A bundle the channel delivered and this box imported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Taken {
    pub sequence: u64,
    pub sha256: String,
    /// The manifest's version label.
    pub version: String,
    /// The stored version it became (`v0007`).
    pub version_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Persisted {
    pub format: String,
    /// The channel this state belongs to (its URL as shown, without credentials).
    pub channel: String,
    pub highest_sequence: Option<u64>,
    pub taken: Option<Taken>,
    /// When the channel first offered this box the bundle it is still waiting for (Unix time),
    /// and which bundle; cleared once it runs it.
    pub behind_since: Option<f64>,
    pub behind_sha256: Option<String>,
}

impl Persisted {
    fn fresh(channel: &str) -> Self {
        Self {
            format: FORMAT.into(),
            channel: channel.into(),
            highest_sequence: None,
            taken: None,
            behind_since: None,
            behind_sha256: None,
        }
    }
}

/// The channel's folder in the data folder and the files in it.
#[derive(Debug, Clone)]
pub struct Dirs {
    pub root: PathBuf,
}

impl Dirs {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            root: data_dir.join("channel"),
        }
    }

    pub fn state(&self) -> PathBuf {
        self.root.join(STATE_FILE)
    }

    pub fn downloads(&self) -> PathBuf {
        self.root.join("downloads")
    }

    /// The partial (then complete, not yet verified) download of the bundle with this digest.
    /// Content-addressed like the object, so bytes of two bundles can never mix.
    pub fn part(&self, sha256: &str) -> PathBuf {
        self.downloads().join(format!("{sha256}.part"))
    }

    /// Removes downloads of bundles other than `keep`: a newer offer replaced them.
    pub fn drop_other_downloads(&self, keep: Option<&str>) {
        let Ok(entries) = std::fs::read_dir(self.downloads()) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if keep.is_none_or(|k| !name.starts_with(k)) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Reads the state for `channel`; a missing file, or one for another channel, is a fresh
    /// state (the latter with a warning). A damaged file is an error: silently starting over
    /// would forget the highest sequence and let an old document roll the store back.
    pub fn load(&self, channel: &str) -> Result<Persisted, CatalogError> {
        let p = self.state();
        let text = match std::fs::read(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Persisted::fresh(channel));
            }
            Err(source) => return Err(CatalogError::Read { path: p, source }),
        };
        let s: Persisted =
            serde_json::from_slice(&text).map_err(|e| CatalogError::ChannelState {
                path: p.clone(),
                why: e.to_string(),
            })?;
        if s.channel != channel {
            tracing::warn!(was = %s.channel, now = %channel, "the catalog channel changed: its sequence numbers start afresh");
            return Ok(Persisted::fresh(channel));
        }
        Ok(s)
    }

    pub fn save(&self, s: &Persisted) -> Result<(), CatalogError> {
        std::fs::create_dir_all(&self.root).map_err(|source| CatalogError::Write {
            path: self.root.clone(),
            source,
        })?;
        let path = self.state();
        let bytes = serde_json::to_vec_pretty(s).map_err(|e| CatalogError::Write {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        crate::catalog::store::write_durable(&path, &bytes, None)
    }
}

/// The poller's state as `/api/status` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Before the first poll (the daemon is still loading).
    Starting,
    Checking,
    Downloading,
    Verifying,
    /// Waiting for the catalog writer (a staff change is running), then importing.
    Importing,
    /// Serving the bundle the channel offers.
    UpToDate,
    /// The offer is for other boxes (roll-out bucket at or above the percentage).
    NotSelected,
    /// `pin` names another version than the one offered.
    Pinned,
    /// The offer was refused (see `last_refusal`).
    Refused,
    /// The last poll or download failed (see `last_error`); retried at the next poll.
    Error,
    /// The data folder is held by another process: this one cannot import.
    Disabled,
}

#[derive(Debug, Clone, Serialize)]
pub struct Offer {
    pub version: String,
    pub sequence: u64,
    pub size: u64,
    pub sha256: String,
    pub rollout_percent: u8,
    pub created: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    pub reason: RefusalReason,
    pub message: String,
    pub at: String,
    /// The refused document's sequence, when it could be read.
    pub sequence: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastError {
    pub kind: ErrorKind,
    pub message: String,
    pub at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Rollout {
    pub box_id: String,
    /// This box's place, 0–99.
    pub bucket: u8,
    /// The offer's percentage; this box takes it when `bucket < percent`.
    pub percent: Option<u8>,
    pub selected: Option<bool>,
}

/// `/api/status`'s `channel` section.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelView {
    /// The channel URL (never with credentials).
    pub url: String,
    pub state: Phase,
    pub pin: Option<String>,
    pub poll_interval_s: u64,
    pub last_check: Option<String>,
    pub last_success: Option<String>,
    pub offered: Option<Offer>,
    /// The version label this box serves (filled in by `/api/status` from the live snapshot).
    pub active: Option<String>,
    /// The version the channel last delivered to this box.
    pub taken: Option<Taken>,
    /// The highest sequence accepted (documents below it are refused as replays).
    pub highest_sequence: Option<u64>,
    /// Bytes of the bundle being downloaded so far, and its size.
    pub download_bytes: u64,
    pub download_size: u64,
    /// Bytes read from the channel since start (documents and bundles).
    pub fetched_bytes: u64,
    pub behind_s: f64,
    pub last_refusal: Option<Refusal>,
    pub last_error: Option<LastError>,
    pub rollout: Rollout,
    /// The catalog job of the running or last channel import.
    pub job: Option<String>,
    /// What the state means, in a sentence.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_survives_a_restart_and_another_channel_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = Dirs::new(dir.path());
        let mut s = dirs.load("s3://fleet/eu").unwrap();
        assert_eq!(s.highest_sequence, None);
        s.highest_sequence = Some(7);
        s.taken = Some(Taken {
            sequence: 7,
            sha256: "ab".repeat(32),
            version: "spring".into(),
            version_id: "v0003".into(),
        });
        dirs.save(&s).unwrap();
        assert_eq!(dirs.load("s3://fleet/eu").unwrap(), s);
        assert_eq!(dirs.load("s3://fleet/us").unwrap().highest_sequence, None);

        std::fs::write(dirs.state(), b"{ not json").unwrap();
        let e = dirs.load("s3://fleet/eu").unwrap_err();
        assert!(e.to_string().contains("highest channel sequence"), "{e}");
    }

    #[test]
    fn other_downloads_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = Dirs::new(dir.path());
        std::fs::create_dir_all(dirs.downloads()).unwrap();
        std::fs::write(dirs.part("aa"), b"1").unwrap();
        std::fs::write(dirs.part("bb"), b"2").unwrap();
        dirs.drop_other_downloads(Some("bb"));
        assert!(!dirs.part("aa").exists());
        assert!(dirs.part("bb").exists());
        dirs.drop_other_downloads(None);
        assert!(!dirs.part("bb").exists());
    }
}
