//! The per-model TOML files under `models/` (CONTRACTS.md §1): what a model file is, how to feed
//! it and how to read its outputs. Raw serde types here; [`ModelSpec::load`] turns one into a
//! checked spec (files exist, checksum matches, label map parses) and reports every problem.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::vision::anchors::AnchorParams;
use crate::vision::labels::LabelMap;
use crate::vision::preprocess::InputSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Detector,
    Embedder,
    Pose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Contract {
    #[serde(rename = "ssd-raw")]
    SsdRaw,
    #[serde(rename = "tf-od-api")]
    TfOdApi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoreFn {
    Sigmoid,
    Softmax,
    None,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsdSpec {
    pub box_encodings: String,
    pub class_scores: String,
    pub score_fn: ScoreFn,
    #[serde(default = "yes")]
    pub background_class: bool,
    #[serde(default = "default_scales")]
    pub box_coder_scales: [f32; 4],
    pub anchors: AnchorParams,
}

fn yes() -> bool {
    true
}
fn default_scales() -> [f32; 4] {
    [10.0, 10.0, 5.0, 5.0]
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TfOdApiSpec {
    pub boxes: String,
    pub scores: String,
    pub classes: String,
    pub num_detections: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedOutputSpec {
    pub name: String,
    pub dim: usize,
    #[serde(default)]
    pub dynamic_batch: bool,
}

/// The outputs of a BlazePose-style landmark model (MODEL_NOTES.md): landmarks, pose confidence
/// and person-mask logits. The names default to what tf2onnx gives the converted TFLite graph.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoseOutputSpec {
    /// `[N, K*5]`: per keypoint (x, y, z, visibility logit, presence logit) in input pixels.
    #[serde(default = "landmarks_name")]
    pub landmarks: String,
    /// `[N, 1]`: pose confidence, already a probability.
    #[serde(default = "confidence_name")]
    pub confidence: String,
    /// `[N, H, W, 1]`: person-mask logits over the input square.
    #[serde(default = "mask_name")]
    pub mask: String,
    /// Values per landmark in `landmarks`: x, y, z, visibility logit, presence logit.
    #[serde(default = "values_per_landmark")]
    pub values_per_landmark: usize,
    /// Leading keypoints kept (BlazePose has 39; the first 33 are the body).
    #[serde(default = "keypoints_kept")]
    pub keypoints: usize,
    /// The square crop's side over the person box's longer side (CONTRACTS.md 8.2).
    #[serde(default = "crop_scale")]
    pub crop_scale: f32,
    /// Whether the graph takes several crops in one run.
    #[serde(default)]
    pub dynamic_batch: bool,
}

fn values_per_landmark() -> usize {
    5
}
fn crop_scale() -> f32 {
    1.25
}

fn landmarks_name() -> String {
    "Identity".into()
}
fn confidence_name() -> String {
    "Identity_1".into()
}
fn mask_name() -> String {
    "Identity_2".into()
}
fn keypoints_kept() -> usize {
    33
}

impl Default for PoseOutputSpec {
    fn default() -> Self {
        Self {
            landmarks: landmarks_name(),
            confidence: confidence_name(),
            mask: mask_name(),
            values_per_landmark: values_per_landmark(),
            keypoints: keypoints_kept(),
            crop_scale: crop_scale(),
            dynamic_batch: false,
        }
    }
}

/// A model TOML as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModelFile {
    pub kind: ModelKind,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub file: PathBuf,
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub labels: Option<PathBuf>,
    #[serde(default)]
    pub contract: Option<Contract>,
    pub input: InputSpec,
    #[serde(default)]
    pub ssd: Option<SsdSpec>,
    #[serde(default)]
    pub tf_od_api: Option<TfOdApiSpec>,
    #[serde(default)]
    pub output: Option<EmbedOutputSpec>,
    /// Output names of a pose model (`kind = "pose"`); the defaults fit the shipped conversion.
    #[serde(default)]
    pub pose: Option<PoseOutputSpec>,
}

/// What a detector's outputs mean.
#[derive(Debug, Clone, PartialEq)]
pub enum DetectorContract {
    SsdRaw(SsdSpec),
    TfOdApi(TfOdApiSpec),
}

#[derive(Debug, Clone)]
pub struct DetectorSpec {
    pub name: String,
    pub config_path: PathBuf,
    pub model_path: PathBuf,
    pub sha256: String,
    pub labels: LabelMap,
    pub input: InputSpec,
    pub contract: DetectorContract,
}

#[derive(Debug, Clone)]
pub struct EmbedderSpec {
    pub name: String,
    pub config_path: PathBuf,
    pub model_path: PathBuf,
    pub sha256: String,
    pub input: InputSpec,
    pub output: EmbedOutputSpec,
}

#[derive(Debug, Clone)]
pub struct PoseSpec {
    pub name: String,
    pub config_path: PathBuf,
    pub model_path: PathBuf,
    pub sha256: String,
    pub input: InputSpec,
    pub output: PoseOutputSpec,
}

#[derive(Debug, Clone)]
pub enum ModelSpec {
    Detector(DetectorSpec),
    Embedder(EmbedderSpec),
    Pose(PoseSpec),
}

/// Hex SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// What every model kind's spec shares, read before the kind-specific checks.
struct Common {
    name: String,
    config_path: PathBuf,
    model_path: PathBuf,
    sha256: String,
    dir: PathBuf,
}

impl ModelSpec {
    /// Reads and checks a model TOML; every problem found is returned, each naming the file.
    pub fn load(config_path: &Path) -> Result<ModelSpec, Vec<String>> {
        let at = |m: String| format!("model config {}: {m}", config_path.display());
        let text = std::fs::read_to_string(config_path)
            .map_err(|e| vec![at(format!("cannot read it ({e})"))])?;
        let raw: RawModelFile =
            toml::from_str(&text).map_err(|e| vec![at(e.message().to_string())])?;
        let dir = config_path.parent().unwrap_or(Path::new("."));
        let mut problems: Vec<String> = raw.input.problems().into_iter().map(&at).collect();
        let model_path = dir.join(&raw.file);
        let mut sha = String::new();
        match sha256_file(&model_path) {
            Err(e) => problems.push(at(format!(
                "model file {} cannot be read ({e}); restore it (git checkout models/) or re-run models/prepare/prepare.sh",
                model_path.display()
            ))),
            Ok(actual) => {
                if let Some(expected) = raw.sha256.as_deref().filter(|e| !e.eq_ignore_ascii_case(&actual)) {
                    problems.push(at(format!(
                        "model file {} has sha256 {actual} but the config expects {expected}: the file is corrupt or was replaced; \
                         restore it or update `sha256` if the change is intended",
                        model_path.display()
                    )));
                }
                sha = actual;
            }
        }
        let name = raw.name.clone().unwrap_or_else(|| {
            config_path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        let common = Common {
            name,
            config_path: config_path.into(),
            model_path,
            sha256: sha,
            dir: dir.into(),
        };
        let mut problem = |m: String| problems.push(at(m));
        let spec = match raw.kind {
            ModelKind::Detector => Self::check_detector(raw, common, &mut problem),
            ModelKind::Embedder => Self::check_embedder(raw, common, &mut problem),
            ModelKind::Pose => Self::check_pose(raw, common, &mut problem),
        };
        match spec {
            Some(s) if problems.is_empty() => Ok(s),
            _ => Err(problems),
        }
    }

    /// The detector's checks: a label map and a complete output contract.
    fn check_detector(
        raw: RawModelFile,
        c: Common,
        problem: &mut impl FnMut(String),
    ) -> Option<ModelSpec> {
        let labels = match &raw.labels {
            None => {
                problem("a detector needs `labels` (a .pbtxt or .txt label map)".into());
                None
            }
            Some(l) => LabelMap::load(&c.dir.join(l))
                .map_err(|e| problem(e.to_string()))
                .ok(),
        };
        let contract = match (raw.contract, raw.ssd, raw.tf_od_api) {
            (Some(Contract::SsdRaw), Some(ssd), _) => {
                for p in ssd.anchors.problems() {
                    problem(format!("[ssd.anchors] {p}"));
                }
                Some(DetectorContract::SsdRaw(ssd))
            }
            (Some(Contract::TfOdApi), _, Some(t)) => Some(DetectorContract::TfOdApi(t)),
            (Some(Contract::SsdRaw), None, _) => {
                problem("contract \"ssd-raw\" needs an [ssd] table".into());
                None
            }
            (Some(Contract::TfOdApi), _, None) => {
                problem("contract \"tf-od-api\" needs a [tf_od_api] table".into());
                None
            }
            (None, _, _) => {
                problem("a detector needs `contract = \"ssd-raw\"` or `\"tf-od-api\"`".into());
                None
            }
        };
        Some(ModelSpec::Detector(DetectorSpec {
            name: c.name,
            config_path: c.config_path,
            model_path: c.model_path,
            sha256: c.sha256,
            labels: labels?,
            input: raw.input,
            contract: contract?,
        }))
    }

    fn check_embedder(
        raw: RawModelFile,
        c: Common,
        problem: &mut impl FnMut(String),
    ) -> Option<ModelSpec> {
        let Some(output) = raw.output else {
            problem("an embedder needs an [output] table (name, dim)".into());
            return None;
        };
        if output.dim == 0 {
            problem("[output] dim must be positive".into());
        }
        Some(ModelSpec::Embedder(EmbedderSpec {
            name: c.name,
            config_path: c.config_path,
            model_path: c.model_path,
            sha256: c.sha256,
            input: raw.input,
            output,
        }))
    }

    fn check_pose(
        raw: RawModelFile,
        c: Common,
        problem: &mut impl FnMut(String),
    ) -> Option<ModelSpec> {
        let output = raw.pose.unwrap_or_default();
        if output.keypoints < 33 {
            problem(format!(
                "[pose] keypoints = {} must be at least 33 (the body keypoints the garment regions use)",
                output.keypoints
            ));
        }
        if output.values_per_landmark < 5 {
            problem(format!(
                "[pose] values_per_landmark = {} must be at least 5 (x, y, z, visibility, presence)",
                output.values_per_landmark
            ));
        }
        if !(output.crop_scale > 0.0 && output.crop_scale <= 10.0) {
            problem(format!(
                "[pose] crop_scale = {} must be in (0, 10]",
                output.crop_scale
            ));
        }
        Some(ModelSpec::Pose(PoseSpec {
            name: c.name,
            config_path: c.config_path,
            model_path: c.model_path,
            sha256: c.sha256,
            input: raw.input,
            output,
        }))
    }

    fn kind_name(&self) -> &'static str {
        match self {
            ModelSpec::Detector(_) => "a detector",
            ModelSpec::Embedder(_) => "an embedder",
            ModelSpec::Pose(_) => "a pose model",
        }
    }

    fn wrong_kind(self, config_path: &Path, needed: &str) -> Vec<String> {
        vec![format!(
            "{} describes {}, but {needed} is needed here",
            config_path.display(),
            self.kind_name()
        )]
    }

    pub fn detector(config_path: &Path) -> Result<DetectorSpec, Vec<String>> {
        match Self::load(config_path)? {
            ModelSpec::Detector(d) => Ok(d),
            other => Err(other.wrong_kind(config_path, "a detector")),
        }
    }

    pub fn embedder(config_path: &Path) -> Result<EmbedderSpec, Vec<String>> {
        match Self::load(config_path)? {
            ModelSpec::Embedder(e) => Ok(e),
            other => Err(other.wrong_kind(config_path, "an embedder")),
        }
    }

    pub fn pose(config_path: &Path) -> Result<PoseSpec, Vec<String>> {
        match Self::load(config_path)? {
            ModelSpec::Pose(p) => Ok(p),
            other => Err(other.wrong_kind(config_path, "a pose model")),
        }
    }
}
