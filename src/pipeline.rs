//! The inference stage: one thread that owns the ONNX sessions and turns each frame taken from
//! the [`LatestSlot`] into published [`Recommendations`].
//!
//! Per frame: detect → garment regions per shopper → tracker → embed the garments that need it
//! (one batch) → search the active catalog → publish on a `watch` channel, which keeps only the
//! newest value, the right semantics for a display. With a pose model, the shoppers whose
//! garments are due (the tracker's cadence) go through it first, all in one run: their garment
//! regions come from the body and each crop is masked to the shopper before embedding. The sessions are built on this thread and
//! never leave it (`Session::run` needs `&mut`), so HTTP handlers never wait on a model.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use crate::capture::{Frame, LatestSlot};
use crate::catalog::{Catalog, Hit, SharedCatalog};
use crate::config::PoseSettings;
use crate::config::Settings;
use crate::recommend::{GarmentRec, ItemRec, Recommendations, ShopperRec, Tracker};
use crate::shutdown::Stop;
use crate::telemetry::{Audience, Metrics, Stage};
use crate::vision::detector::{DetectTiming, Detector};
use crate::vision::embedder::Embedder;
use crate::vision::fusion::Recipe;
use crate::vision::garment::GarmentCrop;
use crate::vision::pose::{PersonMask, PoseEstimator};
use crate::vision::regions::{RegionSettings, body_regions, shoppers};
use crate::vision::{ModelError, ProviderReport};

/// Where one frame's time went, for `vitrine bench` and the stage histograms.
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameTiming {
    pub decode: Duration,
    pub detect: DetectTiming,
    /// Cropping, resizing and the embedder run.
    pub embed: Duration,
    /// The part of `embed` spent inside ONNX Runtime.
    pub embed_inference: Duration,
    /// The pose model's preprocessing, run and region finding (zero without `[pose]`).
    pub pose: Duration,
    pub pose_inference: Duration,
    pub people_posed: usize,
    /// Masked crops, the sum of their shares of shopper pixels, and those skipped for too little.
    pub masked: usize,
    pub share_sum: f64,
    pub skipped: usize,
    pub search: Duration,
    pub publish: Duration,
    pub crops: usize,
    pub reused: usize,
    /// Detections the detector returned (all labels), for comparing runs.
    pub detections: usize,
}

impl FrameTiming {
    pub fn inference(&self) -> Duration {
        self.detect.inference + self.embed_inference + self.pose_inference
    }
    pub fn total(&self) -> Duration {
        self.decode
            + self.detect.preprocess
            + self.detect.inference
            + self.detect.postprocess
            + self.pose
            + self.embed
            + self.search
            + self.publish
    }
}

/// A frame's garment crops and the (track, garment) each belongs to.
type CropsToEmbed = (Vec<GarmentCrop>, Vec<(usize, usize)>);

/// The pose model and what to do with its answers.
pub struct PoseStage {
    pub estimator: PoseEstimator,
    pub settings: PoseSettings,
}

/// Everything the inference thread owns.
pub struct Engine {
    pub detector: Detector,
    pub embedder: Embedder,
    pub pose: Option<PoseStage>,
    regions: RegionSettings,
    similarity: Recipe,
    tracker: Tracker,
    catalog: SharedCatalog,
    /// The catalog the tracker's lists refer to; a swap invalidates them.
    catalog_seen: Option<Arc<Catalog>>,
    top_k: usize,
    ef: usize,
}

/// One catalog search made for a frame, as [`Engine::process_inspecting`] shows it: the query,
/// the group it searched, and the index's answer before the tracker takes it.
pub struct Search<'a> {
    pub catalog: &'a Catalog,
    pub group: &'a str,
    pub query: &'a [f32],
    /// The top-k asked for (`hits` may be shorter in a small group).
    pub k: usize,
    pub hits: &'a [Hit],
}

impl Engine {
    pub fn build(settings: &Settings, catalog: SharedCatalog) -> Result<Self, ModelError> {
        let detector = Detector::build(&settings.detector, &settings.runtime)?;
        let embedder = Embedder::build(
            &settings.embedder.spec,
            &settings.runtime.session,
            settings.runtime.library.as_deref(),
        )?;
        let pose = match &settings.pose {
            None => None,
            Some(p) => Some(PoseStage {
                estimator: PoseEstimator::build(
                    &p.spec,
                    &settings.runtime.session,
                    settings.runtime.library.as_deref(),
                )?,
                settings: p.clone(),
            }),
        };
        let mut regions = settings.regions.clone();
        if pose.is_some() {
            // Bodies give the regions; a fixed layout would show garments a waist-up shopper
            // does not have until their first pose run.
            regions.layout.clear();
        }
        Ok(Self {
            detector,
            embedder,
            pose,
            regions,
            similarity: settings.similarity,
            tracker: Tracker::new(settings.recommend.tracking.clone()),
            catalog,
            catalog_seen: None,
            top_k: settings.recommend.top_k,
            ef: settings.catalog.index.ef_search,
        })
    }

    /// A maker of the detector's input for the capture thread (see [`Frame::detector_input`]).
    pub fn preparer(&self) -> crate::vision::detector::InputPreparer {
        self.detector.preparer()
    }

    pub fn providers(&self) -> Vec<ProviderReport> {
        let mut out = vec![
            self.detector.provider().clone(),
            self.embedder.provider().clone(),
        ];
        out.extend(self.pose.iter().map(|p| p.estimator.provider().clone()));
        out
    }

    /// The shoppers being followed, read-only: each garment's [`GarmentTrack::last_crop`] is the
    /// rectangle and person mask its embedding was last made from (for `vitrine eval`).
    ///
    /// [`GarmentTrack::last_crop`]: crate::recommend::tracker::GarmentTrack::last_crop
    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    /// Hands what the tracker saw happen to the audience figures, with the catalog version its
    /// lists were searched in.
    pub fn record_audience(&mut self, audience: &Audience) {
        let events = self.tracker.take_audience();
        if !events.is_empty() {
            let version = self
                .catalog_seen
                .as_ref()
                .map_or("", |c| c.version.as_str());
            audience.record(events, version);
        }
    }

    /// Runs the pose model on the people due for it (one run) and gives their tracks the garment
    /// regions of their bodies. Returns each posed track with its person mask.
    fn pose_due(
        &mut self,
        frame: &Frame,
        timing: &mut FrameTiming,
    ) -> Result<Vec<(usize, PersonMask)>, ModelError> {
        let Some(pose) = self.pose.as_mut() else {
            return Ok(Vec::new());
        };
        let now = frame.captured;
        let people = self.tracker.pose_requests(now, pose.settings.refresh);
        if people.is_empty() {
            return Ok(Vec::new());
        }
        let t = Instant::now();
        let before = pose.estimator.inference_time();
        let boxes: Vec<_> = people
            .iter()
            .map(|&ti| self.tracker.tracks()[ti].bbox)
            .collect();
        let poses = pose.estimator.estimate(&frame.image, &boxes)?;
        let mut masks = Vec::with_capacity(people.len());
        let (w, h) = (frame.image.width(), frame.image.height());
        for (ti, p) in people.into_iter().zip(poses) {
            let seen = p.keypoints_in_frame(w, h);
            let regions = body_regions(&seen, p.confidence, &pose.settings.gates);
            self.tracker.set_body(ti, regions, now);
            masks.push((ti, p.mask));
        }
        timing.pose = t.elapsed();
        timing.pose_inference = pose.estimator.inference_time() - before;
        timing.people_posed = masks.len();
        Ok(masks)
    }

    /// The crops to embed this frame and the garments they belong to. With a pose model only the
    /// people just posed (and lone garments) are embedded, each crop masked to the shopper; crops
    /// with too little shopper are skipped until the next pose run.
    fn garment_crops(
        &mut self,
        frame: &Frame,
        timing: &mut FrameTiming,
    ) -> Result<CropsToEmbed, ModelError> {
        let now = frame.captured;
        let masks = self.pose_due(frame, timing)?;
        let (requests, reused) = match &self.pose {
            None => self.tracker.embed_requests(now),
            Some(_) => {
                let tracks = self.tracker.tracks();
                self.tracker.embed_requests_where(now, |ti| {
                    !tracks[ti].person || masks.iter().any(|(m, _)| *m == ti)
                })
            }
        };
        timing.reused = reused;
        let (w, h) = (frame.image.width(), frame.image.height());
        let mut crops = Vec::with_capacity(requests.len());
        let mut owners = Vec::with_capacity(requests.len());
        for (ti, gi, b) in requests {
            let Some(rect) = b.crop_rect(w, h) else {
                continue;
            };
            let mask = match (&self.pose, masks.iter().find(|(m, _)| *m == ti)) {
                (Some(p), Some((_, m))) if p.settings.mask_threshold > 0.0 => {
                    Some(m.crop_mask(rect, p.settings.mask_threshold))
                }
                _ => None,
            };
            let crop = GarmentCrop { rect, mask };
            if crop.mask.is_some() {
                let share = crop.garment_share();
                timing.masked += 1;
                timing.share_sum += f64::from(share);
                let min = self
                    .pose
                    .as_ref()
                    .map_or(0.0, |p| p.settings.min_garment_share);
                if share < min {
                    timing.skipped += 1;
                    continue;
                }
            }
            crops.push(crop);
            owners.push((ti, gi));
        }
        Ok((crops, owners))
    }

    /// Runs one frame through every stage and returns what to publish.
    pub fn process(&mut self, frame: &Frame) -> Result<(Recommendations, FrameTiming), ModelError> {
        self.process_inspecting(frame, |_| {})
    }

    /// [`Self::process`], showing each catalog search to `inspect` first, outside the stage
    /// timings (`vitrine bench --check-exact` compares the index's answers with exact search).
    pub fn process_inspecting(
        &mut self,
        frame: &Frame,
        mut inspect: impl FnMut(&Search<'_>),
    ) -> Result<(Recommendations, FrameTiming), ModelError> {
        let mut timing = FrameTiming {
            decode: frame.decode,
            ..Default::default()
        };
        let (dets, dt) = match &frame.detector_input {
            Some(input) => self.detector.detect_prepared(input)?,
            None => self.detector.detect_timed(&frame.image)?,
        };
        timing.detect = dt;
        timing.detections = dets.len();

        let t = Instant::now();
        // The tracker runs on capture time, not processing time: a frame's age decides what is
        // stale, and a benchmark replaying at full speed sees the cache as a live camera would.
        let now = frame.captured;
        self.tracker.update(shoppers(&dets, &self.regions), now);
        let (crops, owners) = self.garment_crops(frame, &mut timing)?;
        let background = self.pose.as_ref().map_or([0; 3], |p| p.settings.background);
        let before = self.embedder.inference_time();
        let vectors = self
            .embedder
            .embed_garments(&frame.image, &crops, background)?;
        // The garment's colour (from the shopper's pixels when masked) joins its embedding
        // (`[similarity]`, vision::fusion).
        let vectors = self.similarity.fuse_crops(&frame.image, &crops, vectors);
        timing.crops = crops.len();
        for (((ti, gi), v), crop) in owners.into_iter().zip(vectors).zip(crops) {
            self.tracker.set_embedding(ti, gi, v, now);
            self.tracker.set_crop(ti, gi, crop);
        }
        timing.embed = t.elapsed() - timing.pose;
        timing.embed_inference = self.embedder.inference_time() - before;

        let t = Instant::now();
        let catalog = self.catalog.load_full();
        if !self
            .catalog_seen
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, &catalog))
        {
            self.tracker.reset_lists();
            self.catalog_seen = Some(catalog.clone());
        }
        let searches: Vec<_> = self
            .tracker
            .dirty()
            .map(|(ti, gi, group, e)| (ti, gi, catalog.search(group, e, self.top_k, self.ef)))
            .collect();
        timing.search = t.elapsed();
        for (ti, gi, hits) in &searches {
            let g = &self.tracker.tracks()[*ti].garments[*gi];
            if let Some(query) = &g.embedding {
                inspect(&Search {
                    catalog: &catalog,
                    group: &g.group,
                    query,
                    k: self.top_k,
                    hits,
                });
            }
        }
        let t = Instant::now();
        for (ti, gi, hits) in searches {
            self.tracker.offer(ti, gi, hits);
        }
        timing.search += t.elapsed();

        let t = Instant::now();
        let recs = self.snapshot(frame, &catalog);
        timing.publish = t.elapsed();
        Ok((recs, timing))
    }

    fn snapshot(&self, frame: &Frame, catalog: &Catalog) -> Recommendations {
        let shoppers = self
            .tracker
            .tracks()
            .iter()
            .map(|t| ShopperRec {
                track_id: t.id,
                bbox: t.bbox,
                in_view: t.in_view,
                garments: t
                    .garments
                    .iter()
                    .map(|g| GarmentRec {
                        group: g.group.clone(),
                        kind: g.kind.clone(),
                        bbox: g.bbox,
                        items: g
                            .shown
                            .iter()
                            .filter(|h| h.item < catalog.items.len())
                            .map(|h| {
                                let it = catalog.item(h.item);
                                ItemRec {
                                    id: it.id.clone(),
                                    name: it.name.clone(),
                                    category: it.category.clone(),
                                    price: it.price,
                                    currency: it.currency.clone(),
                                    image: it.image.clone(),
                                    similarity: h.similarity,
                                }
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect();
        Recommendations {
            frame_seq: frame.seq,
            frame_width: frame.image.width(),
            frame_height: frame.image.height(),
            captured_at: humantime::format_rfc3339_millis(frame.captured_at).to_string(),
            published_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            latency_ms: frame.captured.elapsed().as_secs_f64() * 1e3,
            catalog_version: catalog.version.clone(),
            shoppers,
        }
    }
}

/// Records one frame's timings in the stage histograms.
pub fn record(metrics: &Metrics, t: &FrameTiming, frame: &Frame) {
    metrics
        .stage(Stage::Decode)
        .observe(t.decode + t.detect.preprocess);
    metrics
        .stage(Stage::Detect)
        .observe(t.detect.inference + t.detect.postprocess);
    if t.people_posed > 0 {
        metrics.stage(Stage::Pose).observe(t.pose);
    }
    metrics.stage(Stage::Embed).observe(t.embed);
    metrics.stage(Stage::Search).observe(t.search);
    metrics.stage(Stage::Publish).observe(t.publish);
    metrics
        .frame_to_publish_seconds
        .observe(frame.captured.elapsed());
    metrics.crops_embedded.inc_by(t.crops as u64);
    metrics.embeddings_reused.inc_by(t.reused as u64);
    metrics.people_posed.inc_by(t.people_posed as u64);
    metrics.garment_share.add(t.masked as u64, t.share_sum);
    metrics.garment_crops_skipped.inc_by(t.skipped as u64);
    metrics.frames_processed.inc();
}

/// Where the inference stage's results go.
pub struct Outputs {
    /// The newest recommendations, for the HTTP side.
    pub publish: watch::Sender<Arc<Recommendations>>,
    pub metrics: Arc<Metrics>,
    /// Called after every published frame: readiness, the debug view, the systemd watchdog.
    pub heartbeat: Arc<dyn Fn(&Frame) + Send + Sync>,
}

/// The inference stage once started: its thread, and word of its models.
pub struct Started {
    pub thread: std::thread::JoinHandle<()>,
    /// Each model's provider report once all are built and warm, or why one could not be.
    pub ready: tokio::sync::oneshot::Receiver<Result<Vec<ProviderReport>, ModelError>>,
}

/// Starts the inference thread. It builds and warms the models there (the sessions never leave
/// it), answers on [`Started::ready`], then processes frames from `slot` until the slot closes
/// or `stop` is set. A model that fails to build ends the thread after its answer.
pub fn start(
    settings: &Settings,
    catalog: SharedCatalog,
    slot: Arc<LatestSlot>,
    out: Outputs,
    stop: Stop,
) -> std::io::Result<Started> {
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let settings = settings.clone();
    let thread = std::thread::Builder::new()
        .name("inference".into())
        .spawn(move || match Engine::build(&settings, catalog) {
            Err(e) => {
                let _ = ready_tx.send(Err(e));
            }
            Ok(engine) => {
                let _ = ready_tx.send(Ok(engine.providers()));
                run_loop(engine, &slot, &out, &stop);
            }
        })?;
    Ok(Started { thread, ready })
}

/// The inference loop: takes frames until the slot closes, publishes each result.
pub fn run_loop(mut engine: Engine, slot: &LatestSlot, out: &Outputs, stop: &Stop) {
    loop {
        let frame = match slot.take(Duration::from_millis(500)) {
            Err(()) => break,
            Ok(None) => {
                if stop.is_set() {
                    break;
                }
                continue;
            }
            Ok(Some(f)) => f,
        };
        match engine.process(&frame) {
            Ok((recs, timing)) => {
                let t = Instant::now();
                out.metrics
                    .shoppers_in_view
                    .set(recs.shoppers.iter().filter(|s| s.in_view).count() as i64);
                out.publish.send_replace(Arc::new(recs));
                let mut timing = timing;
                timing.publish += t.elapsed();
                record(&out.metrics, &timing, &frame);
                (out.heartbeat)(&frame);
            }
            Err(e) => {
                out.metrics.pipeline_errors.inc();
                tracing::error!(error = %e, seq = frame.seq, "frame failed");
            }
        }
        // After a failed frame too: its tracker updates stand.
        engine.record_audience(&out.metrics.audience);
    }
}
