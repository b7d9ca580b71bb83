//! Replay sources: a folder of JPEG/PNG frames played at a set rate (the demo camera and the
//! test camera), or one still image repeated.
//!
//! Frames are decoded as they are played, like a camera's MJPEG, so decode cost and corrupt-frame
//! handling are exercised exactly as in production. Files are read, never written.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use image::RgbImage;
use serde::{Deserialize, Serialize};

pub use super::decode::{decode_frame, read_image};
use super::{CaptureError, FrameSource, RawFrame};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayConfig {
    pub path: PathBuf,
    /// Frames per second; 0 plays as fast as the consumer takes them (benchmarks).
    #[serde(default = "ten")]
    pub fps: f64,
    #[serde(default = "yes", rename = "loop")]
    pub looping: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    pub path: PathBuf,
    #[serde(default = "two")]
    pub fps: f64,
}

fn ten() -> f64 {
    10.0
}
fn two() -> f64 {
    2.0
}
fn yes() -> bool {
    true
}

pub struct ReplaySource {
    name: String,
    /// The folder (or still image) played; a folder is listed again on every (re)open.
    path: PathBuf,
    files: Vec<PathBuf>,
    period: Option<Duration>,
    looping: bool,
    next: usize,
    due: Option<Instant>,
    /// A still image is decoded once.
    cached: Option<RgbImage>,
    still: bool,
}

/// Frame files of a folder in name order.
pub fn list_frames(dir: &std::path::Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn period(fps: f64) -> Option<Duration> {
    (fps > 0.0).then(|| Duration::from_secs_f64(1.0 / fps))
}

impl ReplaySource {
    pub fn new(cfg: ReplayConfig) -> Result<Self, CaptureError> {
        let name = format!("replay {}", cfg.path.display());
        let files = list_frames(&cfg.path).map_err(|e| CaptureError::Config {
            source_name: name.clone(),
            message: format!("cannot list the folder: {e}"),
        })?;
        if files.is_empty() {
            return Err(CaptureError::Config {
                source_name: name,
                message: "the folder holds no .jpg/.jpeg/.png frames".into(),
            });
        }
        Ok(Self {
            name,
            path: cfg.path,
            files,
            period: period(cfg.fps),
            looping: cfg.looping,
            next: 0,
            due: None,
            cached: None,
            still: false,
        })
    }

    pub fn still(cfg: ImageConfig) -> Result<Self, CaptureError> {
        let name = format!("image {}", cfg.path.display());
        if !cfg.path.is_file() {
            return Err(CaptureError::Config {
                source_name: name,
                message: "the file does not exist".into(),
            });
        }
        Ok(Self {
            name,
            path: cfg.path.clone(),
            files: vec![cfg.path],
            period: period(cfg.fps),
            looping: true,
            next: 0,
            due: None,
            cached: None,
            still: true,
        })
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    fn pace(&mut self) {
        let Some(p) = self.period else { return };
        let now = Instant::now();
        let due = self.due.unwrap_or(now);
        if due > now {
            std::thread::sleep(due - now);
        }
        // Never let a slow consumer build up a burst of overdue frames.
        self.due = Some(due.max(now - p) + p);
    }
}

impl FrameSource for ReplaySource {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn paced_by_consumer(&self) -> bool {
        self.period.is_none()
    }

    /// Lists the folder again, so frames removed and restored while the daemon runs (a
    /// stand-in for a camera unplugged and plugged back) are noticed like a camera reconnect:
    /// an empty or missing folder is "unavailable" and retried, not a configuration error.
    fn open(&mut self) -> Result<(), CaptureError> {
        if self.still {
            return Ok(());
        }
        let unavailable = |message: String| CaptureError::Unavailable {
            source_name: self.name.clone(),
            message,
        };
        let files = list_frames(&self.path)
            .map_err(|e| unavailable(format!("cannot list the folder: {e}")))?;
        if files.is_empty() {
            return Err(unavailable(
                "the folder holds no .jpg/.jpeg/.png frames".into(),
            ));
        }
        if self.next >= files.len() {
            self.next = 0;
        }
        self.files = files;
        Ok(())
    }

    fn next_frame(&mut self) -> Result<RawFrame, CaptureError> {
        if self.next >= self.files.len() {
            if !self.looping {
                return Err(CaptureError::Ended {
                    source_name: self.name.clone(),
                });
            }
            self.next = 0;
        }
        self.pace();
        let acquired = Instant::now();
        if let Some(img) = &self.cached {
            return Ok(RawFrame {
                image: img.clone(),
                acquired,
                decode: Duration::ZERO,
            });
        }
        let path = &self.files[self.next];
        self.next += 1;
        let bytes = std::fs::read(path).map_err(|e| CaptureError::Unavailable {
            source_name: self.name.clone(),
            message: format!("{}: {e}", path.display()),
        })?;
        let img = decode_frame(&bytes).map_err(|message| CaptureError::Corrupt {
            source_name: self.name.clone(),
            message: format!("{}: {message}", path.display()),
        })?;
        if self.still {
            self.cached = Some(img.clone());
        }
        Ok(RawFrame {
            image: img,
            acquired,
            decode: acquired.elapsed(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_plays_in_order_skips_corrupt_frames_and_loops() {
        let dir = tempfile::tempdir().expect("tmp");
        RgbImage::from_pixel(4, 3, image::Rgb([10, 20, 30]))
            .save(dir.path().join("a.png"))
            .expect("png");
        std::fs::write(dir.path().join("b.jpg"), b"\xff\xd8 not really a jpeg").expect("write");
        RgbImage::from_pixel(5, 3, image::Rgb([1, 2, 3]))
            .save(dir.path().join("c.png"))
            .expect("png");
        std::fs::write(dir.path().join("notes.txt"), b"ignored").expect("write");
        let mut src = ReplaySource::new(ReplayConfig {
            path: dir.path().into(),
            fps: 0.0,
            looping: true,
        })
        .expect("source");
        assert_eq!(src.len(), 3);
        assert_eq!(src.next_frame().expect("a").image.width(), 4);
        assert!(matches!(
            src.next_frame(),
            Err(CaptureError::Corrupt { .. })
        ));
        assert_eq!(src.next_frame().expect("c").image.width(), 5);
        assert_eq!(src.next_frame().expect("looped").image.width(), 4);
        let mut once = ReplaySource::new(ReplayConfig {
            path: dir.path().into(),
            fps: 0.0,
            looping: false,
        })
        .expect("source");
        for _ in 0..3 {
            let _ = once.next_frame();
        }
        assert!(matches!(once.next_frame(), Err(CaptureError::Ended { .. })));
    }

    #[test]
    fn a_truncated_frame_is_corrupt_not_grey_filled() {
        let dir = tempfile::tempdir().expect("tmp");
        let whole = crate::capture::decode::tests::jpeg(64, 48);
        std::fs::write(dir.path().join("a.jpg"), &whole).expect("write");
        std::fs::write(dir.path().join("b.jpg"), &whole[..whole.len() * 2 / 3]).expect("write");
        let mut src = ReplaySource::new(ReplayConfig {
            path: dir.path().into(),
            fps: 0.0,
            looping: false,
        })
        .expect("source");
        assert_eq!(src.next_frame().expect("a").image.width(), 64);
        match src.next_frame() {
            Err(CaptureError::Corrupt { message, .. }) => {
                assert!(
                    message.contains("b.jpg") && message.contains("truncated"),
                    "{message}"
                )
            }
            other => panic!("a truncated frame must be corrupt: {other:?}"),
        }
    }

    #[test]
    fn frames_removed_and_restored_look_like_a_camera_unplugged_and_back() {
        let dir = tempfile::tempdir().expect("tmp");
        let frame = dir.path().join("a.png");
        RgbImage::from_pixel(4, 3, image::Rgb([10, 20, 30]))
            .save(&frame)
            .expect("png");
        let mut src = ReplaySource::new(ReplayConfig {
            path: dir.path().into(),
            fps: 0.0,
            looping: true,
        })
        .expect("source");
        src.open().expect("open");
        assert!(src.next_frame().is_ok());
        let away = tempfile::tempdir().expect("tmp");
        std::fs::rename(&frame, away.path().join("a.png")).expect("move away");
        assert!(matches!(
            src.next_frame(),
            Err(CaptureError::Unavailable { .. })
        ));
        assert!(matches!(src.open(), Err(CaptureError::Unavailable { .. })));
        std::fs::rename(away.path().join("a.png"), &frame).expect("restore");
        src.open().expect("reopened");
        assert_eq!(src.next_frame().expect("frame again").image.width(), 4);
    }

    #[test]
    fn an_empty_folder_is_a_config_error() {
        let dir = tempfile::tempdir().expect("tmp");
        assert!(matches!(
            ReplaySource::new(ReplayConfig {
                path: dir.path().into(),
                fps: 1.0,
                looping: true
            }),
            Err(CaptureError::Config { .. })
        ));
    }
}
