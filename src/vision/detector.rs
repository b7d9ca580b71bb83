//! The detector adapter: preprocess → run → postprocess for both output contracts.
//!
//! `ssd-raw` gets anchors (generated once in `build`), box decoding, sigmoid/softmax scores and
//! per-class NMS here in Rust; `tf-od-api` has all of that in the graph and we only read its four
//! outputs. Either way boxes leave in the original frame's pixels, mapped by the frame's own
//! [`ResizeRecord`]. Shapes, names and the class count are checked against the loaded graph in
//! [`Detector::build`]; a mismatch is a start-up error, never a silently shifted label.

use std::time::{Duration, Instant};

use image::RgbImage;
use ort::session::Session;
use ort::value::TensorRef;
use serde::{Deserialize, Serialize};

use super::anchors::{Anchor, decode};
use super::geometry::{Candidate, NmsParams, NormBox, PixelBox, per_class_nms};
use super::preprocess::{DType, InputSpec, Preprocessor, ResizeMode, ResizeRecord, TensorSlot};
use super::runtime::{self, finish_profile, names, open_session, outlet_shape};
use super::{ModelError, ProviderReport};
use crate::config::model::{DetectorContract, DetectorSpec, ScoreFn};
use crate::config::{DetectorSettings, RuntimeSettings};

/// One detection in the original frame's pixels; the JSON form of `vitrine detect`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub label: String,
    pub class_id: u32,
    pub score: f32,
    pub bbox: PixelBox,
}

/// Where the time of one `detect` went.
#[derive(Debug, Clone, Copy, Default)]
pub struct DetectTiming {
    pub preprocess: Duration,
    pub inference: Duration,
    pub postprocess: Duration,
}

enum PreparedTensor {
    F32(Vec<f32>),
    U8(Vec<u8>),
}

/// The detector's input for one frame, made ahead of its run, and how long making it took.
pub struct PreparedInput {
    tensor: PreparedTensor,
    rec: ResizeRecord,
    pub took: Duration,
    /// Where the tensor's buffer goes when the frame is done with, to be filled again.
    home: std::sync::mpsc::Sender<PreparedTensor>,
}

impl Drop for PreparedInput {
    fn drop(&mut self) {
        let tensor = std::mem::replace(&mut self.tensor, PreparedTensor::U8(Vec::new()));
        // The preparer may be gone (shutting down): then the buffer is simply freed.
        let _ = self.home.send(tensor);
    }
}

impl std::fmt::Debug for PreparedInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedInput")
            .field("rec", &self.rec)
            .field("took", &self.took)
            .finish()
    }
}

/// Makes [`PreparedInput`]s for one detector. It owns its resizer and buffers, so it can live on
/// another thread than the detector; the tensor is exactly what [`Detector::detect`] would make.
pub struct InputPreparer {
    spec: InputSpec,
    resize: ResizeMode,
    pre: Preprocessor,
    /// Buffers of inputs already used: a few frames are in flight at most, so a few megabytes
    /// are reused instead of allocated every frame.
    spare: std::sync::mpsc::Receiver<PreparedTensor>,
    home: std::sync::mpsc::Sender<PreparedTensor>,
}

impl InputPreparer {
    /// The preparer of the detector `settings` describe: the capture thread makes one from the
    /// config, so it need not wait for the detector's session to be built.
    pub fn new(settings: &DetectorSettings) -> Self {
        Self::with(settings.spec.input.clone(), settings.resize)
    }

    fn with(spec: InputSpec, resize: ResizeMode) -> Self {
        let (home, spare) = std::sync::mpsc::channel();
        Self {
            spec,
            resize,
            pre: Preprocessor::new(),
            spare,
            home,
        }
    }

    pub fn prepare(&mut self, frame: &RgbImage) -> Result<PreparedInput, ModelError> {
        let t = Instant::now();
        let n = self.spec.elements();
        let reused = self.spare.try_recv().ok();
        // Every element is written (content and padding alike), so a reused buffer needs no reset.
        let (tensor, rec) = match self.spec.dtype {
            DType::F32 => {
                let mut v = match reused {
                    Some(PreparedTensor::F32(v)) => v,
                    _ => Vec::new(),
                };
                v.resize(n, 0.0);
                let rec =
                    self.pre
                        .frame_into(frame, &self.spec, self.resize, TensorSlot::F32(&mut v))?;
                (PreparedTensor::F32(v), rec)
            }
            DType::U8 => {
                let mut v = match reused {
                    Some(PreparedTensor::U8(v)) => v,
                    _ => Vec::new(),
                };
                v.resize(n, 0);
                let rec =
                    self.pre
                        .frame_into(frame, &self.spec, self.resize, TensorSlot::U8(&mut v))?;
                (PreparedTensor::U8(v), rec)
            }
        };
        Ok(PreparedInput {
            tensor,
            rec,
            took: t.elapsed(),
            home: self.home.clone(),
        })
    }
}

pub struct Detector {
    spec: DetectorSpec,
    session: Session,
    anchors: Vec<Anchor>,
    /// Score columns of the model (including background when it has one).
    columns: usize,
    params: NmsParams,
    /// Makes the input when the caller did not ([`Detector::detect`]); its buffers are reused.
    own: InputPreparer,
    report: ProviderReport,
}

impl Detector {
    /// Opens the model `settings` name, checks its graph against the config and label map, and
    /// warms it up on `runtime`'s providers.
    pub fn build(
        settings: &DetectorSettings,
        runtime: &RuntimeSettings,
    ) -> Result<Self, ModelError> {
        let spec = &settings.spec;
        let opts = &runtime.session;
        let env = runtime::environment(runtime.library.as_deref())?;
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
        let session = built.session;
        let (anchors, columns) = match &spec.contract {
            DetectorContract::SsdRaw(ssd) => {
                let anchors = ssd.anchors.generate();
                let (Some(b), Some(s)) = (
                    outlet_shape(&session, &ssd.box_encodings, false),
                    outlet_shape(&session, &ssd.class_scores, false),
                ) else {
                    return Err(mismatch(format!(
                        "outputs '{}' and '{}' are required (the graph's outputs: {})",
                        ssd.box_encodings,
                        ssd.class_scores,
                        names(&session, false)
                    )));
                };
                if b.len() != 3 || b[2] != 4 {
                    return Err(mismatch(format!(
                        "box encodings '{}' have shape {b:?}, expected [1, N, 4]",
                        ssd.box_encodings
                    )));
                }
                if b[1] >= 0 && b[1] as usize != anchors.len() {
                    return Err(mismatch(format!(
                        "the model emits {} boxes but the [ssd.anchors] parameters generate {} anchors",
                        b[1],
                        anchors.len()
                    )));
                }
                if s.len() != 3 || s[2] < 1 {
                    return Err(mismatch(format!(
                        "class scores '{}' have shape {s:?}, expected [1, N, C]",
                        ssd.class_scores
                    )));
                }
                let columns = s[2] as usize;
                spec.labels
                    .check_columns(columns, ssd.background_class)
                    .map_err(mismatch)?;
                (anchors, columns)
            }
            DetectorContract::TfOdApi(t) => {
                for n in [&t.boxes, &t.scores, &t.classes, &t.num_detections] {
                    if outlet_shape(&session, n, false).is_none() {
                        return Err(mismatch(format!(
                            "output '{n}' is missing (the graph's outputs: {})",
                            names(&session, false)
                        )));
                    }
                }
                (Vec::new(), spec.labels.max_id() as usize + 1)
            }
        };
        let mut det = Self {
            spec: spec.clone(),
            session,
            anchors,
            columns,
            params: settings.nms,
            own: InputPreparer::new(settings),
            report: ProviderReport::pending(&spec.name),
        };
        // Warm-up on a grey frame: allocates ONNX Runtime's arenas and tells us the provider in use.
        let t = Instant::now();
        let grey = RgbImage::from_pixel(
            spec.input.width.max(64),
            spec.input.height.max(64),
            image::Rgb([128, 128, 128]),
        );
        det.detect(&grey)?;
        det.report = finish_profile(
            &mut det.session,
            &spec.name,
            built.registered,
            built.skipped,
            opts,
            t.elapsed(),
        )?;
        Ok(det)
    }

    pub fn spec(&self) -> &DetectorSpec {
        &self.spec
    }

    pub fn provider(&self) -> &ProviderReport {
        &self.report
    }

    pub fn params(&self) -> NmsParams {
        self.params
    }

    pub fn detect(&mut self, frame: &RgbImage) -> Result<Vec<Detection>, ModelError> {
        self.detect_timed(frame).map(|(d, _)| d)
    }

    pub fn detect_timed(
        &mut self,
        frame: &RgbImage,
    ) -> Result<(Vec<Detection>, DetectTiming), ModelError> {
        let input = self.own.prepare(frame)?;
        self.detect_prepared(&input)
    }

    /// A preparer of this detector's input that can work on another thread (the capture thread,
    /// so that resizing frame N+1 overlaps the inference of frame N).
    pub fn preparer(&self) -> InputPreparer {
        InputPreparer::with(self.own.spec.clone(), self.own.resize)
    }

    /// Runs the detector on an input made by [`InputPreparer::prepare`].
    pub fn detect_prepared(
        &mut self,
        prepared: &PreparedInput,
    ) -> Result<(Vec<Detection>, DetectTiming), ModelError> {
        let len = match &prepared.tensor {
            PreparedTensor::F32(v) => v.len(),
            PreparedTensor::U8(v) => v.len(),
        };
        let dtype_ok = matches!(
            (&prepared.tensor, self.spec.input.dtype),
            (PreparedTensor::F32(_), DType::F32) | (PreparedTensor::U8(_), DType::U8)
        );
        if !dtype_ok || len != self.spec.input.elements() {
            return Err(ModelError::Run {
                model: self.spec.name.clone(),
                message: "a prepared input made for another model".into(),
            });
        }
        let t1 = Instant::now();
        let spec = &self.spec.input;
        let shape = spec.shape(1);
        let run_err = |e: ort::Error| ModelError::Run {
            model: self.spec.name.clone(),
            message: e.to_string(),
        };
        let input = match &prepared.tensor {
            PreparedTensor::F32(v) => {
                TensorRef::from_array_view((shape, &v[..])).map(|t| t.into_dyn())
            }
            PreparedTensor::U8(v) => {
                TensorRef::from_array_view((shape, &v[..])).map(|t| t.into_dyn())
            }
        }
        .map_err(run_err)?;
        let outputs = self
            .session
            .run(ort::inputs![spec.name.as_str() => input])
            .map_err(|e| ModelError::Run {
                model: self.spec.name.clone(),
                message: e.to_string(),
            })?;
        let t2 = Instant::now();
        let name = &self.spec.name;
        let get = |o: &str| -> Result<&[f32], ModelError> {
            outputs
                .get(o)
                .ok_or_else(|| ModelError::Run {
                    model: name.clone(),
                    message: format!("output '{o}' missing from the run"),
                })?
                .try_extract_tensor::<f32>()
                .map(|(_, d)| d)
                .map_err(|e| ModelError::Run {
                    model: name.clone(),
                    message: format!("output '{o}': {e}"),
                })
        };
        let candidates = match &self.spec.contract {
            DetectorContract::SsdRaw(ssd) => {
                let boxes = get(&ssd.box_encodings)?;
                let scores = get(&ssd.class_scores)?;
                ssd_candidates(
                    boxes,
                    scores,
                    &self.anchors,
                    self.columns,
                    ssd.background_class,
                    ssd.score_fn,
                    &ssd.box_coder_scales,
                    &self.params,
                )?
            }
            DetectorContract::TfOdApi(t) => {
                let boxes = get(&t.boxes)?;
                let scores = get(&t.scores)?;
                let classes = get(&t.classes)?;
                let num = get(&t.num_detections)?
                    .first()
                    .copied()
                    .unwrap_or(0.0)
                    .max(0.0) as usize;
                tf_od_candidates(boxes, scores, classes, num, &self.params)
            }
        };
        drop(outputs);
        let dets = self.finish(candidates, &prepared.rec);
        let t3 = Instant::now();
        Ok((
            dets,
            DetectTiming {
                preprocess: prepared.took,
                inference: t2 - t1,
                postprocess: t3 - t2,
            },
        ))
    }

    fn finish(&self, candidates: Vec<Candidate>, rec: &ResizeRecord) -> Vec<Detection> {
        candidates
            .into_iter()
            .filter_map(|c| {
                // An id the label map does not know can only come from a tf-od-api graph whose map
                // is wrong; naming it "unknown" would hide the bug, so it is dropped and logged.
                let Some(label) = self.spec.labels.name(c.class_id) else {
                    tracing::warn!(model = %self.spec.name, class_id = c.class_id, "detector returned a class id its label map lacks");
                    return None;
                };
                Some(Detection { label: label.to_string(), class_id: c.class_id, score: c.score, bbox: rec.to_pixels(c.bbox) })
            })
            .collect()
    }
}

#[inline]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Scores, thresholds, decodes and NMSes raw SSD outputs (CONTRACTS.md §4).
#[allow(clippy::too_many_arguments)]
pub fn ssd_candidates(
    boxes: &[f32],
    scores: &[f32],
    anchors: &[Anchor],
    columns: usize,
    background: bool,
    score_fn: ScoreFn,
    box_scales: &[f32; 4],
    params: &NmsParams,
) -> Result<Vec<Candidate>, ModelError> {
    let n = anchors.len();
    if boxes.len() < n * 4 || scores.len() < n * columns {
        return Err(ModelError::Run {
            model: "detector".into(),
            message: format!(
                "outputs hold {} box and {} score values, expected {} and {}",
                boxes.len(),
                scores.len(),
                n * 4,
                n * columns
            ),
        });
    }
    let first = usize::from(background);
    // Sigmoid is monotone: compare logits against the threshold's logit and only exponentiate the
    // few that can pass (with a margin so float rounding cannot drop a box the reference keeps).
    let t = params.score_threshold.clamp(1e-6, 1.0 - 1e-6);
    let logit_floor = (t / (1.0 - t)).ln() - 1e-3;
    let mut out = Vec::new();
    let mut probs = vec![0f32; columns];
    for (i, anchor) in anchors.iter().enumerate() {
        let row = &scores[i * columns..(i + 1) * columns];
        let mut decoded: Option<NormBox> = None;
        let mut push = |col: usize, score: f32, out: &mut Vec<Candidate>| {
            if score >= params.score_threshold {
                let b = *decoded
                    .get_or_insert_with(|| decode(&boxes[i * 4..i * 4 + 4], anchor, box_scales));
                out.push(Candidate {
                    bbox: b,
                    score,
                    class_id: (col - first + 1) as u32,
                    index: i as u32,
                });
            }
        };
        match score_fn {
            ScoreFn::Sigmoid => {
                for (col, &logit) in row.iter().enumerate().skip(first) {
                    if logit >= logit_floor {
                        push(col, sigmoid(logit), &mut out);
                    }
                }
            }
            ScoreFn::None => {
                for (col, &s) in row.iter().enumerate().skip(first) {
                    push(col, s, &mut out);
                }
            }
            ScoreFn::Softmax => {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0;
                for (p, &l) in probs.iter_mut().zip(row) {
                    *p = (l - max).exp();
                    sum += *p;
                }
                for (col, p) in probs.iter().enumerate().skip(first) {
                    push(col, p / sum, &mut out);
                }
            }
        }
    }
    Ok(per_class_nms(out, params))
}

/// Reads the TF OD API post-processed outputs (boxes already NMSed in the graph).
pub fn tf_od_candidates(
    boxes: &[f32],
    scores: &[f32],
    classes: &[f32],
    num: usize,
    params: &NmsParams,
) -> Vec<Candidate> {
    let num = num
        .min(scores.len())
        .min(classes.len())
        .min(boxes.len() / 4);
    let mut out: Vec<Candidate> = (0..num)
        .filter(|&i| scores[i] >= params.score_threshold)
        .map(|i| Candidate {
            bbox: NormBox {
                ymin: boxes[i * 4],
                xmin: boxes[i * 4 + 1],
                ymax: boxes[i * 4 + 2],
                xmax: boxes[i * 4 + 3],
            }
            .clipped(),
            score: scores[i],
            class_id: classes[i].round().max(0.0) as u32,
            index: i as u32,
        })
        .collect();
    out.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.class_id.cmp(&b.class_id))
            .then(a.index.cmp(&b.index))
    });
    out.truncate(params.max_detections);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vision::anchors::mobilenet_v2_300;

    /// Plants one confident box for class 2 at a known anchor and checks it comes out decoded,
    /// labelled with id 2 (not 1, not 3) and alone.
    #[test]
    fn ssd_postprocess_finds_a_planted_box_with_the_right_id() {
        let anchors = mobilenet_v2_300().generate();
        let columns = 4;
        let mut boxes = vec![0f32; anchors.len() * 4];
        let mut scores = vec![-10f32; anchors.len() * columns];
        let k = 1000;
        scores[k * columns + 2] = 3.0; // sigmoid(3) = 0.9526
        boxes[k * 4 + 2] = 5.0 * 2f32.ln(); // twice the anchor height
        // A weaker duplicate on the neighbouring anchor of the same cell: NMS must remove it.
        scores[(k + 1) * columns + 2] = 1.0;
        let params = NmsParams {
            score_threshold: 0.5,
            iou_threshold: 0.3,
            max_detections: 10,
        };
        let c = ssd_candidates(
            &boxes,
            &scores,
            &anchors,
            columns,
            true,
            ScoreFn::Sigmoid,
            &[10.0, 10.0, 5.0, 5.0],
            &params,
        )
        .expect("ok");
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].class_id, 2);
        assert_eq!(c[0].index, k as u32);
        assert!((c[0].score - sigmoid(3.0)).abs() < 1e-6);
        let a = anchors[k];
        assert!(
            ((c[0].bbox.ymax - c[0].bbox.ymin) - (2.0 * a.h).min(1.0)).abs() < 1e-4
                || c[0].bbox.ymin == 0.0
                || c[0].bbox.ymax == 1.0
        );
    }

    #[test]
    fn a_score_exactly_at_the_threshold_is_kept() {
        let anchors = vec![Anchor {
            yc: 0.5,
            xc: 0.5,
            h: 0.2,
            w: 0.2,
        }];
        let params = NmsParams {
            score_threshold: 0.5,
            iou_threshold: 0.5,
            max_detections: 10,
        };
        let c = ssd_candidates(
            &[0.0; 4],
            &[-5.0, 0.0],
            &anchors,
            2,
            true,
            ScoreFn::Sigmoid,
            &[10.0, 10.0, 5.0, 5.0],
            &params,
        )
        .expect("ok");
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].score, 0.5);
    }

    #[test]
    fn tf_od_outputs_are_read_in_score_order_with_one_based_ids() {
        let boxes = [0.1, 0.2, 0.5, 0.6, 0.0, 0.0, 1.2, 1.0, 0.3, 0.3, 0.4, 0.4];
        let scores = [0.6, 0.9, 0.2];
        let classes = [1.0, 3.0, 1.0];
        let c = tf_od_candidates(
            &boxes,
            &scores,
            &classes,
            3,
            &NmsParams {
                score_threshold: 0.5,
                iou_threshold: 0.5,
                max_detections: 5,
            },
        );
        assert_eq!(c.iter().map(|c| c.class_id).collect::<Vec<_>>(), vec![3, 1]);
        assert_eq!(c[0].bbox.ymax, 1.0, "clipped");
        // num_detections bounds what is read even when the tensors are longer.
        assert_eq!(
            tf_od_candidates(&boxes, &scores, &classes, 1, &NmsParams::default()).len(),
            1
        );
    }
}
