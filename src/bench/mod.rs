//! The benchmarks, apart from the runtime they measure:
//!
//! - [`pipeline`] — `vitrine bench`: the frame pipeline over the replay frames, per-stage
//!   latency, frames per second, time outside ONNX Runtime, CPU per frame, agreement with exact
//!   search.
//! - [`catalog`] — `vitrine bench catalog`: import and index time, restart time, recall@10,
//!   search latency, and the frame rate during an import.
//! - [`http`] — `vitrine bench http`: a running daemon's HTTP side under load.
//!
//! The pipeline and catalog benches drive the daemon's own path rather than a copy of it: the
//! capture supervisor over the config's replay folder feeds a [`LatestSlot`], and the benchmark
//! takes frames from it where the inference thread would (`ReplayFeed`). Nothing here is used
//! by `vitrine serve`.

pub mod catalog;
pub mod fleet;
pub mod http;
pub mod pipeline;

use std::net::SocketAddr;
use std::sync::Arc;

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::capture::replay::{ReplayConfig, ReplaySource};
use crate::capture::{
    CameraStatus, CaptureError, Frame, LatestSlot, SourceConfig, StatusHandle, supervisor,
};
use crate::catalog::CatalogError;
use crate::config::Settings;
use crate::telemetry::Metrics;
use crate::vision::ModelError;
use crate::vision::detector::InputPreparer;

/// Why a benchmark could not run or finish.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(
        "{config}: the benchmark plays the frames of a replay camera, and this config's camera is {found}; use a config whose [camera] has source = \"replay\" (the demo's vitrine.toml does)"
    )]
    NotReplay { config: String, found: String },
    #[error("{source_name} gave no frame for {waited:?}{}", last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    NoFrames {
        source_name: String,
        waited: Duration,
        last_error: Option<String>,
    },
    #[error("the pipeline measurement needs a config with the models: give --config FILE")]
    NeedsModels,
    #[error("the benchmark catalog has no items to query")]
    EmptyCatalog,
    #[error(
        "--prebuilt needs a bundle that carries its embeddings (manifest \"embeddings\": \"npy\" or \"inline\")"
    )]
    NoEmbeddings,
    #[error("the import thread panicked")]
    ImportPanicked,
    #[error(
        "{0}: the HTTP benchmark only talks to this machine; give a loopback address such as http://127.0.0.1:8080"
    )]
    NotLoopback(String),
    #[error("{url}: {message}")]
    Url { url: String, message: String },
    #[error("cannot reach the daemon at {addr}: {source}. Is `vitrine serve` running there?")]
    Connect {
        addr: SocketAddr,
        source: hyper_util::client::legacy::Error,
    },
    /// The daemon answered, but not as a Vitrine daemon does.
    #[error("{0}")]
    Protocol(String),
    #[error("{path}: {source}")]
    Http {
        path: String,
        source: hyper_util::client::legacy::Error,
    },
    #[error("{path}: reading the response: {source}")]
    Body { path: String, source: hyper::Error },
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("serialising the recommendations: {0}")]
    Json(#[from] serde_json::Error),
}

/// The config's replay camera, which the pipeline benchmarks play.
pub(crate) fn replay_camera(settings: &Settings) -> Result<&ReplayConfig, BenchError> {
    match &settings.camera {
        SourceConfig::Replay(r) => Ok(r),
        other => Err(BenchError::NotReplay {
            config: settings.config_path.display().to_string(),
            found: match other {
                SourceConfig::Camera(_) => "a V4L2 camera",
                SourceConfig::Image(_) => "a still image",
                SourceConfig::Replay(_) => "a replay",
            }
            .into(),
        }),
    }
}

/// How long [`ReplayFeed::next`] waits for a frame. A replay frame takes milliseconds; a folder
/// that vanished makes the supervisor retry for ever, and a benchmark must fail instead.
const NO_FRAME_LIMIT: Duration = Duration::from_secs(30);

/// The daemon's capture stage over the config's replay folder, with the benchmark standing where
/// the inference thread stands: the supervisor thread reads and decodes each frame (and, given
/// the detector's preparer, makes its input) and puts it in a [`LatestSlot`]. At `fps = 0` the
/// replay decodes the next frame only once the last was taken, while the pipeline works on it
/// (the daemon's overlap, and no frame made to be dropped); at a camera rate, a frame the
/// pipeline is too busy for is replaced in the slot, as in the shop.
pub(crate) struct ReplayFeed {
    slot: Arc<LatestSlot>,
    /// Owns the stop signal the capture thread watches: dropping it stops the thread.
    stop: Option<crate::shutdown::Stages>,
    status: StatusHandle,
    capture: Option<JoinHandle<()>>,
}

impl ReplayFeed {
    /// Starts the capture thread on `replay`'s folder, looping, at `fps` (0: as the consumer
    /// takes frames).
    pub(crate) fn start(
        replay: &ReplayConfig,
        fps: f64,
        preparer: Option<InputPreparer>,
    ) -> Result<Self, BenchError> {
        let replay = ReplayConfig {
            fps,
            // However many frames the folder holds, the benchmark asks for as many as it needs.
            looping: true,
            ..replay.clone()
        };
        let source = ReplaySource::new(replay)?;
        let slot = LatestSlot::new();
        let (owner, stop) = crate::shutdown::channel();
        let status: StatusHandle = Arc::new(std::sync::Mutex::new(CameraStatus::new("replay")));
        let capture = supervisor::spawn(
            Box::new(source),
            slot.clone(),
            status.clone(),
            Arc::new(Metrics::default()),
            stop,
            preparer,
        )?;
        Ok(Self {
            slot,
            stop: Some(owner),
            status,
            capture: Some(capture),
        })
    }

    /// The next frame, waited for as the inference thread waits for it.
    pub(crate) fn next(&self) -> Result<Frame, BenchError> {
        let started = Instant::now();
        loop {
            match self.slot.take(Duration::from_millis(500)) {
                Ok(Some(frame)) => return Ok(frame),
                Ok(None) if started.elapsed() < NO_FRAME_LIMIT => {}
                Ok(None) | Err(()) => {
                    let status = self.status.lock().unwrap_or_else(|p| p.into_inner());
                    return Err(BenchError::NoFrames {
                        source_name: status.source.clone(),
                        waited: started.elapsed(),
                        last_error: status.last_error.clone(),
                    });
                }
            }
        }
    }

    /// Frames replaced in the slot before anyone took them (only at a camera rate).
    pub(crate) fn dropped(&self) -> u64 {
        self.slot.replaced()
    }
}

impl Drop for ReplayFeed {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(capture) = self.capture.take() {
            let _ = capture.join();
        }
    }
}

/// The value at quantile `q` of sorted values, rounding to the nearest rank (0 when empty).
pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// The machine's 1, 5 and 15-minute load averages: other work on a shared machine inflates wall
/// times, so every benchmark reports it beside them.
pub(crate) fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut v = text.split_whitespace().map(|x| x.parse::<f64>().ok());
    Some([v.next()??, v.next()??, v.next()??])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_round_to_the_nearest_rank() {
        let v: Vec<f64> = (1..=101).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 51.0);
        assert_eq!(percentile(&v, 0.99), 100.0);
        assert_eq!(percentile(&v, 1.0), 101.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn the_feed_hands_over_every_replay_frame_in_order_when_flat_out() {
        let dir = tempfile::tempdir().expect("tmp");
        for (i, w) in [3u32, 4, 5].into_iter().enumerate() {
            image::RgbImage::new(w, 2)
                .save(dir.path().join(format!("f{i}.png")))
                .expect("png");
        }
        let replay = ReplayConfig {
            path: dir.path().into(),
            fps: 25.0,
            looping: false,
        };
        let feed = ReplayFeed::start(&replay, 0.0, None).expect("feed");
        // Looping although the config says not to, and nothing dropped while the consumer dawdles.
        let widths: Vec<u32> = (0..7)
            .map(|_| {
                std::thread::sleep(Duration::from_millis(20));
                feed.next().expect("frame").image.width()
            })
            .collect();
        assert_eq!(widths, [3, 4, 5, 3, 4, 5, 3]);
        assert_eq!(feed.dropped(), 0);
    }
}
