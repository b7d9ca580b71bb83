//! The capture thread: owns the [`FrameSource`], keeps it open, and feeds the [`LatestSlot`].
//!
//! A source that fails is closed and reopened with exponential backoff (0.25 s doubling to 10 s),
//! forever: a camera unplugged for an hour comes back by itself when plugged in again. Its state
//! (streaming / reconnecting, last error, reconnect count) is shared for health endpoints. A run
//! of corrupt frames (a camera sending garbage) is treated as a failure too.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

#[cfg(test)]
use super::RawFrame;
use super::{CaptureError, Frame, FrameSource, LatestSlot};
use crate::shutdown::Stop;
use crate::telemetry::Metrics;
use crate::vision::detector::InputPreparer;

/// After this many corrupt frames in a row the device is reopened.
const CORRUPT_RUN_LIMIT: u32 = 30;
const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CameraState {
    Opening,
    Streaming,
    Reconnecting,
    /// A finite source ended or cannot work as configured.
    Stopped,
}

#[derive(Debug, Clone, Serialize)]
pub struct CameraStatus {
    pub source: String,
    pub state: CameraState,
    pub last_error: Option<String>,
    pub reconnects: u64,
    #[serde(skip)]
    pub last_frame: Option<Instant>,
    pub last_frame_at: Option<String>,
}

impl CameraStatus {
    /// The status of a source not opened yet.
    pub fn new(source: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            state: CameraState::Opening,
            last_error: None,
            reconnects: 0,
            last_frame: None,
            last_frame_at: None,
        }
    }
}

/// The camera's status, made once by `run` and shared: the capture thread writes it, the health
/// and status endpoints read it.
pub type StatusHandle = Arc<Mutex<CameraStatus>>;

fn set<F: FnOnce(&mut CameraStatus)>(status: &StatusHandle, f: F) {
    f(&mut status.lock().unwrap_or_else(|p| p.into_inner()));
}

/// Starts the capture thread, which reports on `status` (from now on about this source). It
/// stops when `stop` is set, then closes the slot so the inference stage drains and ends too.
/// With a `preparer` the thread also makes each frame's detector input (the resize to the
/// model's size) after decoding it: on two cores that work then overlaps the previous frame's
/// inference instead of adding to it.
pub fn spawn(
    mut source: Box<dyn FrameSource>,
    slot: Arc<LatestSlot>,
    status: StatusHandle,
    metrics: Arc<Metrics>,
    stop: Stop,
    mut preparer: Option<InputPreparer>,
) -> Result<std::thread::JoinHandle<()>, CaptureError> {
    *status.lock().unwrap_or_else(|p| p.into_inner()) = CameraStatus::new(source.name());
    std::thread::Builder::new()
        .name("capture".into())
        .spawn(move || {
            run(
                source.as_mut(),
                &slot,
                &metrics,
                &stop,
                &status,
                preparer.as_mut(),
            );
            source.close();
            slot.close();
        })
        .map_err(CaptureError::Thread)
}

/// Sleeps up to `d`, waking early when asked to stop.
fn nap(d: Duration, stop: &Stop) {
    let end = Instant::now() + d;
    while !stop.is_set() {
        let now = Instant::now();
        if now >= end {
            break;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// At most one warning per this long about corrupt frames: a camera sending garbage at 30 fps
/// must not flood the journal, yet a technician sees the first one and which file or device.
const CORRUPT_LOG_EVERY: Duration = Duration::from_secs(10);

/// Lets one event through per period and counts the ones held back.
#[derive(Debug)]
struct RateLimit {
    every: Duration,
    last: Option<Instant>,
    held: u64,
}

impl RateLimit {
    fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            held: 0,
        }
    }

    /// `Some(events held back since the last one let through)` when this one may be logged.
    fn admit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < self.every => {
                self.held += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held))
            }
        }
    }
}

fn run(
    source: &mut dyn FrameSource,
    slot: &LatestSlot,
    metrics: &Metrics,
    stop: &Stop,
    status: &StatusHandle,
    mut preparer: Option<&mut InputPreparer>,
) {
    let mut backoff = BACKOFF_START;
    let mut open = false;
    let mut corrupt_run = 0;
    let mut corrupt_log = RateLimit::new(CORRUPT_LOG_EVERY);
    let mut seq = 0u64;
    let consumer_paced = source.paced_by_consumer();
    while !stop.is_set() {
        if !open {
            match source.open() {
                Ok(()) => {
                    open = true;
                    corrupt_run = 0;
                    set(status, |s| s.state = CameraState::Streaming);
                    metrics.camera_streaming.set(1);
                }
                Err(CaptureError::Config { .. } | CaptureError::Ended { .. }) => {
                    set(status, |s| s.state = CameraState::Stopped);
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "camera open failed");
                    set(status, |s| {
                        s.state = CameraState::Reconnecting;
                        s.last_error = Some(e.to_string());
                    });
                    metrics.camera_streaming.set(0);
                    nap(backoff, stop);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            }
        }
        // Checked again from the top so a stop request is seen while the pipeline is busy.
        if consumer_paced && !slot.wait_taken(Duration::from_millis(100)) {
            continue;
        }
        match source.next_frame() {
            Ok(raw) => {
                corrupt_run = 0;
                backoff = BACKOFF_START;
                seq += 1;
                let captured_at = SystemTime::now() - raw.acquired.elapsed();
                // A frame the detector cannot take is left for the pipeline to report.
                let detector_input = preparer
                    .as_deref_mut()
                    .and_then(|p| p.prepare(&raw.image).ok())
                    .map(Arc::new);
                let frame = Frame {
                    image: Arc::new(raw.image),
                    captured_at,
                    captured: raw.acquired,
                    seq,
                    decode: raw.decode,
                    detector_input,
                };
                metrics.frames_captured.inc();
                if slot.put(frame) {
                    metrics.frames_dropped.inc();
                }
                set(status, |s| {
                    s.last_frame = Some(Instant::now());
                    s.last_frame_at =
                        Some(humantime::format_rfc3339_millis(SystemTime::now()).to_string());
                });
            }
            Err(e @ CaptureError::Corrupt { .. }) => {
                metrics.frames_corrupt.inc();
                corrupt_run += 1;
                if let Some(suppressed) = corrupt_log.admit(Instant::now()) {
                    tracing::warn!(error = %e, similar_since_last = suppressed, "skipped a corrupt frame");
                }
                let CaptureError::Corrupt { message, .. } = e else {
                    continue;
                };
                if corrupt_run >= CORRUPT_RUN_LIMIT {
                    fail(
                        source,
                        status,
                        metrics,
                        &mut open,
                        format!("{CORRUPT_RUN_LIMIT} corrupt frames in a row, last: {message}"),
                    );
                }
            }
            Err(CaptureError::Ended { .. }) => {
                set(status, |s| s.state = CameraState::Stopped);
                metrics.camera_streaming.set(0);
                return;
            }
            Err(e) => fail(source, status, metrics, &mut open, e.to_string()),
        }
    }
    set(status, |s| s.state = CameraState::Stopped);
}

fn fail(
    source: &mut dyn FrameSource,
    status: &StatusHandle,
    metrics: &Metrics,
    open: &mut bool,
    message: String,
) {
    tracing::warn!(error = %message, "camera failed; reconnecting");
    source.close();
    *open = false;
    metrics.camera_reconnects.inc();
    metrics.camera_streaming.set(0);
    set(status, |s| {
        s.state = CameraState::Reconnecting;
        s.last_error = Some(message);
        s.reconnects += 1;
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::RgbImage;
    use std::collections::VecDeque;

    #[test]
    fn corrupt_frame_warnings_are_rate_limited() {
        let mut r = RateLimit::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(r.admit(t0), Some(0), "the first one is logged");
        for i in 1..=29 {
            assert_eq!(r.admit(t0 + Duration::from_millis(100 * i)), None);
        }
        assert_eq!(
            r.admit(t0 + Duration::from_secs(10)),
            Some(29),
            "the next one, with the count held back"
        );
        assert_eq!(r.admit(t0 + Duration::from_secs(11)), None);
    }

    /// A source that plays a script of events: a stand-in for a camera being unplugged, since
    /// this kernel has no V4L2 to unplug.
    struct Scripted {
        opens: VecDeque<Result<(), String>>,
        frames: VecDeque<Result<(), CaptureError>>,
        consumer_paced: bool,
    }

    impl FrameSource for Scripted {
        fn name(&self) -> String {
            "scripted".into()
        }
        fn open(&mut self) -> Result<(), CaptureError> {
            match self.opens.pop_front() {
                Some(Ok(())) | None => Ok(()),
                Some(Err(m)) => Err(CaptureError::Unavailable {
                    source_name: "scripted".into(),
                    message: m,
                }),
            }
        }
        fn paced_by_consumer(&self) -> bool {
            self.consumer_paced
        }
        fn next_frame(&mut self) -> Result<RawFrame, CaptureError> {
            std::thread::sleep(Duration::from_millis(2));
            match self.frames.pop_front() {
                Some(Ok(())) => Ok(RawFrame {
                    image: RgbImage::new(2, 2),
                    acquired: Instant::now(),
                    decode: Duration::ZERO,
                }),
                Some(Err(e)) => Err(e),
                None => Err(CaptureError::Ended {
                    source_name: "scripted".into(),
                }),
            }
        }
    }

    #[test]
    fn unplugged_camera_is_reopened_and_errors_are_counted() {
        let unplug = || {
            Err(CaptureError::Unavailable {
                source_name: "s".into(),
                message: "No such device".into(),
            })
        };
        let corrupt = || {
            Err(CaptureError::Corrupt {
                source_name: "s".into(),
                message: "bad huffman".into(),
            })
        };
        let src = Scripted {
            opens: VecDeque::from(vec![Err("busy".into()), Ok(()), Err("gone".into()), Ok(())]),
            frames: VecDeque::from(vec![Ok(()), corrupt(), Ok(()), unplug(), Ok(()), Ok(())]),
            consumer_paced: false,
        };
        let slot = LatestSlot::new();
        let metrics = Arc::new(Metrics::default());
        let (_stages, stop) = crate::shutdown::channel();
        let status = Arc::new(Mutex::new(CameraStatus::new("not started")));
        let handle = spawn(
            Box::new(src),
            slot.clone(),
            status.clone(),
            metrics.clone(),
            stop,
            None,
        )
        .expect("capture thread");
        handle.join().expect("capture thread");
        assert_eq!(metrics.frames_captured.get(), 4);
        assert_eq!(metrics.frames_corrupt.get(), 1);
        assert_eq!(metrics.camera_reconnects.get(), 1);
        let st = status.lock().expect("status").clone();
        assert_eq!(
            st.source, "scripted",
            "the status names the source once it starts"
        );
        assert_eq!(st.reconnects, 1);
        assert_eq!(st.state, CameraState::Stopped);
        assert!(
            st.last_error.as_deref().is_some_and(|e| e.contains("gone")),
            "{st:?}"
        );
        // The slot was closed when the source ended, after its newest frame.
        assert!(
            slot.take(Duration::from_millis(10))
                .expect("frame left")
                .is_some()
        );
        assert!(slot.take(Duration::from_millis(10)).is_err());
    }

    #[test]
    fn a_source_without_a_clock_waits_for_the_pipeline_instead_of_dropping() {
        let run = |consumer_paced: bool| {
            let src = Scripted {
                opens: VecDeque::new(),
                frames: (0..15).map(|_| Ok(())).collect(),
                consumer_paced,
            };
            let slot = LatestSlot::new();
            let metrics = Arc::new(Metrics::default());
            let (_stages, stop) = crate::shutdown::channel();
            let status = Arc::new(Mutex::new(CameraStatus::new("not started")));
            let handle = spawn(
                Box::new(src),
                slot.clone(),
                status,
                metrics.clone(),
                stop,
                None,
            )
            .expect("capture thread");
            // A pipeline five times slower than the source.
            let mut taken = 0;
            while let Ok(f) = slot.take(Duration::from_secs(5)) {
                if f.is_some() {
                    taken += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            handle.join().expect("capture thread");
            (taken, metrics.frames_dropped.get())
        };
        assert_eq!(run(true), (15, 0), "every frame reaches the pipeline");
        // A camera keeps its own clock: the pipeline gets the newest, the rest are counted.
        let (taken, dropped) = run(false);
        assert!(
            dropped > 0 && taken + dropped as usize == 15,
            "{taken} {dropped}"
        );
    }
}
