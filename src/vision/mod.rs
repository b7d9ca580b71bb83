//! Vision: everything between a decoded frame and vectors ready for the catalog.
//!
//! A frame enters [`detector::Detector::detect`] (preprocess → ONNX Runtime → decode/NMS, the
//! [`preprocess::ResizeRecord`] carried from first step to last), the detections become garment
//! regions in [`regions`], and [`embedder::Embedder::embed`] turns all regions of a frame into
//! L2-normalised vectors in one batch. With a pose model, [`pose::PoseEstimator::estimate`] finds
//! each shopper's body keypoints and person mask: [`regions::body_regions`] cuts the garments out
//! of the body and [`garment`] masks each crop to the shopper before it is embedded. Sessions are
//! built once, with a warm-up run, in `build`.

pub mod anchors;
pub mod colour;
pub mod detector;
pub mod embedder;
pub mod fusion;
pub mod garment;
pub mod geometry;
pub mod labels;
pub mod pose;
pub mod preprocess;
pub mod regions;
pub mod resize;
pub mod runtime;

use std::path::PathBuf;

/// Errors at the border of the vision stage.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    #[error("{}", .0.join("\n"))]
    Spec(Vec<String>),
    #[error(
        "cannot load model {path}: {message}. Check that the file is a valid ONNX model (restore it from git or re-run models/prepare/prepare.sh)"
    )]
    Load { path: PathBuf, message: String },
    #[error("model {path} does not match its config {config}: {message}")]
    Mismatch {
        path: PathBuf,
        config: PathBuf,
        message: String,
    },
    #[error("running {model} failed: {message}")]
    Run { model: String, message: String },
    #[error("{0}")]
    Provider(String),
    #[error("pre-processing failed: {0}")]
    Preprocess(#[from] preprocess::PreprocessError),
}

/// Which execution provider a model ended up on, detected from its warm-up profile.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProviderReport {
    pub model: String,
    pub requested: Vec<String>,
    pub registered: String,
    pub in_use: String,
    /// Nodes per provider in the warm-up run.
    pub nodes: Vec<(String, usize)>,
    pub skipped: Vec<String>,
    pub warmup_ms: f64,
}

impl ProviderReport {
    /// The report of a model whose warm-up has not run yet.
    pub fn pending(model: &str) -> Self {
        Self {
            model: model.into(),
            requested: vec![],
            registered: String::new(),
            in_use: String::new(),
            nodes: vec![],
            skipped: vec![],
            warmup_ms: 0.0,
        }
    }
}
