//! The pose adapter: person boxes → 33 body keypoints, a pose confidence and a person mask each
//! (BlazePose GHUM, see MODEL_NOTES.md and the crop rule in models/CONTRACTS.md).
//!
//! Each person box becomes a square crop 1.25× its larger side, centred on the box; pixels past
//! the frame are black, exactly what Pillow's `crop()` gives the Python reference, and the crop is
//! resized with the Pillow-exact filter of [`super::resize`] so Rust and the reference see the same
//! input. The [`SquareCrop`] is carried from preprocessing to postprocessing, where keypoints are
//! mapped back to frame pixels and the mask is sampled in frame coordinates. All people of a frame
//! go in one run when the graph has a dynamic batch axis, else one run each.

use std::path::Path;
use std::time::{Duration, Instant};

use image::RgbImage;
use ort::session::Session;

use super::garment::CropMask;
use super::geometry::PixelBox;
use super::preprocess::{DType, Layout};
use super::resize::PillowResizer;
use super::runtime::{self, SessionOptions, finish_profile, open_session, outlet_shape};
use super::{ModelError, ProviderReport};
use crate::config::model::PoseSpec;

/// Largest batch of people in one run: bounds the tensor (0.75 MB a person) in a crowd.
pub const MAX_BATCH: usize = 8;

/// BlazePose keypoint indices the garment regions use.
pub mod kp {
    pub const LEFT_SHOULDER: usize = 11;
    pub const RIGHT_SHOULDER: usize = 12;
    pub const LEFT_HIP: usize = 23;
    pub const RIGHT_HIP: usize = 24;
    pub const LEFT_KNEE: usize = 25;
    pub const RIGHT_KNEE: usize = 26;
    pub const LEFT_ANKLE: usize = 27;
    pub const RIGHT_ANKLE: usize = 28;
    pub const LEFT_HEEL: usize = 29;
    pub const RIGHT_HEEL: usize = 30;
    pub const LEFT_TOE: usize = 31;
    pub const RIGHT_TOE: usize = 32;
    /// The body keypoints every pose carries.
    pub const COUNT: usize = 33;
}

/// `floor(v + 0.5)`: the rounding of the crop rule (Python's `round` rounds half to even).
fn round_half_up(v: f32) -> i64 {
    (v + 0.5).floor() as i64
}

/// The square of frame pixels `[x0, x0 + side) × [y0, y0 + side)` fed to the model; it may reach
/// past the frame, where it is black.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SquareCrop {
    pub x0: i64,
    pub y0: i64,
    pub side: u32,
}

impl SquareCrop {
    /// The crop rule (CONTRACTS.md 8.2): side `round_half_up(scale × longer side)`, at least 1,
    /// centred on the box; all in f32, as the Python reference computes it.
    pub fn of_box(b: &PixelBox, scale: f32) -> Self {
        let side = round_half_up(scale * (b.xmax - b.xmin).max(b.ymax - b.ymin)).max(1);
        let (cx, cy) = ((b.xmin + b.xmax) / 2.0, (b.ymin + b.ymax) / 2.0);
        let half = side as f32 / 2.0;
        Self {
            x0: round_half_up(cx - half),
            y0: round_half_up(cy - half),
            side: u32::try_from(side).unwrap_or(u32::MAX),
        }
    }

    /// Copies the crop out of `frame` into `out` (side×side RGB8), black where it leaves the frame.
    fn copy_from(&self, frame: &RgbImage, out: &mut Vec<u8>) {
        let s = self.side as usize;
        out.clear();
        out.resize(s * s * 3, 0);
        let (fw, fh) = (i64::from(frame.width()), i64::from(frame.height()));
        let (cx0, cx1) = (self.x0.max(0), (self.x0 + s as i64).min(fw));
        if cx1 <= cx0 {
            return;
        }
        let raw = frame.as_raw();
        let stride = fw as usize * 3;
        let n = (cx1 - cx0) as usize * 3;
        let dst_x = (cx0 - self.x0) as usize * 3;
        for fy in self.y0.max(0)..(self.y0 + s as i64).min(fh) {
            let src = fy as usize * stride + cx0 as usize * 3;
            let dst = (fy - self.y0) as usize * s * 3 + dst_x;
            out[dst..dst + n].copy_from_slice(&raw[src..src + n]);
        }
    }
}

/// One body keypoint in frame pixels; `visibility` and `presence` are probabilities (sigmoids of
/// the model's logits).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Keypoint {
    pub x: f32,
    pub y: f32,
    pub visibility: f32,
    pub presence: f32,
}

/// Person probabilities over a [`SquareCrop`], on the model's mask grid.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonMask {
    crop: SquareCrop,
    width: u32,
    height: u32,
    prob: Vec<f32>,
}

impl PersonMask {
    pub fn new(crop: SquareCrop, width: u32, height: u32, prob: Vec<f32>) -> Self {
        debug_assert_eq!(prob.len(), width as usize * height as usize);
        Self {
            crop,
            width,
            height,
            prob,
        }
    }

    pub fn crop(&self) -> SquareCrop {
        self.crop
    }

    /// The probabilities, row-major over the crop (`width` × `height` cells).
    pub fn grid(&self) -> (&[f32], u32, u32) {
        (&self.prob, self.width, self.height)
    }

    /// The mask cell holding frame pixel `(px, py)`'s centre (CONTRACTS.md 8.4, integer
    /// arithmetic so both languages pick the same cell), `None` outside the crop.
    fn cell(&self, px: i64, py: i64) -> Option<usize> {
        let s = i64::from(self.crop.side);
        let (dx, dy) = (px - self.crop.x0, py - self.crop.y0);
        if !(0..s).contains(&dx) || !(0..s).contains(&dy) {
            return None;
        }
        let (w, h) = (i64::from(self.width), i64::from(self.height));
        let c = ((2 * dx + 1) * w).div_euclid(2 * s);
        let r = ((2 * dy + 1) * h).div_euclid(2 * s);
        Some((r * w + c) as usize)
    }

    /// Person probability at frame pixel `(px, py)`: that of the mask cell holding the pixel's
    /// centre (no interpolation); 0 outside the crop.
    pub fn prob_at(&self, px: i64, py: i64) -> f32 {
        self.cell(px, py)
            .and_then(|i| self.prob.get(i).copied())
            .unwrap_or(0.0)
    }

    /// The mask over frame rectangle `(x, y, w, h)`: 255 where the pixel's person probability is
    /// above `threshold`, else 0 (pixels outside the crop are not the shopper).
    pub fn crop_mask(&self, rect: (u32, u32, u32, u32), threshold: f32) -> CropMask {
        let (x, y, w, h) = rect;
        let mut data = Vec::with_capacity(w as usize * h as usize);
        for py in y..y + h {
            for px in x..x + w {
                let p = self.prob_at(i64::from(px), i64::from(py));
                data.push(if p > threshold { 255 } else { 0 });
            }
        }
        CropMask {
            width: w,
            height: h,
            data,
        }
    }
}

/// What the pose model says about one person box.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonPose {
    pub crop: SquareCrop,
    /// The 33 body keypoints in frame pixels.
    pub keypoints: Vec<Keypoint>,
    /// How sure the model is that a body is there at all (a probability).
    pub confidence: f32,
    pub mask: PersonMask,
}

impl PersonPose {
    /// The keypoints with those outside the `width`×`height` frame made invisible: the model
    /// invents limbs past the frame's edge (CONTRACTS.md 8.3).
    pub fn keypoints_in_frame(&self, width: u32, height: u32) -> Vec<Keypoint> {
        let (w, h) = (width as f32, height as f32);
        self.keypoints
            .iter()
            .map(|k| {
                let inside = (0.0..w).contains(&k.x) && (0.0..h).contains(&k.y);
                Keypoint {
                    visibility: if inside { k.visibility } else { 0.0 },
                    ..*k
                }
            })
            .collect()
    }
}

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

pub struct PoseEstimator {
    spec: PoseSpec,
    session: Session,
    /// People per run: the graph's fixed batch size of 1, or [`MAX_BATCH`] when it is dynamic.
    batch: usize,
    resizer: PillowResizer,
    square: Vec<u8>,
    resized: Vec<u8>,
    input: Vec<f32>,
    report: ProviderReport,
    inference: Duration,
}

impl PoseEstimator {
    pub fn build(
        spec: &PoseSpec,
        opts: &SessionOptions,
        runtime_lib: Option<&Path>,
    ) -> Result<Self, ModelError> {
        let env = runtime::environment(runtime_lib)?;
        let at = spec.config_path.display();
        if spec.input.dtype != DType::F32 || spec.input.width != spec.input.height {
            return Err(ModelError::Spec(vec![format!(
                "pose model {at}: the input must be a square f32 image (it is {}×{} {:?})",
                spec.input.width, spec.input.height, spec.input.dtype
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
        check_outputs(&built.session, spec)?;
        let dynamic = outlet_shape(&built.session, &spec.input.name, true)
            .and_then(|s| s.first().map(|&b| b < 0))
            .unwrap_or(false);
        if spec.output.dynamic_batch && !dynamic {
            return Err(ModelError::Mismatch {
                path: spec.model_path.clone(),
                config: spec.config_path.clone(),
                message: "the config says the batch axis is dynamic but the graph fixes it".into(),
            });
        }
        let mut p = Self {
            spec: spec.clone(),
            session: built.session,
            batch: if dynamic { MAX_BATCH } else { 1 },
            resizer: PillowResizer::default(),
            square: Vec::new(),
            resized: Vec::new(),
            input: Vec::new(),
            report: ProviderReport::pending(&spec.name),
            inference: Duration::ZERO,
        };
        let t = Instant::now();
        let grey = RgbImage::from_pixel(64, 64, image::Rgb([128, 128, 128]));
        p.estimate(&grey, &[PixelBox::from([8.0, 4.0, 40.0, 60.0])])?;
        p.report = finish_profile(
            &mut p.session,
            &spec.name,
            built.registered,
            built.skipped,
            opts,
            t.elapsed(),
        )?;
        Ok(p)
    }

    pub fn spec(&self) -> &PoseSpec {
        &self.spec
    }

    pub fn provider(&self) -> &ProviderReport {
        &self.report
    }

    /// People the graph takes in one run.
    pub fn batch_size(&self) -> usize {
        self.batch
    }

    /// Total time spent in `Session::run`.
    pub fn inference_time(&self) -> Duration {
        self.inference
    }

    /// One [`PersonPose`] per box, in order.
    pub fn estimate(
        &mut self,
        frame: &RgbImage,
        people: &[PixelBox],
    ) -> Result<Vec<PersonPose>, ModelError> {
        let mut out = Vec::with_capacity(people.len());
        for chunk in people.chunks(self.batch) {
            let scale = self.spec.output.crop_scale;
            let crops: Vec<SquareCrop> =
                chunk.iter().map(|b| SquareCrop::of_box(b, scale)).collect();
            out.extend(self.run_batch(frame, &crops)?);
        }
        Ok(out)
    }

    /// Writes one crop into its slot of the input tensor: resized, normalised, in the layout.
    fn fill(&mut self, frame: &RgbImage, crop: &SquareCrop, slot: usize) {
        let n = self.spec.input.width;
        crop.copy_from(frame, &mut self.square);
        self.resized.resize(n as usize * n as usize * 3, 0);
        self.resizer
            .resize(&self.square, crop.side, crop.side, &mut self.resized, n, n);
        let spec = &self.spec.input;
        let per = spec.elements();
        let plane = n as usize * n as usize;
        let order: [usize; 3] = match spec.channels {
            super::preprocess::Channels::Rgb => [0, 1, 2],
            super::preprocess::Channels::Bgr => [2, 1, 0],
        };
        // `(v - mean) / std` per 8-bit value, as the reference computes it (`/ 255` for BlazePose).
        let lut: [[f32; 256]; 3] = std::array::from_fn(|c| {
            std::array::from_fn(|v| (v as f32 - spec.mean[order[c]]) / spec.std[order[c]])
        });
        let dst = &mut self.input[slot * per..(slot + 1) * per];
        for (i, px) in self.resized.chunks_exact(3).enumerate() {
            for (c, (table, &from)) in lut.iter().zip(&order).enumerate() {
                let v = table[usize::from(px[from])];
                match spec.layout {
                    Layout::Nhwc => dst[i * 3 + c] = v,
                    Layout::Nchw => dst[c * plane + i] = v,
                }
            }
        }
    }

    fn run_batch(
        &mut self,
        frame: &RgbImage,
        crops: &[SquareCrop],
    ) -> Result<Vec<PersonPose>, ModelError> {
        let name = self.spec.name.clone();
        let err = |message: String| ModelError::Run {
            model: name.clone(),
            message,
        };
        if crops.is_empty() {
            return Ok(Vec::new());
        }
        let per = self.spec.input.elements();
        self.input.resize(per * crops.len(), 0.0);
        for (i, c) in crops.iter().enumerate() {
            self.fill(frame, c, i);
        }
        let outputs = runtime::run_batch(
            &mut self.session,
            &self.spec.input.name,
            self.spec.input.shape(crops.len()),
            &self.input,
            &mut self.inference,
        )
        .map_err(err)?;
        let o = &self.spec.output;
        let get = |n: &str| {
            outputs
                .get(n)
                .ok_or_else(|| err(format!("output '{n}' missing")))
                .and_then(|v| {
                    v.try_extract_tensor::<f32>()
                        .map(|(s, d)| (s.iter().copied().collect::<Vec<i64>>(), d))
                        .map_err(|e| err(e.to_string()))
                })
        };
        let (lshape, landmarks) = get(&o.landmarks)?;
        let (_, confidence) = get(&o.confidence)?;
        let (mshape, mask) = get(&o.mask)?;
        let n = crops.len();
        let stride = o.values_per_landmark;
        let per_lm = landmarks.len() / n.max(1);
        if landmarks.len() != per_lm * n || per_lm < o.keypoints * stride {
            return Err(err(format!(
                "output '{}' has shape {lshape:?}: fewer than {} keypoints for {n} people",
                o.landmarks, o.keypoints
            )));
        }
        if confidence.len() != n {
            return Err(err(format!(
                "output '{}' holds {} values for {n} people",
                o.confidence,
                confidence.len()
            )));
        }
        let (mh, mw) = mask_grid(&mshape, mask.len(), n)
            .ok_or_else(|| err(format!("output '{}' has shape {mshape:?}", o.mask)))?;
        let side = self.spec.input.width as f32;
        Ok(crops
            .iter()
            .enumerate()
            .map(|(i, crop)| {
                let lm = &landmarks[i * per_lm..];
                let scale = crop.side as f32 / side;
                let keypoints = (0..kp::COUNT)
                    .map(|k| {
                        let v = &lm[k * stride..];
                        Keypoint {
                            x: crop.x0 as f32 + v[0] * scale,
                            y: crop.y0 as f32 + v[1] * scale,
                            visibility: sigmoid(v[3]),
                            presence: sigmoid(v[4]),
                        }
                    })
                    .collect();
                let cells = mh * mw;
                let prob = mask[i * cells..(i + 1) * cells]
                    .iter()
                    .map(|&l| sigmoid(l))
                    .collect();
                PersonPose {
                    crop: *crop,
                    keypoints,
                    confidence: confidence[i],
                    mask: PersonMask::new(*crop, mw as u32, mh as u32, prob),
                }
            })
            .collect())
    }
}

/// `(height, width)` of the mask output `[N, H, W, 1]` (or `[N, H, W]`).
fn mask_grid(shape: &[i64], len: usize, n: usize) -> Option<(usize, usize)> {
    let (h, w) = match shape {
        [_, h, w] | [_, h, w, 1] => (usize::try_from(*h).ok()?, usize::try_from(*w).ok()?),
        _ => return None,
    };
    (h > 0 && w > 0 && h * w * n == len).then_some((h, w))
}

/// The graph must have the three outputs the config names.
fn check_outputs(session: &Session, spec: &PoseSpec) -> Result<(), ModelError> {
    let have: Vec<String> = session
        .outputs()
        .iter()
        .map(|o| o.name().to_string())
        .collect();
    let o = &spec.output;
    let missing: Vec<&str> = [&o.landmarks, &o.confidence, &o.mask]
        .into_iter()
        .filter(|n| !have.iter().any(|h| h == *n))
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(ModelError::Mismatch {
        path: spec.model_path.clone(),
        config: spec.config_path.clone(),
        message: format!(
            "output(s) {} missing (the graph's outputs: {})",
            missing.join(", "),
            have.join(", ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crop_rule_rounds_half_up_and_may_leave_the_frame() {
        // 100×200 box: side round(250) = 250, centre (150, 200) → (25, 75).
        let c = SquareCrop::of_box(&PixelBox::from([100.0, 100.0, 200.0, 300.0]), 1.25);
        assert_eq!(
            c,
            SquareCrop {
                x0: 25,
                y0: 75,
                side: 250
            }
        );
        // Side 1.25 × 2 = 2.5 rounds up to 3 (Python's round would give 2); 1.0 - 1.5 = -0.5 rounds up to 0.
        let c = SquareCrop::of_box(&PixelBox::from([0.0, 0.0, 2.0, 2.0]), 1.25);
        assert_eq!(
            c,
            SquareCrop {
                x0: 0,
                y0: 0,
                side: 3
            }
        );
        let c = SquareCrop::of_box(&PixelBox::from([-10.0, 5.0, 30.0, 15.0]), 1.25);
        assert_eq!(
            c,
            SquareCrop {
                x0: -15,
                y0: -15,
                side: 50
            }
        );
        let c = SquareCrop::of_box(&PixelBox::from([3.0, 3.0, 3.0, 3.0]), 1.25);
        assert_eq!(c.side, 1, "an empty box still gets a pixel");
    }

    #[test]
    fn pixels_outside_the_frame_are_black() {
        let frame = RgbImage::from_fn(4, 3, |x, y| image::Rgb([x as u8 + 1, y as u8 + 1, 9]));
        let crop = SquareCrop {
            x0: -1,
            y0: 1,
            side: 3,
        };
        let mut out = Vec::new();
        crop.copy_from(&frame, &mut out);
        let px = |x: usize, y: usize| &out[(y * 3 + x) * 3..(y * 3 + x) * 3 + 3];
        assert_eq!(px(0, 0), [0, 0, 0], "left of the frame");
        assert_eq!(px(1, 0), [1, 2, 9], "frame (0, 1)");
        assert_eq!(px(2, 1), [2, 3, 9], "frame (1, 2)");
        assert_eq!(px(1, 2), [0, 0, 0], "below the frame");
    }

    #[test]
    fn the_mask_is_sampled_in_frame_coordinates() {
        // A 2×2 grid over a 5-pixel square at (10, 10): left column 0.2, right column 0.9.
        // Pixel centres 0.5..4.5 map to cells floor((2d + 1) · 2 / 10): 0, 0, 1, 1, 1.
        let crop = SquareCrop {
            x0: 10,
            y0: 10,
            side: 5,
        };
        let m = PersonMask::new(crop, 2, 2, vec![0.2, 0.9, 0.2, 0.9]);
        assert_eq!(m.prob_at(9, 12), 0.0, "outside the crop");
        assert_eq!(m.prob_at(15, 12), 0.0, "past its right edge");
        assert_eq!(m.prob_at(11, 14), 0.2);
        assert_eq!(
            m.prob_at(12, 10),
            0.9,
            "the centre pixel falls in the right cell"
        );
        let cm = m.crop_mask((9, 11, 7, 1), 0.5);
        assert_eq!(cm.data, vec![0, 0, 0, 255, 255, 255, 0]);
        assert_eq!((cm.width, cm.height), (7, 1));
        let cm = m.crop_mask((12, 11, 1, 1), 0.9);
        assert_eq!(cm.data, vec![0], "the threshold is strict");
    }

    #[test]
    fn keypoints_past_the_frame_are_not_visible() {
        let k = |x: f32, y: f32| Keypoint {
            x,
            y,
            visibility: 0.9,
            presence: 1.0,
        };
        let crop = SquareCrop {
            x0: 0,
            y0: 0,
            side: 4,
        };
        let p = PersonPose {
            crop,
            keypoints: vec![k(5.0, 5.0), k(-1.0, 5.0), k(5.0, 100.0)],
            confidence: 0.9,
            mask: PersonMask::new(crop, 1, 1, vec![1.0]),
        };
        let v: Vec<f32> = p
            .keypoints_in_frame(64, 48)
            .iter()
            .map(|k| k.visibility)
            .collect();
        assert_eq!(v, vec![0.9, 0.0, 0.0]);
    }

    #[test]
    fn mask_shapes_are_checked() {
        assert_eq!(mask_grid(&[2, 256, 256, 1], 2 * 65536, 2), Some((256, 256)));
        assert_eq!(mask_grid(&[1, 256, 256, 1], 65536, 2), None);
        assert_eq!(mask_grid(&[1, 256], 256, 1), None);
    }
}
