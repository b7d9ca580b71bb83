//! Capture: frame sources behind one trait, the supervisor thread that keeps a camera alive, and
//! the one-frame slot where capture meets inference.
//!
//! Frames enter from a [`FrameSource`] (a V4L2 camera through nokhwa, a replay folder, or a still
//! image), get their capture timestamp, and leave through [`LatestSlot`]: when inference is slower
//! than the camera, the slot keeps only the newest frame and counts the ones it replaced, so
//! latency never grows with a queue. Frames live in memory only; nothing here writes them anywhere.

pub mod camera;
pub mod decode;
pub mod replay;
pub mod supervisor;

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use image::RgbImage;
use serde::{Deserialize, Serialize};

pub use supervisor::{CameraState, CameraStatus, StatusHandle};

use crate::shutdown::Stop;
use crate::telemetry::Metrics;
use crate::vision::detector::InputPreparer;

/// Starts the capture stage: opens the configured source on its own thread (see
/// [`supervisor::spawn`]), which feeds `slot` until `stop` is set and reports on `status`.
/// `preparer` makes each frame's detector input on that thread.
pub fn start(
    config: &SourceConfig,
    preparer: Option<InputPreparer>,
    slot: Arc<LatestSlot>,
    status: StatusHandle,
    metrics: Arc<Metrics>,
    stop: Stop,
) -> Result<std::thread::JoinHandle<()>, CaptureError> {
    supervisor::spawn(config.build()?, slot, status, metrics, stop, preparer)
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// One bad frame: skip it, count it, carry on.
    #[error("corrupt frame from {source_name}: {message}")]
    Corrupt {
        source_name: String,
        message: String,
    },
    /// The device went away or stopped answering: close and reconnect with backoff.
    #[error("{source_name} is unavailable: {message}")]
    Unavailable {
        source_name: String,
        message: String,
    },
    /// A source that cannot work as configured (empty folder, bad format): no retry will help.
    #[error("{source_name}: {message}")]
    Config {
        source_name: String,
        message: String,
    },
    /// A finite source has no more frames.
    #[error("{source_name} has no more frames")]
    Ended { source_name: String },
    /// The capture thread could not be started (the process is out of threads or memory).
    #[error("cannot start the capture thread: {0}")]
    Thread(std::io::Error),
}

/// What a source hands over: the decoded image, when its bytes arrived (before decoding, so
/// frame-to-publish latency includes the decode) and how long decoding took.
#[derive(Debug)]
pub struct RawFrame {
    pub image: RgbImage,
    pub acquired: Instant,
    pub decode: std::time::Duration,
}

/// A decoded RGB frame and when it was taken.
#[derive(Debug, Clone)]
pub struct Frame {
    pub image: Arc<RgbImage>,
    /// Wall-clock time of capture, for the display and the API.
    pub captured_at: SystemTime,
    /// Monotonic time of capture, for frame-to-publish latency.
    pub captured: Instant,
    pub seq: u64,
    /// Time spent decoding it in the capture stage.
    pub decode: Duration,
    /// The detector's input, when the capture stage made it (see [`supervisor::spawn`]).
    pub detector_input: Option<Arc<crate::vision::detector::PreparedInput>>,
}

/// Something that produces frames. Blocking by design: it runs on its own thread.
pub trait FrameSource: Send {
    /// A human name for logs and status ("camera /dev/video0", "replay models/demo/frames").
    fn name(&self) -> String;
    /// Opens (or reopens) the source.
    fn open(&mut self) -> Result<(), CaptureError>;
    /// Blocks until the next frame is due and returns it decoded.
    fn next_frame(&mut self) -> Result<RawFrame, CaptureError>;
    /// Releases the device; `open` may be called again afterwards.
    fn close(&mut self) {}
    /// True for a source with no clock of its own (a replay or still at `fps = 0`): it is asked
    /// for the next frame only once the pipeline took the last one. Decoding frames only to
    /// replace them unseen would take a core from the pipeline it is meant to run flat out.
    fn paced_by_consumer(&self) -> bool {
        false
    }
}

/// Which source the config asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceConfig {
    Camera(camera::CameraConfig),
    Replay(replay::ReplayConfig),
    Image(replay::ImageConfig),
}

impl SourceConfig {
    pub fn build(&self) -> Result<Box<dyn FrameSource>, CaptureError> {
        Ok(match self {
            SourceConfig::Camera(c) => Box::new(camera::CameraSource::new(c.clone())),
            SourceConfig::Replay(r) => Box::new(replay::ReplaySource::new(r.clone())?),
            SourceConfig::Image(i) => Box::new(replay::ReplaySource::still(i.clone())?),
        })
    }

    /// Paths that must exist, for config validation.
    pub fn paths(&self) -> Vec<PathBuf> {
        match self {
            SourceConfig::Camera(_) => vec![],
            SourceConfig::Replay(r) => vec![r.path.clone()],
            SourceConfig::Image(i) => vec![i.path.clone()],
        }
    }

    pub fn resolve_paths(&mut self, base: &std::path::Path) {
        match self {
            SourceConfig::Camera(_) => {}
            SourceConfig::Replay(r) => r.path = base.join(&r.path),
            SourceConfig::Image(i) => i.path = base.join(&i.path),
        }
    }
}

/// The newest frame, waiting for the inference stage. Capacity one, on purpose.
#[derive(Default)]
pub struct LatestSlot {
    inner: Mutex<SlotInner>,
    ready: Condvar,
    taken: Condvar,
}

#[derive(Default)]
struct SlotInner {
    frame: Option<Frame>,
    closed: bool,
    replaced: u64,
}

impl LatestSlot {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Puts a frame in, replacing (and counting) one not yet taken. Returns true if one was replaced.
    pub fn put(&self, frame: Frame) -> bool {
        // std's Mutex: the critical section is a pointer swap, never held across an await.
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let replaced = g.frame.replace(frame).is_some();
        if replaced {
            g.replaced += 1;
        }
        drop(g);
        self.ready.notify_one();
        replaced
    }

    /// Waits up to `timeout` for a frame. `Err(())` once the slot is closed and empty.
    #[allow(clippy::result_unit_err)]
    pub fn take(&self, timeout: Duration) -> Result<Option<Frame>, ()> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (mut g, _) = self
            .ready
            .wait_timeout_while(g, timeout, |s| s.frame.is_none() && !s.closed)
            .unwrap_or_else(|p| p.into_inner());
        match g.frame.take() {
            Some(f) => {
                drop(g);
                self.taken.notify_all();
                Ok(Some(f))
            }
            None if g.closed => Err(()),
            None => Ok(None),
        }
    }

    /// Waits up to `timeout` until the slot is empty (its frame taken) or closed; true if so.
    pub fn wait_taken(&self, timeout: Duration) -> bool {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (g, _) = self
            .taken
            .wait_timeout_while(g, timeout, |s| s.frame.is_some() && !s.closed)
            .unwrap_or_else(|p| p.into_inner());
        g.frame.is_none() || g.closed
    }

    pub fn close(&self) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
        self.ready.notify_all();
        self.taken.notify_all();
    }

    pub fn replaced(&self) -> u64 {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replaced
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64) -> Frame {
        Frame {
            image: Arc::new(RgbImage::new(2, 2)),
            captured_at: SystemTime::now(),
            captured: Instant::now(),
            seq,
            decode: Duration::ZERO,
            detector_input: None,
        }
    }

    #[test]
    fn slot_keeps_the_newest_and_counts_the_dropped() {
        let slot = LatestSlot::new();
        assert!(!slot.put(frame(1)));
        assert!(slot.put(frame(2)));
        assert!(slot.put(frame(3)));
        assert_eq!(slot.replaced(), 2);
        let got = slot
            .take(Duration::from_millis(10))
            .expect("open")
            .expect("a frame");
        assert_eq!(got.seq, 3);
        assert!(
            slot.take(Duration::from_millis(10))
                .expect("open")
                .is_none()
        );
        slot.close();
        assert!(slot.take(Duration::from_millis(10)).is_err());
    }
}
