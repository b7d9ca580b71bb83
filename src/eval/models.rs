//! The models the evaluation tools run, built from a Vitrine config file exactly as the daemon
//! builds them ([`Settings::load`], then `Detector::build` / `Embedder::build`), so a score
//! measured here is the score of what `vitrine serve` runs: same runtime, providers, resize mode
//! and NMS. `--detector` swaps in another detector model TOML (a freshly trained one) while
//! keeping the config's runtime and thresholds.

use std::path::{Path, PathBuf};

use image::RgbImage;

use super::EvalError;
use super::formats::{BoxRecord, Dataset, ImageRecord};
use crate::config::Settings;
use crate::config::model::ModelSpec;
use crate::vision::detector::Detector;
use crate::vision::embedder::Embedder;

/// The configured detector, ready to build.
#[derive(Debug, Clone)]
pub struct DetectorSetup {
    pub settings: Settings,
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
        let mut settings = Settings::load(config)?;
        if let Some(m) = model {
            settings.detector.spec =
                ModelSpec::detector(m).map_err(|problems| EvalError::Invalid {
                    path: m.into(),
                    problems,
                })?;
        }
        if let Some(s) = min_score {
            if !(s > 0.0 && s <= 1.0) {
                return Err(EvalError::Usage(format!(
                    "score threshold {s} must be in (0, 1]"
                )));
            }
            settings.detector.nms.score_threshold = s;
        }
        Ok(Self { settings })
    }

    /// The config's `regions.person_labels`: what the lint counts as a person.
    pub fn person_labels(&self) -> &[String] {
        &self.settings.regions.person_labels
    }

    pub fn build(&self) -> Result<Detector, EvalError> {
        let s = &self.settings;
        Ok(Detector::build(&s.detector, &s.runtime)?)
    }
}

/// The configured embedder and the catalog folder to search.
#[derive(Debug, Clone)]
pub struct EmbedderSetup {
    pub settings: Settings,
    pub catalog: PathBuf,
}

impl EmbedderSetup {
    /// The embedder and catalog of `config`; `catalog` overrides the catalog folder.
    pub fn from_config(config: &Path, catalog: Option<&Path>) -> Result<Self, EvalError> {
        let settings = Settings::load(config)?;
        let catalog = catalog
            .map(Path::to_path_buf)
            .unwrap_or_else(|| settings.catalog.path.clone());
        Ok(Self { settings, catalog })
    }

    pub fn build(&self) -> Result<Embedder, EvalError> {
        let s = &self.settings;
        Ok(Embedder::build(
            &s.embedder.spec,
            &s.runtime.session,
            s.runtime.library.as_deref(),
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
