//! Average precision per category at one IoU threshold, with the semantics of the TF Object
//! Detection API's `PascalBoxes` metric (`per_image_evaluation.py` + `metrics.py`), so a model
//! scored here can be compared with the source project's mAP 0.17.
//!
//! Ground truth and predictions enter as two [`Dataset`]s matched by image name; a [`ApReport`]
//! leaves. The steps, in the reference's order:
//!
//! 1. Per image and category, detections sorted by descending score are taken one at a time. Each
//!    is compared with the ground-truth box it overlaps most (IoU on continuous coordinates, no
//!    `+1` pixel; on equal IoU the box listed first). If that IoU ≥ the threshold and the box is
//!    not yet taken, the detection is a true positive and takes it; otherwise it is a false
//!    positive — also when it overlaps another, free box less: the reference never looks further.
//! 2. Per category, all images' detections are ranked by score; precision and recall follow from
//!    the running true/false-positive counts (recall over the category's ground-truth count).
//! 3. AP is the area under the precision envelope: recall padded with 0 and 1, precision with 0
//!    and 0, precision made non-increasing from the right, then `Σ (r[i] − r[i−1]) · p[i]` over
//!    the points where recall changes.
//! 4. A category with no ground truth has AP `NaN` and is left out of the mean; one with ground
//!    truth and no detections has AP 0.
//!
//! **Score ties.** Both sorts here are stable: tied detections keep their input order (images in
//! ground-truth file order, boxes in prediction-file order). The reference reverses NumPy's
//! default `argsort`, which is not stable (and differs between NumPy builds), so with tied scores
//! the reference's AP is not well defined; ours is reproducible. Without ties the two agree.
//!
//! Not modelled, because DeepFashion has neither: `difficult` and `group_of` boxes.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use super::EvalError;
use super::formats::{Dataset, ImageRecord};
use crate::vision::geometry::PixelBox;

/// One category's score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CategoryAp {
    /// `NaN` (JSON `null`) when the category has no ground truth.
    #[serde(serialize_with = "nan_as_null")]
    pub ap: f64,
    pub num_gt: usize,
    pub num_det: usize,
    /// True positives among the detections.
    pub tp: usize,
}

/// The whole evaluation; the JSON form of `vitrine eval detections --json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApReport {
    /// Mean over the categories with ground truth; `NaN` when there are none.
    #[serde(rename = "mAP", serialize_with = "nan_as_null")]
    pub map: f64,
    pub per_category: BTreeMap<String, CategoryAp>,
    pub iou: f64,
    pub images: usize,
}

fn nan_as_null<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else {
        s.serialize_none()
    }
}

/// Area under the precision envelope, exactly as `metrics.compute_average_precision`.
/// `precision` and `recall` are per ranked detection; empty means no detections (AP 0).
pub fn average_precision(precision: &[f64], recall: &[f64]) -> f64 {
    if precision.is_empty() {
        return 0.0;
    }
    let mut r = Vec::with_capacity(recall.len() + 2);
    r.push(0.0);
    r.extend_from_slice(recall);
    r.push(1.0);
    let mut p = Vec::with_capacity(precision.len() + 2);
    p.push(0.0);
    p.extend_from_slice(precision);
    p.push(0.0);
    for i in (0..p.len() - 1).rev() {
        p[i] = p[i].max(p[i + 1]);
    }
    (1..r.len())
        .filter(|&i| r[i] != r[i - 1])
        .map(|i| (r[i] - r[i - 1]) * p[i])
        .sum()
}

/// Precision and recall after each detection, ranked by descending score (stable).
pub fn precision_recall(scored: &[(f32, bool)], num_gt: usize) -> (Vec<f64>, Vec<f64>) {
    let mut order: Vec<usize> = (0..scored.len()).collect();
    order.sort_by(|&a, &b| scored[b].0.total_cmp(&scored[a].0));
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut precision = Vec::with_capacity(order.len());
    let mut recall = Vec::with_capacity(order.len());
    for i in order {
        if scored[i].1 {
            tp += 1;
        } else {
            fp += 1;
        }
        precision.push(tp as f64 / (tp + fp) as f64);
        recall.push(tp as f64 / num_gt as f64);
    }
    (precision, recall)
}

/// Marks one image's detections of one category as true (`true`) or false positives, in the
/// order given back: descending score, ties in input order.
pub fn match_image(gt: &[PixelBox], dets: &[(f32, PixelBox)], iou: f64) -> Vec<(f32, bool)> {
    let mut order: Vec<usize> = (0..dets.len()).collect();
    order.sort_by(|&a, &b| dets[b].0.total_cmp(&dets[a].0));
    let mut taken = vec![false; gt.len()];
    order
        .into_iter()
        .map(|d| {
            let (score, bbox) = dets[d];
            // The first box of highest IoU, like NumPy's argmax.
            let mut best: Option<(usize, f32)> = None;
            for (g, gbox) in gt.iter().enumerate() {
                let o = bbox.iou(gbox);
                if best.is_none_or(|(_, b)| o > b) {
                    best = Some((g, o));
                }
            }
            let tp = match best {
                Some((g, o)) if o as f64 >= iou && !taken[g] => {
                    taken[g] = true;
                    true
                }
                _ => false,
            };
            (score, tp)
        })
        .collect()
}

/// Options of one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct ApOptions {
    /// Matching threshold, in (0, 1].
    pub iou: f64,
    /// Categories to report even without ground truth or detections (a label map's names).
    pub categories: Vec<String>,
}

impl Default for ApOptions {
    fn default() -> Self {
        Self {
            iou: 0.5,
            categories: Vec::new(),
        }
    }
}

/// Finds a prediction's image among the ground truth's: by exact name, else by a unique whole
/// path-component suffix in either direction (`vitrine detect data/img/a.jpg` against ground
/// truth `img/a.jpg`, or the other way round). Built once: a lookup is a few hash probes, which
/// matters on DeepFashion, where every folder restarts at `img_00000001.jpg`.
struct ImageIndex<'a> {
    exact: HashMap<&'a str, usize>,
    /// Every proper suffix (after a `/`) of every ground-truth name → the images ending so.
    suffixes: HashMap<&'a str, Vec<usize>>,
}

impl<'a> ImageIndex<'a> {
    fn new(gt: &'a Dataset) -> Self {
        let mut exact = HashMap::new();
        let mut suffixes: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, r) in gt.images.iter().enumerate() {
            exact.insert(r.image.as_str(), i);
            for (at, _) in r.image.match_indices('/') {
                suffixes.entry(&r.image[at + 1..]).or_default().push(i);
            }
        }
        Self { exact, suffixes }
    }

    fn find(&self, name: &str) -> Option<usize> {
        if let Some(&i) = self.exact.get(name) {
            return Some(i);
        }
        // The prediction's name is longer: its longest suffix that is a ground-truth name.
        if let Some(i) = name
            .match_indices('/')
            .find_map(|(at, _)| self.exact.get(&name[at + 1..]))
        {
            return Some(*i);
        }
        // The ground truth's name is longer: unique when only one image ends so.
        match self.suffixes.get(name).map(Vec::as_slice) {
            Some([i]) => Some(*i),
            _ => None,
        }
    }
}

/// Pairs each prediction record with its ground-truth image. Predictions for images the ground
/// truth does not list are refused rather than scored as false positives: in practice they are a
/// path mismatch, and scoring them would quietly sink the mAP.
pub fn align<'a>(
    gt: &'a Dataset,
    pred: &'a Dataset,
) -> Result<Vec<Option<&'a ImageRecord>>, EvalError> {
    let index = ImageIndex::new(gt);
    let mut aligned: Vec<Option<&ImageRecord>> = vec![None; gt.images.len()];
    let mut unknown = Vec::new();
    for rec in &pred.images {
        match index.find(&rec.image) {
            Some(i) if aligned[i].is_none() => aligned[i] = Some(rec),
            Some(i) => {
                return Err(EvalError::Invalid {
                    path: pred.source.clone(),
                    problems: vec![format!(
                        "two prediction lines ('{}' and '{}') name the ground-truth image '{}'",
                        aligned[i].map(|r| r.image.as_str()).unwrap_or(""),
                        rec.image,
                        gt.images[i].image
                    )],
                });
            }
            None => unknown.push(rec.image.clone()),
        }
    }
    if !unknown.is_empty() {
        let sample: Vec<&str> = unknown.iter().take(5).map(String::as_str).collect();
        let gt_sample: Vec<&str> = gt.images.iter().take(3).map(|r| r.image.as_str()).collect();
        return Err(EvalError::Invalid {
            path: pred.source.clone(),
            problems: vec![format!(
                "{} predicted image(s) are not in the ground truth {} (first: {}; ground truth names images like: {}). \
                 Image names must match (a shared path suffix is enough); an image without objects belongs in the ground truth with \"boxes\": []",
                unknown.len(),
                gt.source.display(),
                sample.join(", "),
                gt_sample.join(", ")
            )],
        });
    }
    Ok(aligned)
}

/// Scores `pred` against `gt`. Ground-truth images without a prediction line count as images
/// where nothing was detected.
pub fn evaluate(gt: &Dataset, pred: &Dataset, opts: &ApOptions) -> Result<ApReport, EvalError> {
    if !(opts.iou > 0.0 && opts.iou <= 1.0) {
        return Err(EvalError::Usage(format!(
            "--iou {} must be in (0, 1]",
            opts.iou
        )));
    }
    if let Some(r) = pred
        .images
        .iter()
        .find(|r| r.boxes.iter().any(|b| !b.score.is_some_and(f32::is_finite)))
    {
        return Err(EvalError::Invalid {
            path: pred.source.clone(),
            problems: vec![format!(
                "image '{}': every predicted box needs a finite \"score\"",
                r.image
            )],
        });
    }
    let aligned = align(gt, pred)?;
    let mut categories: BTreeSet<String> = opts.categories.iter().cloned().collect();
    let mut num_gt: HashMap<&str, usize> = HashMap::new();
    let mut scored: HashMap<&str, Vec<(f32, bool)>> = HashMap::new();
    for (g, p) in gt.images.iter().zip(&aligned) {
        let mut labels: BTreeSet<&str> = g.boxes.iter().map(|b| b.label.as_str()).collect();
        if let Some(p) = p {
            labels.extend(p.boxes.iter().map(|b| b.label.as_str()));
        }
        for label in labels {
            let gboxes: Vec<PixelBox> = g
                .boxes
                .iter()
                .filter(|b| b.label == label)
                .map(|b| b.bbox)
                .collect();
            let dets: Vec<(f32, PixelBox)> = p
                .iter()
                .flat_map(|p| &p.boxes)
                .filter(|b| b.label == label)
                .map(|b| (b.score.unwrap_or(f32::NEG_INFINITY), b.bbox))
                .collect();
            *num_gt.entry(label).or_insert(0) += gboxes.len();
            scored
                .entry(label)
                .or_default()
                .extend(match_image(&gboxes, &dets, opts.iou));
        }
    }
    categories.extend(num_gt.keys().map(|s| s.to_string()));
    categories.extend(scored.keys().map(|s| s.to_string()));
    let mut per_category = BTreeMap::new();
    for c in categories {
        let n = num_gt.get(c.as_str()).copied().unwrap_or(0);
        let s = scored.get(c.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        let ap = if n == 0 {
            f64::NAN
        } else {
            let (p, r) = precision_recall(s, n);
            average_precision(&p, &r)
        };
        per_category.insert(
            c,
            CategoryAp {
                ap,
                num_gt: n,
                num_det: s.len(),
                tp: s.iter().filter(|(_, t)| *t).count(),
            },
        );
    }
    let valid: Vec<f64> = per_category
        .values()
        .map(|c| c.ap)
        .filter(|a| !a.is_nan())
        .collect();
    let map = if valid.is_empty() {
        f64::NAN
    } else {
        valid.iter().sum::<f64>() / valid.len() as f64
    };
    Ok(ApReport {
        map,
        per_category,
        iou: opts.iou,
        images: gt.images.len(),
    })
}

impl std::fmt::Display for ApReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fmt_ap = |a: f64| {
            if a.is_nan() {
                "nan".to_string()
            } else {
                format!("{a:.4}")
            }
        };
        let width = self
            .per_category
            .keys()
            .map(|k| k.chars().count())
            .max()
            .unwrap_or(8)
            .max(8);
        writeln!(
            f,
            "{:<width$}  {:>8}  {:>7}  {:>7}  {:>7}",
            "category", "AP", "gt", "det", "tp"
        )?;
        for (name, c) in &self.per_category {
            writeln!(
                f,
                "{name:<width$}  {:>8}  {:>7}  {:>7}  {:>7}",
                fmt_ap(c.ap),
                c.num_gt,
                c.num_det,
                c.tp
            )?;
        }
        let scored = self
            .per_category
            .values()
            .filter(|c| !c.ap.is_nan())
            .count();
        write!(
            f,
            "mAP@{}IoU = {} over {scored} categories with ground truth ({} images)",
            self.iou,
            fmt_ap(self.map),
            self.images
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(x0: f32, y0: f32, x1: f32, y1: f32) -> PixelBox {
        PixelBox::from([x0, y0, x1, y1])
    }

    #[test]
    fn envelope_matches_the_reference_on_a_textbook_curve() {
        // TP, FP, TP over 3 gt: p = 1, .5, .667; r = 1/3, 1/3, 2/3.
        // Envelope: p' = [1, 1, .667, .667, 0]; recall changes at 1/3 and 2/3 (and to 1, at p 0).
        let ap = average_precision(&[1.0, 0.5, 2.0 / 3.0], &[1.0 / 3.0, 1.0 / 3.0, 2.0 / 3.0]);
        assert!(
            (ap - (1.0 / 3.0 + 1.0 / 3.0 * 2.0 / 3.0)).abs() < 1e-12,
            "{ap}"
        );
        assert_eq!(average_precision(&[], &[]), 0.0);
    }

    #[test]
    fn a_detection_takes_its_best_box_only_even_when_another_is_free() {
        // Two gt boxes; both detections overlap gt 0 best. The second is a false positive even
        // though it overlaps gt 1 above the threshold too.
        let gt = [b(0.0, 0.0, 10.0, 10.0), b(2.0, 0.0, 12.0, 10.0)];
        let dets = [
            (0.9, b(0.0, 0.0, 10.0, 10.0)),
            (0.8, b(0.5, 0.0, 10.5, 10.0)),
        ];
        let m = match_image(&gt, &dets, 0.5);
        assert_eq!(m, vec![(0.9, true), (0.8, false)]);
    }

    #[test]
    fn prediction_names_align_by_a_unique_path_suffix() {
        let gt = Dataset {
            images: ["img/A/img_01.jpg", "img/B/img_01.jpg", "top.jpg"]
                .iter()
                .map(|n| ImageRecord {
                    image: n.to_string(),
                    width: None,
                    height: None,
                    boxes: vec![],
                })
                .collect(),
            source: "gt".into(),
        };
        let idx = ImageIndex::new(&gt);
        assert_eq!(idx.find("/data/df/img/B/img_01.jpg"), Some(1));
        assert_eq!(idx.find("B/img_01.jpg"), Some(1));
        assert_eq!(idx.find("img_01.jpg"), None, "two images end so: ambiguous");
        assert_eq!(idx.find("photos/top.jpg"), Some(2));
        assert_eq!(idx.find("xtop.jpg"), None, "whole path components only");
    }

    #[test]
    fn iou_exactly_at_the_threshold_matches() {
        // Detection covers half of a 2x1 box and nothing else: IoU = 1/2 exactly.
        let m = match_image(
            &[b(0.0, 0.0, 2.0, 1.0)],
            &[(0.5, b(0.0, 0.0, 1.0, 1.0))],
            0.5,
        );
        assert_eq!(m, vec![(0.5, true)]);
    }
}
