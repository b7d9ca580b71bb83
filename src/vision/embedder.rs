//! The embedder adapter: garment crops → L2-normalised vectors, all crops of a frame in one run
//! when the model has a dynamic batch axis. Crops that carry a person mask are embedded with the
//! pixels off the shopper replaced by the catalog's background ([`super::garment`]).
//!
//! The catalog is searched with the dot product, which is only a cosine for unit vectors, so
//! vectors are normalised here once more even though the shipped graph already does it: a model
//! swapped in without that step must not quietly break the search.

use std::path::Path;
use std::time::Instant;

use image::RgbImage;
use ort::session::Session;

use super::garment::{GarmentCrop, masked_crop};
use super::preprocess::{DType, Preprocessor, TensorSlot};
use super::runtime::{self, SessionOptions, finish_profile, names, open_session, outlet_shape};
use super::{ModelError, ProviderReport};
use crate::config::model::EmbedderSpec;

/// Largest batch sent in one run: bounds the tensor's memory when a crowd walks past.
pub const MAX_BATCH: usize = 32;

pub struct Embedder {
    spec: EmbedderSpec,
    session: Session,
    pre: Preprocessor,
    input: Vec<f32>,
    report: ProviderReport,
    /// Total time spent in `Session::run`, for the share of time outside ONNX Runtime.
    inference: std::time::Duration,
}

pub fn l2_normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 && n.is_finite() {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

impl Embedder {
    pub fn build(
        spec: &EmbedderSpec,
        opts: &SessionOptions,
        runtime_lib: Option<&Path>,
    ) -> Result<Self, ModelError> {
        let env = runtime::environment(runtime_lib)?;
        if spec.input.dtype != DType::F32 {
            return Err(ModelError::Spec(vec![format!(
                "embedder {}: only f32 inputs are supported",
                spec.config_path.display()
            )]));
        }
        let built = open_session(
            &env,
            &spec.name,
            &spec.model_path,
            &spec.config_path,
            &spec.input,
            opts,
        )?;
        let mismatch = |message: String| ModelError::Mismatch {
            path: spec.model_path.clone(),
            config: spec.config_path.clone(),
            message,
        };
        let Some(shape) = outlet_shape(&built.session, &spec.output.name, false) else {
            return Err(mismatch(format!(
                "output '{}' is missing (the graph's outputs: {})",
                spec.output.name,
                names(&built.session, false)
            )));
        };
        if shape.len() != 2 || (shape[1] >= 0 && shape[1] as usize != spec.output.dim) {
            return Err(mismatch(format!(
                "output '{}' has shape {shape:?} but the config says [batch, {}]",
                spec.output.name, spec.output.dim
            )));
        }
        let in_batch =
            outlet_shape(&built.session, &spec.input.name, true).and_then(|s| s.first().copied());
        if spec.output.dynamic_batch && in_batch.is_some_and(|b| b > 0) {
            return Err(mismatch(format!(
                "the config says the batch axis is dynamic but the graph fixes it to {}",
                in_batch.unwrap_or(0)
            )));
        }
        let mut e = Self {
            spec: spec.clone(),
            session: built.session,
            pre: Preprocessor::new(),
            input: Vec::new(),
            inference: std::time::Duration::ZERO,
            report: ProviderReport::pending(&spec.name),
        };
        let t = Instant::now();
        let grey = RgbImage::from_pixel(64, 64, image::Rgb([128, 128, 128]));
        e.embed(&grey, &[(0, 0, 64, 64)])?;
        e.report = finish_profile(
            &mut e.session,
            &spec.name,
            built.registered,
            built.skipped,
            opts,
            t.elapsed(),
        )?;
        Ok(e)
    }

    pub fn spec(&self) -> &EmbedderSpec {
        &self.spec
    }

    pub fn dim(&self) -> usize {
        self.spec.output.dim
    }

    pub fn provider(&self) -> &ProviderReport {
        &self.report
    }

    pub fn inference_time(&self) -> std::time::Duration {
        self.inference
    }

    /// Embeds the integer crops `(x, y, w, h)` of `frame`, one vector per crop in order.
    pub fn embed(
        &mut self,
        frame: &RgbImage,
        crops: &[(u32, u32, u32, u32)],
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let crops: Vec<GarmentCrop> = crops.iter().map(|r| GarmentCrop::unmasked(*r)).collect();
        self.embed_garments(frame, &crops, [0; 3])
    }

    /// Embeds garment crops, one vector per crop in order. A masked crop has the pixels that are
    /// not the shopper replaced by `background` first (the catalog photos' background).
    pub fn embed_garments(
        &mut self,
        frame: &RgbImage,
        crops: &[GarmentCrop],
        background: [u8; 3],
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let batch = if self.spec.output.dynamic_batch {
            MAX_BATCH
        } else {
            1
        };
        let mut out = Vec::with_capacity(crops.len());
        for chunk in crops.chunks(batch) {
            out.extend(self.run_batch(frame, chunk, background)?);
        }
        Ok(out)
    }

    /// Embeds a whole image (a catalog product photo).
    pub fn embed_image(&mut self, img: &RgbImage) -> Result<Vec<f32>, ModelError> {
        let mut v = self.embed(img, &[(0, 0, img.width(), img.height())])?;
        v.pop().ok_or_else(|| ModelError::Run {
            model: self.spec.name.clone(),
            message: "no embedding returned".into(),
        })
    }

    fn run_batch(
        &mut self,
        frame: &RgbImage,
        crops: &[GarmentCrop],
        background: [u8; 3],
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let name = self.spec.name.clone();
        let err = |message: String| ModelError::Run {
            model: name.clone(),
            message,
        };
        let per = self.spec.input.elements();
        self.input.resize(per * crops.len(), 0.0);
        for (slot, crop) in self.input.chunks_exact_mut(per).zip(crops) {
            let slot = TensorSlot::F32(slot);
            match &crop.mask {
                None => self
                    .pre
                    .crop_into(frame, crop.rect, &self.spec.input, slot)?,
                Some(_) => {
                    let masked =
                        masked_crop(frame, crop, background).map_err(|e| err(e.to_string()))?;
                    let whole = (0, 0, masked.width(), masked.height());
                    self.pre.crop_into(&masked, whole, &self.spec.input, slot)?;
                }
            }
        }
        let outputs = runtime::run_batch(
            &mut self.session,
            &self.spec.input.name,
            self.spec.input.shape(crops.len()),
            &self.input,
            &mut self.inference,
        )
        .map_err(err)?;
        let value = outputs
            .get(&self.spec.output.name)
            .ok_or_else(|| err(format!("output '{}' missing", self.spec.output.name)))?;
        let (shape, data) = value
            .try_extract_tensor::<f32>()
            .map_err(|e| err(e.to_string()))?;
        let dim = self.spec.output.dim;
        if data.len() != dim * crops.len() {
            return Err(err(format!(
                "output shape {shape:?} does not hold {} vectors of {dim}",
                crops.len()
            )));
        }
        Ok(data
            .chunks_exact(dim)
            .map(|c| {
                let mut v = c.to_vec();
                l2_normalise(&mut v);
                v
            })
            .collect())
    }
}
