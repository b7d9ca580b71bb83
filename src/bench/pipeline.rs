//! `vitrine bench`: the pipeline over the replay frames as fast as it can go, with per-stage
//! latency percentiles, frames per second, and the share of time spent outside ONNX Runtime.
//!
//! It runs the daemon's own stages, arranged as the daemon arranges them: the capture supervisor
//! decodes each replay frame and makes the detector's input on its thread (`ReplayFeed`), the
//! calling thread takes it from the slot and runs the [`Engine`]. Flat out (the default) the
//! replay runs at `fps = 0`, so the next frame is decoded while the pipeline finishes the one
//! before and then waits in the slot, and frame-to-publish counts that wait; `--paced` plays the
//! replay at the camera's rate and gives the latency a camera slower than the pipeline sees.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{BenchError, ReplayFeed, percentile, replay_camera};
use crate::catalog::{Catalog, EmbedderFingerprint};
use crate::config::Settings;
use crate::pipeline::{Engine, FrameTiming, Search};

#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
}

pub(crate) fn pct(mut v: Vec<f64>) -> Percentiles {
    v.sort_by(f64::total_cmp);
    Percentiles {
        p50_ms: percentile(&v, 0.5),
        p99_ms: percentile(&v, 0.99),
        mean_ms: if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        },
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
    /// Frames the capture slot replaced unseen while the pipeline was busy, as the daemon drops
    /// them: only when `paced` and the pipeline is slower than the camera. The other figures
    /// then describe a pipeline that fell behind, not the camera's rate.
    pub frames_dropped: u64,
    /// Share of catalog searches whose top-k equals exact search.
    pub topk_equal_exact: f64,
    pub searches_checked: usize,
    /// Detections per measured frame, to compare with another implementation frame by frame.
    pub detections_per_frame: Vec<usize>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
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

/// How often the index's top-k equals exact search, and the time finding out took (a
/// measurement aid the benchmark leaves out of the pipeline's figures).
#[derive(Debug, Default)]
struct ExactCheck {
    checked: usize,
    equal: usize,
    time: Duration,
}

impl ExactCheck {
    fn check(&mut self, s: &Search<'_>) {
        let started = Instant::now();
        let exact = s.catalog.search_exact(s.group, s.query, s.k);
        self.checked += 1;
        self.equal += usize::from(
            s.hits
                .iter()
                .map(|h| h.item)
                .eq(exact.iter().map(|h| h.item)),
        );
        self.time += started.elapsed();
    }
}

/// What the measured frames gave, before it is summarised.
struct Measured {
    timings: Vec<FrameTiming>,
    /// Frame-to-publish of each frame, ms, from the moment the capture thread got its bytes.
    e2e: Vec<f64>,
    shoppers: usize,
    size: (u32, u32),
    wall_s: f64,
    cpu_s: f64,
    dropped: u64,
    exact: ExactCheck,
}

pub fn run(settings: &Settings, opts: &BenchOptions) -> Result<BenchReport, BenchError> {
    let replay = replay_camera(settings)?;
    let camera_fps = if replay.fps > 0.0 { replay.fps } else { 10.0 };
    let catalog = Catalog::load(
        &settings.catalog.path,
        Some(&EmbedderFingerprint::running(
            &settings.embedder.spec,
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
    let feed = ReplayFeed::start(
        replay,
        if opts.paced { camera_fps } else { 0.0 },
        Some(engine.preparer()),
    )?;
    let measured = measure(&mut engine, &feed, opts, camera_fps)?;
    drop(feed);
    let providers = engine
        .providers()
        .iter()
        .map(|p| format!("{}: {}", p.model, p.in_use))
        .collect();
    Ok(summarise(measured, opts.paced, camera_fps, providers))
}

/// Takes `opts.warmup` frames, then measures `opts.frames` more.
fn measure(
    engine: &mut Engine,
    feed: &ReplayFeed,
    opts: &BenchOptions,
    camera_fps: f64,
) -> Result<Measured, BenchError> {
    let mut m = Measured {
        timings: Vec::with_capacity(opts.frames),
        e2e: Vec::with_capacity(opts.frames),
        shoppers: 0,
        size: (0, 0),
        wall_s: 0.0,
        cpu_s: 0.0,
        dropped: 0,
        exact: ExactCheck::default(),
    };
    let cpu_now = || crate::process::cpu_time().unwrap_or_default();
    let clock = Instant::now();
    let (mut wall, mut cpu) = (Instant::now(), cpu_now());
    for i in 0..opts.warmup + opts.frames {
        if i == opts.warmup {
            wall = Instant::now();
            cpu = cpu_now();
            m.dropped = feed.dropped();
            m.exact = ExactCheck::default();
        }
        let mut frame = feed.next()?;
        let acquired = frame.captured;
        if !opts.paced {
            // Frames carry the capture times a camera at the footage's rate would give them, so
            // the tracker's embedding cache behaves as live, however fast the benchmark runs.
            frame.captured = clock + Duration::from_secs_f64(i as f64 / camera_fps);
        }
        m.size = (frame.image.width(), frame.image.height());
        let (recs, mut t) = engine.process_inspecting(&frame, |s| {
            if opts.check_exact {
                m.exact.check(s);
            }
        })?;
        let publish = Instant::now();
        std::hint::black_box(serde_json::to_vec(&recs)?);
        t.publish += publish.elapsed();
        if i >= opts.warmup {
            m.e2e.push(ms(acquired.elapsed()));
            m.shoppers += recs.shoppers.iter().filter(|s| s.in_view).count();
            m.timings.push(t);
        }
    }
    m.wall_s = wall.elapsed().as_secs_f64() - m.exact.time.as_secs_f64();
    m.cpu_s = (cpu_now() - cpu).as_secs_f64();
    m.dropped = feed.dropped() - m.dropped;
    Ok(m)
}

fn summarise(m: Measured, paced: bool, camera_fps: f64, providers: Vec<String>) -> BenchReport {
    let Measured {
        timings,
        e2e,
        shoppers,
        size,
        wall_s,
        cpu_s,
        dropped,
        exact,
    } = m;
    let n = timings.len().max(1) as f64;
    let inference: f64 = timings.iter().map(|t| t.inference().as_secs_f64()).sum();
    let each = |f: &dyn Fn(&FrameTiming) -> f64| timings.iter().map(f).collect::<Vec<f64>>();
    let mean = |f: &dyn Fn(&FrameTiming) -> f64| timings.iter().map(f).sum::<f64>() / n;
    BenchReport {
        frames: timings.len(),
        frame_size: size,
        camera_fps,
        wall_s,
        fps: timings.len() as f64 / wall_s,
        decode_resize: pct(each(&|t| ms(t.decode + t.detect.preprocess))),
        detector: pct(each(&|t| ms(t.detect.inference + t.detect.postprocess))),
        crops_embed: pct(each(&|t| ms(t.embed))),
        pose: pct(each(&|t| ms(t.pose))),
        search: pct(each(&|t| ms(t.search))),
        publish: pct(each(&|t| ms(t.publish))),
        frame_to_publish: pct(e2e),
        outside_onnx_runtime_share: 1.0 - inference / wall_s,
        outside_capture_ms: mean(&|t| ms(t.decode + t.detect.preprocess)),
        outside_pipeline_ms: mean(&|t| {
            ms(t.total() - t.decode - t.detect.preprocess - t.inference())
        }),
        crops_per_frame: mean(&|t| t.crops as f64),
        reused_per_frame: mean(&|t| t.reused as f64),
        people_posed_per_frame: mean(&|t| t.people_posed as f64),
        garment_share_mean: timings.iter().map(|t| t.share_sum).sum::<f64>()
            / timings.iter().map(|t| t.masked).sum::<usize>().max(1) as f64,
        crops_skipped: timings.iter().map(|t| t.skipped).sum(),
        shoppers_per_frame: shoppers as f64 / n,
        providers,
        cpu_ms_per_frame: cpu_s * 1e3 / n,
        cpu_cores: cpu_s / wall_s,
        paced,
        frames_dropped: dropped,
        topk_equal_exact: if exact.checked == 0 {
            1.0
        } else {
            exact.equal as f64 / exact.checked as f64
        },
        searches_checked: exact.checked,
        detections_per_frame: timings.iter().map(|t| t.detections).collect(),
    }
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
        if self.frames_dropped > 0 {
            writeln!(
                f,
                "the pipeline fell behind the camera: {} frames replaced in the slot unseen, as \
                 the daemon would drop them",
                self.frames_dropped
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
