//! The models the evaluation tools run, built from a Vitrine config file.
//!
//! [`crate::config::Settings`] checks a whole appliance — camera, catalog, both models — because
//! the daemon needs all of them. Scoring a detector needs only the detector (and linting a
//! dataset only the person detector), so this reads the same [`RawConfig`] with the same model
//! loader ([`ModelSpec`]), defaults and range checks, but builds just the part asked for: a
//! trainer can evaluate a new model on a laptop that has no catalog and no camera.

use std::path::{Path, PathBuf};

use image::RgbImage;

use super::EvalError;
use super::formats::{BoxRecord, Dataset, ImageRecord};
use crate::catalog::IndexParams;
use crate::config::RawConfig;
use crate::config::model::{DetectorSpec, EmbedderSpec, ModelSpec};
use crate::vision::detector::Detector;
use crate::vision::embedder::Embedder;
use crate::vision::geometry::NmsParams;
use crate::vision::preprocess::ResizeMode;
use crate::vision::runtime::SessionOptions;

struct Base {
    config: PathBuf,
    dir: PathBuf,
    raw: RawConfig,
    library: Option<PathBuf>,
    session: SessionOptions,
}

fn read(config: &Path) -> Result<Base, EvalError> {
    let fail = |problems: Vec<String>| EvalError::Config {
        path: config.into(),
        problems,
    };
    let text = std::fs::read_to_string(config)
        .map_err(|e| fail(vec![format!("cannot read the file: {e}")]))?;
    let raw: RawConfig = toml::from_str(&text).map_err(|e| fail(vec![e.message().to_string()]))?;
    let dir = config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let library = raw.runtime.onnxruntime.as_ref().map(|p| dir.join(p));
    let session = SessionOptions {
        providers: raw.runtime.providers.clone(),
        require_gpu: raw.runtime.require_gpu,
        tensorrt_cache: raw.runtime.tensorrt_cache.as_ref().map(|p| dir.join(p)),
        intra_threads: raw.runtime.intra_threads,
    };
    Ok(Base {
        config: config.into(),
        dir,
        raw,
        library,
        session,
    })
}

/// Everything needed to build the configured detector.
#[derive(Debug, Clone)]
pub struct DetectorSetup {
    pub spec: DetectorSpec,
    pub nms: NmsParams,
    pub resize: ResizeMode,
    pub library: Option<PathBuf>,
    pub session: SessionOptions,
    /// The config's `regions.person_labels`: what the lint counts as a person.
    pub person_labels: Vec<String>,
}

impl DetectorSetup {
    /// The detector of `config`, or the model TOML `model` with `config`'s runtime and
    /// thresholds. `min_score` overrides the score threshold (evaluation wants low-scoring boxes
    /// too: the TF OD API's eval configs keep everything above 1e-8).
    pub fn from_config(
        config: &Path,
        model: Option<&Path>,
        min_score: Option<f32>,
    ) -> Result<Self, EvalError> {
        let b = read(config)?;
        let d = &b.raw.detector;
        let mut problems = Vec::new();
        let score = min_score.unwrap_or(d.score_threshold);
        if !(score > 0.0 && score <= 1.0) {
            problems.push(format!("score threshold {score} must be in (0, 1]"));
        }
        if !(d.iou_threshold > 0.0 && d.iou_threshold <= 1.0) {
            problems.push(format!(
                "detector.iou_threshold = {} must be in (0, 1]",
                d.iou_threshold
            ));
        }
        if !(1..=1000).contains(&d.max_detections) {
            problems.push(format!(
                "detector.max_detections = {} must be between 1 and 1000",
                d.max_detections
            ));
        }
        let model_path = model
            .map(Path::to_path_buf)
            .unwrap_or_else(|| b.dir.join(&d.model));
        let spec = ModelSpec::detector(&model_path).map_err(|p| {
            problems.extend(p);
        });
        if let Some(l) = b.library.as_ref().filter(|l| !l.is_file()) {
            problems.push(format!(
                "runtime.onnxruntime = {} does not exist (run scripts/bootstrap)",
                l.display()
            ));
        }
        match spec {
            Ok(spec) if problems.is_empty() => Ok(Self {
                spec,
                nms: NmsParams {
                    score_threshold: score,
                    iou_threshold: d.iou_threshold,
                    max_detections: d.max_detections,
                },
                resize: d.resize,
                library: b.library,
                session: b.session,
                person_labels: b.raw.regions.person_labels.clone(),
            }),
            _ => Err(EvalError::Config {
                path: b.config,
                problems,
            }),
        }
    }

    pub fn build(&self) -> Result<Detector, EvalError> {
        Ok(Detector::build(
            &self.spec,
            &self.session,
            self.library.as_deref(),
            self.nms,
            self.resize,
        )?)
    }
}

/// Everything needed to embed queries and search the configured catalog.
#[derive(Debug, Clone)]
pub struct EmbedderSetup {
    pub spec: EmbedderSpec,
    pub library: Option<PathBuf>,
    pub session: SessionOptions,
    pub catalog: PathBuf,
    pub index: IndexParams,
}

impl EmbedderSetup {
    /// The embedder and catalog of `config`; `catalog` overrides the catalog folder.
    pub fn from_config(config: &Path, catalog: Option<&Path>) -> Result<Self, EvalError> {
        let b = read(config)?;
        let mut problems = b.raw.catalog.index.problems();
        let spec =
            ModelSpec::embedder(&b.dir.join(&b.raw.embedder.model)).map_err(|p| problems.extend(p));
        let catalog = catalog
            .map(Path::to_path_buf)
            .unwrap_or_else(|| b.dir.join(&b.raw.catalog.path));
        match spec {
            Ok(spec) if problems.is_empty() => Ok(Self {
                spec,
                library: b.library,
                session: b.session,
                catalog,
                index: b.raw.catalog.index,
            }),
            _ => Err(EvalError::Config {
                path: b.config,
                problems,
            }),
        }
    }

    pub fn build(&self) -> Result<Embedder, EvalError> {
        Ok(Embedder::build(
            &self.spec,
            &self.session,
            self.library.as_deref(),
        )?)
    }
}

pub fn open_rgb(path: &Path) -> Result<RgbImage, EvalError> {
    Ok(image::open(path)
        .map_err(|e| EvalError::Image {
            path: path.into(),
            message: e.to_string(),
        })?
        .into_rgb8())
}

/// Runs `det` over the images of `gt` (names relative to `root`): the predictions, one record per
/// image under the ground truth's own name so the two align exactly.
pub fn predict(
    det: &mut Detector,
    gt: &Dataset,
    root: &Path,
    mut progress: impl FnMut(usize, usize),
) -> Result<Dataset, EvalError> {
    let mut images = Vec::with_capacity(gt.images.len());
    for (i, rec) in gt.images.iter().enumerate() {
        let img = open_rgb(&root.join(&rec.image))?;
        let dets = det.detect(&img)?;
        images.push(ImageRecord {
            image: rec.image.clone(),
            width: Some(img.width()),
            height: Some(img.height()),
            boxes: dets
                .into_iter()
                .map(|d| BoxRecord {
                    label: d.label,
                    score: Some(d.score),
                    bbox: d.bbox,
                })
                .collect(),
        });
        progress(i + 1, gt.images.len());
    }
    Ok(Dataset {
        images,
        source: root.into(),
    })
}
