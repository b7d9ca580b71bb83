//! `vitrine bench catalog`: the catalog targets measured end to end on this machine — import and
//! index time, restart (reload from the dump) time, recall@10 against exact search, search
//! latency, and, with `--pipeline`, the camera pipeline's frame rate before and during an import.
//!
//! The catalog is synthetic (see [`crate::catalog::synth`]) unless `--bundle` names a real one,
//! e.g. the full Fashion-MNIST catalog made by `catalog/make_full_catalog.py`. The frame rate is
//! the daemon's own: its capture stage over the config's replay folder feeding the [`Engine`].

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde::Serialize;

use super::{BenchError, ReplayFeed, percentile, replay_camera};
use crate::catalog::import::{CatalogService, ImportInput, ImportRequest, JobKind, ServiceConfig};
use crate::catalog::index::exact_top_k;
use crate::catalog::items::EmbedderFingerprint;
use crate::catalog::synth::{self, Embeddings, Rng};
use crate::catalog::{Catalog, CatalogError, IndexParams};
use crate::config::Settings;
use crate::pipeline::Engine;
use crate::scratch::ScratchDir;

#[derive(Debug, Clone)]
pub struct CatalogBenchOptions {
    pub items: usize,
    /// Embedding size when no config is given (else the configured embedder's).
    pub dim: usize,
    pub queries: usize,
    pub seed: u64,
    pub embeddings: Embeddings,
    /// An existing bundle folder to import instead of a synthetic one.
    pub bundle: Option<PathBuf>,
    pub params: IndexParams,
    /// Build the indexes into the bundle first, as `vitrine catalog publish --with-index` does at
    /// HQ, so the import loads them instead.
    pub prebuilt: bool,
    pub import_threads: usize,
    pub import_nice: i32,
    /// Also measure the pipeline's frame rate during an import (needs the config's models).
    pub pipeline: bool,
    /// Feed the pipeline frames as fast as it takes them instead of at the camera's rate.
    pub flat_out: bool,
    /// Where to put the bundle and data folder (default: a temporary folder, removed after).
    pub work: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// The same percentiles in CPU time of the searching thread: what an idle core shows, free
    /// of the preemption a busy shared machine adds to wall time.
    pub cpu_p50_us: f64,
    pub cpu_p99_us: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PipelineImpact {
    /// The camera's rate frames were offered at (0: as fast as the pipeline takes them).
    pub offered_fps: f64,
    pub fps_before: f64,
    pub fps_during: f64,
    pub drop_percent: f64,
    pub import_under_load_s: f64,
    pub frames_during: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct CatalogBenchReport {
    pub machine: String,
    pub cores: usize,
    pub items: usize,
    pub dim: usize,
    pub source: String,
    pub params: IndexParams,
    pub import_threads: usize,
    pub import_nice: i32,
    pub generate_s: f64,
    /// Import of the bundle folder: validation, index build, writing the version, activation.
    pub import_s: f64,
    pub import_stages_s: Vec<(String, f64)>,
    /// CPU time (all threads) the import used: on a shared machine, cpu/cores bounds what the
    /// wall time would be on an idle one.
    pub import_cpu_s: f64,
    /// Load average when the run ended (other work on the machine inflates wall times).
    pub load_average: String,
    /// A fresh service opening the data folder and loading the active version from its dump.
    pub restart_s: f64,
    pub queries: usize,
    pub seed: u64,
    pub recall_at_10: f64,
    pub search: Latency,
    pub pipeline: Option<PipelineImpact>,
    /// With `--prebuilt`: seconds HQ spent building the indexes into the bundle (not part of
    /// `import_s`), and whether the import loaded them.
    pub prebuilt_build_s: Option<f64>,
    pub prebuilt_loaded: Option<bool>,
}

fn machine() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.into())
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// An import's wall seconds, seconds per stage, and warnings.
type Timed = (f64, Vec<(String, f64)>, Vec<String>);

/// Runs an import on this thread while another thread records when each stage began.
fn timed_import(service: &CatalogService, input: ImportInput) -> Result<Timed, CatalogError> {
    let job = service.new_job(JobKind::Import);
    let stages = Arc::new(Mutex::new(Vec::<(String, Instant)>::new()));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (job, stages, done) = (job.clone(), stages.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let s = job.status().stage.to_string();
                let mut g = stages.lock().unwrap_or_else(|p| p.into_inner());
                if g.last().is_none_or(|(last, _)| *last != s) {
                    g.push((s, Instant::now()));
                }
                drop(g);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let t = Instant::now();
    let req = ImportRequest {
        input,
        activate: true,
        label: None,
        source: Some("bench".into()),
    };
    let r = service.import_as(&job, req);
    let total = t.elapsed().as_secs_f64();
    let end = Instant::now();
    done.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    let warnings = r?.warnings;
    let g = stages.lock().unwrap_or_else(|p| p.into_inner());
    let per: Vec<(String, f64)> = g
        .iter()
        .enumerate()
        .filter(|(_, (s, _))| s != "done")
        .map(|(i, (s, at))| {
            let next = g.get(i + 1).map_or(end, |(_, t)| *t);
            (s.clone(), (next - *at).as_secs_f64())
        })
        .collect();
    Ok((total, per, warnings))
}

/// With `--prebuilt`, builds the indexes into the bundle folder as HQ would and returns the
/// seconds it took; without, removes any a previous run left in a reused `--work` folder.
fn prebuild(
    bundle: &std::path::Path,
    fingerprint: &EmbedderFingerprint,
    opts: &CatalogBenchOptions,
) -> Result<Option<f64>, BenchError> {
    let index = bundle.join(crate::catalog::prebuilt::INDEX_DIR);
    if !opts.prebuilt {
        if index.exists() && opts.bundle.is_none() {
            std::fs::remove_dir_all(&index).map_err(|source| CatalogError::Write {
                path: index,
                source,
            })?;
        }
        return Ok(None);
    }
    eprintln!("building the indexes into the bundle, as HQ does…");
    let t = Instant::now();
    let b = crate::catalog::bundle::read_bundle(bundle, Some(fingerprint), &Default::default())?;
    let vectors = b.vectors.ok_or(BenchError::NoEmbeddings)?;
    crate::catalog::prebuilt::write(
        bundle,
        b.items,
        vectors,
        fingerprint,
        &opts.params,
        &|_, _| {},
    )?;
    Ok(Some(t.elapsed().as_secs_f64()))
}

pub fn run(
    settings: Option<&Settings>,
    opts: &CatalogBenchOptions,
) -> Result<CatalogBenchReport, BenchError> {
    let tmp;
    let work = match &opts.work {
        Some(w) => w.clone(),
        None => {
            tmp = ScratchDir::new("bench")
                .map_err(|(path, source)| CatalogError::Write { path, source })?;
            tmp.path().to_path_buf()
        }
    };
    let fingerprint = match settings {
        Some(s) => EmbedderFingerprint::running(&s.embedder.spec, &s.similarity),
        None => EmbedderFingerprint {
            sha256: "synthetic".into(),
            dim: opts.dim,
            recipe: crate::vision::fusion::CNN_ONLY.into(),
        },
    };
    let t = Instant::now();
    let (bundle, source) = bundle_to_import(&work, opts, &fingerprint)?;
    let generate_s = t.elapsed().as_secs_f64();
    let prebuilt_build_s = prebuild(&bundle, &fingerprint, opts)?;
    let data = work.join("data");
    let _ = std::fs::remove_dir_all(&data);
    let cfg = ServiceConfig {
        data_dir: data.clone(),
        seed: None,
        params: opts.params,
        fingerprint: fingerprint.clone(),
        embedder: None,
        versions_kept: 3,
        upload_limit: u64::MAX / 8,
        unpack_limit: u64::MAX / 8,
        import_threads: opts.import_threads,
        import_nice: opts.import_nice,
    };
    let empty = || {
        Arc::new(arc_swap::ArcSwap::from_pointee(Catalog::empty(
            data.clone(),
            fingerprint.dim,
            &opts.params,
        )))
    };

    eprintln!("importing…");
    let service = CatalogService::open(cfg.clone(), empty(), Box::new(|_| {}))?;
    let cpu_now = || crate::process::cpu_time().unwrap_or_default();
    let cpu = cpu_now();
    let (import_s, import_stages_s, warnings) =
        timed_import(&service, ImportInput::Folder(bundle.clone()))?;
    let prebuilt_loaded = opts.prebuilt.then(|| {
        !warnings
            .iter()
            .any(|w| w.contains("prebuilt indexes were not used"))
    });
    let import_cpu_s = (cpu_now() - cpu).as_secs_f64();
    drop(service);

    eprintln!("restarting…");
    let t = Instant::now();
    let service = CatalogService::open(cfg.clone(), empty(), Box::new(|_| {}))?;
    let catalog = service.load_initial()?;
    let restart_s = t.elapsed().as_secs_f64();
    service.shared().store(catalog.clone());

    eprintln!("recall and latency over {} queries…", opts.queries);
    let (recall_at_10, search) = recall_and_latency(&catalog, opts)?;

    let pipeline = match (opts.pipeline, settings) {
        (true, Some(s)) => Some(pipeline_impact(s, &service, &bundle, opts.flat_out)?),
        (true, None) => return Err(BenchError::NeedsModels),
        _ => None,
    };

    Ok(CatalogBenchReport {
        machine: machine(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        items: catalog.items.len(),
        dim: fingerprint.dim,
        source,
        params: opts.params,
        import_threads: opts.import_threads,
        import_nice: opts.import_nice,
        generate_s,
        import_s,
        import_stages_s,
        import_cpu_s,
        load_average: super::load_average()
            .map(|l| format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2]))
            .unwrap_or_default(),
        restart_s,
        queries: opts.queries,
        seed: opts.seed,
        recall_at_10,
        search,
        pipeline,
        prebuilt_build_s,
        prebuilt_loaded,
    })
}

/// The bundle folder to import and how to describe it: `--bundle`, or a synthetic one made in
/// `work` (kept there, so a `--work` folder skips the generation next time).
fn bundle_to_import(
    work: &std::path::Path,
    opts: &CatalogBenchOptions,
    fingerprint: &EmbedderFingerprint,
) -> Result<(PathBuf, String), CatalogError> {
    if let Some(b) = &opts.bundle {
        return Ok((b.clone(), format!("bundle {}", b.display())));
    }
    let b = work.join("bundle");
    if !b.join("manifest.json").is_file() {
        eprintln!(
            "generating {} synthetic items (seed {})…",
            opts.items, opts.seed
        );
        synth::write_bundle(
            &b,
            "bench",
            opts.items,
            opts.items,
            fingerprint,
            opts.embeddings,
            "bench",
            opts.seed,
        )?;
    }
    Ok((b, format!("synthetic, seed {}", opts.seed)))
}

/// Recall@10 of the index against exact search, and search latency, over `opts.queries` queries
/// near random catalog items.
fn recall_and_latency(
    catalog: &Catalog,
    opts: &CatalogBenchOptions,
) -> Result<(f64, Latency), BenchError> {
    // Exact search over the vectors the index holds, grouped as the index groups them.
    let exact: std::collections::BTreeMap<String, Vec<(usize, Vec<f32>)>> = catalog
        .group_indexes()
        .iter()
        .map(|(g, idx)| (g.clone(), idx.live_vectors()))
        .collect();
    let mut rng = Rng::new(opts.seed ^ 0x5EED);
    // Queries start from random catalog items, so groups are queried in proportion to size.
    let all: Vec<(&String, &Vec<f32>)> = exact
        .iter()
        .flat_map(|(g, vs)| vs.iter().map(move |(_, v)| (g, v)))
        .collect();
    if all.is_empty() {
        return Err(BenchError::EmptyCatalog);
    }
    let queries: Vec<(String, Vec<f32>)> = (0..opts.queries)
        .map(|_| {
            let (g, base) = all[rng.below(all.len())];
            (g.clone(), synth::perturbed(base, 0.75, &mut rng))
        })
        .collect();
    let truth: Vec<Vec<usize>> = queries
        .par_iter()
        .map(|(g, q)| {
            exact_top_k(&exact[g], q, 10)
                .iter()
                .map(|h| h.item)
                .collect()
        })
        .collect();
    let ef = opts.params.ef_search;
    let mut lat = Vec::with_capacity(queries.len());
    let mut cpu_lat = Vec::with_capacity(queries.len());
    let mut found = 0usize;
    for ((g, q), t) in queries.iter().zip(&truth) {
        let (start, cpu) = (Instant::now(), thread_cpu());
        let hits = catalog.search(g, q, 10, ef);
        cpu_lat.push((thread_cpu() - cpu).as_secs_f64() * 1e6);
        lat.push(start.elapsed().as_secs_f64() * 1e6);
        found += hits.iter().filter(|h| t.contains(&h.item)).count();
    }
    lat.sort_by(f64::total_cmp);
    cpu_lat.sort_by(f64::total_cmp);
    let recall_at_10 = found as f64 / (queries.len().max(1) * 10) as f64;
    Ok((
        recall_at_10,
        Latency {
            p50_us: percentile(&lat, 0.50),
            p99_us: percentile(&lat, 0.99),
            max_us: lat.last().copied().unwrap_or(0.0),
            cpu_p50_us: percentile(&cpu_lat, 0.50),
            cpu_p99_us: percentile(&cpu_lat, 0.99),
        },
    ))
}

/// Frames per second of the real pipeline (replay frames at the camera's rate, or as fast as it
/// goes) for a while on its own, then while the same bundle is imported again on the import
/// threads.
fn pipeline_impact(
    settings: &Settings,
    service: &CatalogService,
    bundle: &std::path::Path,
    flat_out: bool,
) -> Result<PipelineImpact, BenchError> {
    let replay = replay_camera(settings)?;
    let camera_fps = replay.fps;
    let mut engine = Engine::build(settings, service.shared().clone())?;
    // Frames come from the daemon's capture stage at the camera's rate (flat out when
    // `flat_out`); a frame that finds the pipeline busy is replaced in the slot, as in the shop,
    // so the rate achieved is what the display would show.
    let feed = ReplayFeed::start(
        replay,
        if flat_out { 0.0 } else { camera_fps },
        Some(engine.preparer()),
    )?;
    let frame = |engine: &mut Engine| -> Result<(), BenchError> {
        engine.process(&feed.next()?)?;
        Ok(())
    };
    eprintln!("pipeline alone…");
    for _ in 0..10 {
        frame(&mut engine)?;
    }
    let t = Instant::now();
    let mut n = 0;
    while t.elapsed() < Duration::from_secs(20) {
        frame(&mut engine)?;
        n += 1;
    }
    let fps_before = n as f64 / t.elapsed().as_secs_f64();

    eprintln!("pipeline during an import…");
    let running = Arc::new(AtomicBool::new(true));
    let outcome = std::thread::scope(|scope| {
        let running2 = running.clone();
        let importer = scope.spawn(move || {
            crate::catalog::import::lower_priority(service.config().import_nice);
            let t = Instant::now();
            let r = timed_import(service, ImportInput::Folder(bundle.to_path_buf()));
            running2.store(false, Ordering::Relaxed);
            r.map(|_| t.elapsed().as_secs_f64())
        });
        let t = Instant::now();
        let mut n = 0usize;
        while running.load(Ordering::Relaxed) {
            if let Err(e) = frame(&mut engine) {
                running.store(false, Ordering::Relaxed);
                return Err(e);
            }
            n += 1;
        }
        let wall = t.elapsed().as_secs_f64();
        let import_s = importer.join().map_err(|_| BenchError::ImportPanicked)??;
        Ok((n, wall, import_s))
    });
    let (frames_during, wall, import_under_load_s) = outcome?;
    let fps_during = frames_during as f64 / wall.max(1e-9);
    Ok(PipelineImpact {
        offered_fps: if flat_out { 0.0 } else { camera_fps },
        fps_before,
        fps_during,
        drop_percent: 100.0 * (1.0 - fps_during / fps_before.max(1e-9)),
        import_under_load_s,
        frames_during,
    })
}

impl std::fmt::Display for CatalogBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "catalog benchmark on {} ({} cores)",
            self.machine, self.cores
        )?;
        writeln!(
            f,
            "{} items × {} ({}), M={} ef_construction={} ef_search={}, {} import threads at nice {}",
            self.items,
            self.dim,
            self.source,
            self.params.max_connections,
            self.params.ef_construction,
            self.params.ef_search,
            if self.import_threads == 0 {
                "all".to_string()
            } else {
                self.import_threads.to_string()
            },
            self.import_nice
        )?;
        let stages: Vec<String> = self
            .import_stages_s
            .iter()
            .map(|(s, t)| format!("{s} {t:.1} s"))
            .collect();
        writeln!(
            f,
            "import + index: {:.1} s  ({}); {:.1} CPU-s",
            self.import_s,
            stages.join(", "),
            self.import_cpu_s
        )?;
        writeln!(f, "restart (reload from dump): {:.2} s", self.restart_s)?;
        writeln!(
            f,
            "recall@10 vs exact: {:.4} over {} queries (seed {})",
            self.recall_at_10, self.queries, self.seed
        )?;
        writeln!(
            f,
            "search latency: p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs (thread CPU time: p50 {:.0} µs, p99 {:.0} µs)",
            self.search.p50_us,
            self.search.p99_us,
            self.search.max_us,
            self.search.cpu_p50_us,
            self.search.cpu_p99_us
        )?;
        if let (Some(b), Some(loaded)) = (self.prebuilt_build_s, self.prebuilt_loaded) {
            writeln!(
                f,
                "prebuilt indexes: built into the bundle in {b:.1} s (HQ's side); the import {} them",
                if loaded { "loaded" } else { "did NOT load" }
            )?;
        }
        if let Some(p) = &self.pipeline {
            writeln!(
                f,
                "pipeline (frames offered at {}): {:.2} fps alone, {:.2} fps during an import ({:.1} % drop); that import took {:.1} s",
                if p.offered_fps > 0.0 {
                    format!("{:.0} fps", p.offered_fps)
                } else {
                    "full speed".into()
                },
                p.fps_before,
                p.fps_during,
                p.drop_percent,
                p.import_under_load_s
            )?;
        }
        writeln!(f, "load average at the end: {}", self.load_average)?;
        Ok(())
    }
}
