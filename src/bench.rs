//! `vitrine bench`: the pipeline over the replay frames as fast as it can go, with per-stage
//! latency percentiles, frames per second, and the share of time spent outside ONNX Runtime.
//!
//! It runs the same [`Engine`] as the daemon, arranged as the daemon arranges it: a capture
//! thread decodes each frame and makes the detector's input, the calling thread runs the rest,
//! and they meet at a hand-over of one frame. Flat out (the default) the next frame waits while
//! the pipeline finishes the one before, and frame-to-publish counts that wait; `--paced` gives
//! the latency a camera slower than the pipeline sees.

pub mod fleet;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::capture::Frame;
use crate::capture::replay::{decode_frame, list_frames};
use crate::catalog::Catalog;
use crate::config::Settings;
use crate::pipeline::{Engine, FrameTiming};
use crate::{DaemonError, capture};

#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
}

fn pct(mut v: Vec<f64>) -> Percentiles {
    if v.is_empty() {
        return Percentiles {
            p50_ms: 0.0,
            p99_ms: 0.0,
            mean_ms: 0.0,
        };
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Percentiles {
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        mean_ms: v.iter().sum::<f64>() / v.len() as f64,
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub frames: usize,
    pub frame_size: (u32, u32),
    /// The camera rate the frames' capture times simulate (the replay's fps).
    pub camera_fps: f64,
    pub wall_s: f64,
    pub fps: f64,
    pub decode_resize: Percentiles,
    pub detector: Percentiles,
    pub crops_embed: Percentiles,
    /// The pose model (every frame counted, zero where nobody was due).
    pub pose: Percentiles,
    pub search: Percentiles,
    pub publish: Percentiles,
    pub frame_to_publish: Percentiles,
    /// Share of the pipeline thread's wall time (the frame time) not spent in ONNX Runtime.
    pub outside_onnx_runtime_share: f64,
    /// Work outside ONNX Runtime per frame, mean ms: on the capture thread (decode and the
    /// detector's input, overlapping the previous frame's inference) and on the pipeline thread.
    pub outside_capture_ms: f64,
    pub outside_pipeline_ms: f64,
    pub crops_per_frame: f64,
    pub reused_per_frame: f64,
    pub people_posed_per_frame: f64,
    /// Mean share of a masked garment crop that is the shopper, and crops skipped for too little.
    pub garment_share_mean: f64,
    pub crops_skipped: usize,
    pub shoppers_per_frame: f64,
    pub providers: Vec<String>,
    /// CPU seconds the process used per frame (all threads).
    pub cpu_ms_per_frame: f64,
    /// CPU used over wall time, in cores (0.5 = half of one core); meaningful with `paced`.
    pub cpu_cores: f64,
    pub paced: bool,
    /// Share of catalog searches whose top-k equals exact search.
    pub topk_equal_exact: f64,
    pub searches_checked: usize,
    /// Detections per measured frame, to compare with another implementation frame by frame.
    pub detections_per_frame: Vec<usize>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Process CPU time (user + system) so far.
pub fn process_cpu_time() -> Duration {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
            Some(Duration::from_secs_f64(ticks as f64 / 100.0))
        })
        .unwrap_or_default()
}

pub struct BenchOptions {
    pub frames: usize,
    pub warmup: usize,
    /// Re-embed every garment every frame (turns the tracker's embedding cache off).
    pub no_cache: bool,
    /// Also run exact search for every query (not timed) and report agreement.
    pub check_exact: bool,
    /// Deliver frames at the camera rate instead of as fast as possible, to measure the CPU the
    /// appliance needs in the shop (a share of one core) rather than its peak throughput.
    pub paced: bool,
}

pub fn run(settings: &Settings, opts: &BenchOptions) -> Result<BenchReport, DaemonError> {
    let (dir, camera_fps) = match &settings.camera {
        capture::SourceConfig::Replay(r) => {
            (r.path.clone(), if r.fps > 0.0 { r.fps } else { 10.0 })
        }
        other => {
            return Err(DaemonError::Internal(format!(
                "vitrine bench needs a replay camera in the config, found {other:?}"
            )));
        }
    };
    let files =
        list_frames(&dir).map_err(|e| DaemonError::Internal(format!("{}: {e}", dir.display())))?;
    if files.is_empty() {
        return Err(DaemonError::Internal(format!(
            "{} holds no frames",
            dir.display()
        )));
    }
    // Encoded frames are read up front so disk reads do not count as decode time.
    let encoded: Vec<Vec<u8>> = files.iter().filter_map(|f| std::fs::read(f).ok()).collect();
    let spec = &settings.embedder.spec;
    let catalog = Catalog::load(
        &settings.catalog.path,
        Some(&crate::catalog::EmbedderFingerprint::running(
            spec,
            &settings.similarity,
        )),
        &settings.catalog.index,
    )?;
    let shared = Arc::new(arc_swap::ArcSwap::from_pointee(catalog));
    let mut settings = settings.clone();
    if opts.no_cache {
        settings.recommend.tracking.refresh_ms = Duration::ZERO;
    }
    let mut engine = Engine::build(&settings, shared)?;
    engine.check_exact = opts.check_exact;
    let mut timings: Vec<FrameTiming> = Vec::new();
    let mut e2e = Vec::new();
    let mut shoppers = 0usize;
    let mut size = (0, 0);
    let total = opts.warmup + opts.frames;
    // The capture stage runs on its own thread, as in the daemon: it decodes a frame and makes the
    // detector's input while the pipeline works on the one before, and hands it over only when the
    // pipeline takes it (a rendezvous, like a replay at fps = 0), so no frame is made to be dropped.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<(Frame, Instant), DaemonError>>(0);
    let mut preparer = engine.preparer();
    let paced = opts.paced;
    // Frames carry the capture times a camera at the footage's rate would give them, so the
    // tracker's embedding cache behaves as live, however fast the benchmark runs.
    let clock = Instant::now();
    let capture = std::thread::Builder::new()
        .name("bench-capture".into())
        .spawn(move || {
            for i in 0..total {
                let due = clock + Duration::from_secs_f64(i as f64 / camera_fps);
                if paced {
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                }
                let acquired = Instant::now();
                let made = decode_frame(&encoded[i % encoded.len()])
                    .map_err(|e| DaemonError::Internal(format!("frame {i}: {e}")))
                    .and_then(|image| {
                        let decode = acquired.elapsed();
                        let input = preparer.prepare(&image)?;
                        Ok(Frame {
                            image: Arc::new(image),
                            captured_at: SystemTime::now(),
                            captured: if paced { acquired } else { due },
                            seq: i as u64,
                            decode,
                            detector_input: Some(Arc::new(input)),
                        })
                    });
                let failed = made.is_err();
                if tx.send(made.map(|f| (f, acquired))).is_err() || failed {
                    return;
                }
            }
        })
        .map_err(|e| DaemonError::Internal(format!("cannot start the capture thread: {e}")))?;
    let (mut wall, mut cpu) = (Instant::now(), process_cpu_time());
    for i in 0..total {
        if i == opts.warmup {
            wall = Instant::now();
            cpu = process_cpu_time();
            engine.exact_time = Duration::ZERO;
            engine.exact_checked = 0;
            engine.exact_equal = 0;
        }
        let (frame, acquired) = rx
            .recv()
            .map_err(|_| DaemonError::Internal("the capture thread ended early".into()))??;
        size = (frame.image.width(), frame.image.height());
        let (recs, t) = engine.process(&frame)?;
        let publish = Instant::now();
        let body = serde_json::to_vec(&recs).map_err(|e| DaemonError::Internal(e.to_string()))?;
        std::hint::black_box(body);
        let mut t = t;
        t.publish += publish.elapsed();
        if i >= opts.warmup {
            e2e.push(ms(acquired.elapsed()));
            shoppers += recs.shoppers.iter().filter(|s| s.in_view).count();
            timings.push(t);
        }
    }
    let _ = capture.join();
    // Exact searches (when checked) are a measurement aid, not pipeline work.
    let wall_s = wall.elapsed().as_secs_f64() - engine.exact_time.as_secs_f64();
    let cpu_s = (process_cpu_time() - cpu).as_secs_f64();
    let n = timings.len().max(1) as f64;
    let inference: f64 = timings.iter().map(|t| t.inference().as_secs_f64()).sum();
    Ok(BenchReport {
        frames: timings.len(),
        frame_size: size,
        camera_fps,
        wall_s,
        fps: timings.len() as f64 / wall_s,
        decode_resize: pct(timings
            .iter()
            .map(|t| ms(t.decode + t.detect.preprocess))
            .collect()),
        detector: pct(timings
            .iter()
            .map(|t| ms(t.detect.inference + t.detect.postprocess))
            .collect()),
        crops_embed: pct(timings.iter().map(|t| ms(t.embed)).collect()),
        pose: pct(timings.iter().map(|t| ms(t.pose)).collect()),
        search: pct(timings.iter().map(|t| ms(t.search)).collect()),
        publish: pct(timings.iter().map(|t| ms(t.publish)).collect()),
        frame_to_publish: pct(e2e),
        outside_onnx_runtime_share: 1.0 - inference / wall_s,
        outside_capture_ms: timings
            .iter()
            .map(|t| ms(t.decode + t.detect.preprocess))
            .sum::<f64>()
            / n,
        outside_pipeline_ms: timings
            .iter()
            .map(|t| ms(t.total() - t.decode - t.detect.preprocess - t.inference()))
            .sum::<f64>()
            / n,
        crops_per_frame: timings.iter().map(|t| t.crops).sum::<usize>() as f64 / n,
        reused_per_frame: timings.iter().map(|t| t.reused).sum::<usize>() as f64 / n,
        people_posed_per_frame: timings.iter().map(|t| t.people_posed).sum::<usize>() as f64 / n,
        garment_share_mean: timings.iter().map(|t| t.share_sum).sum::<f64>()
            / timings.iter().map(|t| t.masked).sum::<usize>().max(1) as f64,
        crops_skipped: timings.iter().map(|t| t.skipped).sum(),
        shoppers_per_frame: shoppers as f64 / n,
        providers: engine
            .providers()
            .iter()
            .map(|p| format!("{}: {}", p.model, p.in_use))
            .collect(),
        cpu_ms_per_frame: cpu_s * 1e3 / n,
        cpu_cores: cpu_s / wall_s,
        paced: opts.paced,
        topk_equal_exact: if engine.exact_checked == 0 {
            1.0
        } else {
            engine.exact_equal as f64 / engine.exact_checked as f64
        },
        searches_checked: engine.exact_checked,
        detections_per_frame: timings.iter().map(|t| t.detections).collect(),
    })
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "frames {} at {}×{}, {:.2} s wall, {:.1} frames/s end to end",
            self.frames, self.frame_size.0, self.frame_size.1, self.wall_s, self.fps
        )?;
        writeln!(
            f,
            "{:<22} {:>9} {:>9} {:>9}",
            "stage", "p50 ms", "p99 ms", "mean ms"
        )?;
        for (name, p) in [
            ("decode + resize (capture)", &self.decode_resize),
            ("detector", &self.detector),
            ("pose", &self.pose),
            ("crops + embed", &self.crops_embed),
            ("search", &self.search),
            ("publish", &self.publish),
            ("frame-to-publish", &self.frame_to_publish),
        ] {
            writeln!(
                f,
                "{name:<22} {:>9.2} {:>9.2} {:>9.2}",
                p.p50_ms, p.p99_ms, p.mean_ms
            )?;
        }
        if self.paced {
            writeln!(
                f,
                "paced at the camera's {:.0} frames/s: CPU {:.1} % of one core",
                self.camera_fps,
                self.cpu_cores * 100.0
            )?;
        }
        writeln!(
            f,
            "time outside ONNX Runtime: {:.1} % of the pipeline's wall time; work outside it per \
             frame: {:.1} ms on the capture thread (decode, detector input), {:.1} ms in the pipeline",
            self.outside_onnx_runtime_share * 100.0,
            self.outside_capture_ms,
            self.outside_pipeline_ms
        )?;
        writeln!(
            f,
            "per frame: {:.1} shoppers, {:.1} crops embedded, {:.1} embeddings reused, {:.1} CPU ms",
            self.shoppers_per_frame,
            self.crops_per_frame,
            self.reused_per_frame,
            self.cpu_ms_per_frame
        )?;
        if self.people_posed_per_frame > 0.0 {
            writeln!(
                f,
                "pose: {:.2} people a frame; masked crops {:.1} % shopper on average, {} skipped",
                self.people_posed_per_frame,
                self.garment_share_mean * 100.0,
                self.crops_skipped
            )?;
        }
        if self.searches_checked > 0 {
            writeln!(
                f,
                "top-k equal to exact search: {:.1} % of {} searches",
                self.topk_equal_exact * 100.0,
                self.searches_checked
            )?;
        }
        write!(f, "providers: {}", self.providers.join(", "))
    }
}
