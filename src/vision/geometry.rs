//! Boxes and the greedy per-class non-maximum suppression every detector contract shares.
//!
//! Two coordinate spaces meet here and must never be confused (the source project lost weeks to
//! exactly that): [`NormBox`] is `[ymin, xmin, ymax, xmax]` in `0..=1` *of the tensor fed to the
//! model*; [`PixelBox`] is `[xmin, ymin, xmax, ymax]` in pixels *of the original frame*. Only
//! [`crate::vision::preprocess::ResizeRecord`] converts one into the other.

use serde::{Deserialize, Serialize};

/// A box in the model's normalised input space, TF order `[ymin, xmin, ymax, xmax]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NormBox {
    pub ymin: f32,
    pub xmin: f32,
    pub ymax: f32,
    pub xmax: f32,
}

impl NormBox {
    pub fn clipped(self) -> Self {
        Self {
            ymin: self.ymin.clamp(0.0, 1.0),
            xmin: self.xmin.clamp(0.0, 1.0),
            ymax: self.ymax.clamp(0.0, 1.0),
            xmax: self.xmax.clamp(0.0, 1.0),
        }
    }

    fn area(&self) -> f32 {
        (self.ymax - self.ymin).max(0.0) * (self.xmax - self.xmin).max(0.0)
    }

    pub fn iou(&self, other: &Self) -> f32 {
        let ih = (self.ymax.min(other.ymax) - self.ymin.max(other.ymin)).max(0.0);
        let iw = (self.xmax.min(other.xmax) - self.xmin.max(other.xmin)).max(0.0);
        let inter = ih * iw;
        let union = self.area() + other.area() - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }
}

/// A box in the original frame's pixels, `[xmin, ymin, xmax, ymax]` (the JSON order of `vitrine detect`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(from = "[f32; 4]", into = "[f32; 4]")]
pub struct PixelBox {
    pub xmin: f32,
    pub ymin: f32,
    pub xmax: f32,
    pub ymax: f32,
}

impl From<[f32; 4]> for PixelBox {
    fn from(v: [f32; 4]) -> Self {
        Self {
            xmin: v[0],
            ymin: v[1],
            xmax: v[2],
            ymax: v[3],
        }
    }
}

impl From<PixelBox> for [f32; 4] {
    fn from(b: PixelBox) -> Self {
        [b.xmin, b.ymin, b.xmax, b.ymax]
    }
}

impl PixelBox {
    pub fn width(&self) -> f32 {
        (self.xmax - self.xmin).max(0.0)
    }

    pub fn height(&self) -> f32 {
        (self.ymax - self.ymin).max(0.0)
    }

    pub fn area(&self) -> f32 {
        self.width() * self.height()
    }

    pub fn iou(&self, other: &Self) -> f32 {
        let iw = (self.xmax.min(other.xmax) - self.xmin.max(other.xmin)).max(0.0);
        let ih = (self.ymax.min(other.ymax) - self.ymin.max(other.ymin)).max(0.0);
        let inter = iw * ih;
        let union = self.area() + other.area() - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }

    pub fn clamped(self, width: u32, height: u32) -> Self {
        let (w, h) = (width as f32, height as f32);
        Self {
            xmin: self.xmin.clamp(0.0, w),
            ymin: self.ymin.clamp(0.0, h),
            xmax: self.xmax.clamp(0.0, w),
            ymax: self.ymax.clamp(0.0, h),
        }
    }

    /// The integer pixel rectangle `(x, y, w, h)` a crop of this box covers: outward-rounded and
    /// clamped to the frame, `None` when nothing is left (CONTRACTS.md §5).
    pub fn crop_rect(&self, width: u32, height: u32) -> Option<(u32, u32, u32, u32)> {
        let x0 = self.xmin.floor().clamp(0.0, width as f32) as u32;
        let y0 = self.ymin.floor().clamp(0.0, height as f32) as u32;
        let x1 = self.xmax.ceil().clamp(0.0, width as f32) as u32;
        let y1 = self.ymax.ceil().clamp(0.0, height as f32) as u32;
        (x1 > x0 && y1 > y0).then(|| (x0, y0, x1 - x0, y1 - y0))
    }
}

/// One scored box before it is mapped out of model space.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub bbox: NormBox,
    pub score: f32,
    /// Label id as the label map numbers it (1-based; 0 is background and never appears).
    pub class_id: u32,
    /// Position in the model's output; the tie-breaker that makes the order reproducible.
    pub index: u32,
}

/// Thresholds of the post-processing, shared by every contract.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NmsParams {
    pub score_threshold: f32,
    pub iou_threshold: f32,
    pub max_detections: usize,
}

impl Default for NmsParams {
    fn default() -> Self {
        Self {
            score_threshold: 0.4,
            iou_threshold: 0.5,
            max_detections: 100,
        }
    }
}

/// Greedy per-class NMS exactly as CONTRACTS.md §4 states it, so the Python reference and this
/// agree box for box: candidates are assumed already filtered by the score threshold.
pub fn per_class_nms(mut candidates: Vec<Candidate>, params: &NmsParams) -> Vec<Candidate> {
    candidates.sort_by(|a, b| {
        a.class_id
            .cmp(&b.class_id)
            .then(b.score.total_cmp(&a.score))
            .then(a.index.cmp(&b.index))
    });
    let mut kept: Vec<Candidate> = Vec::new();
    let mut start = 0;
    while start < candidates.len() {
        let class = candidates[start].class_id;
        let end = start
            + candidates[start..]
                .iter()
                .take_while(|c| c.class_id == class)
                .count();
        let class_start = kept.len();
        for cand in &candidates[start..end] {
            if kept.len() - class_start >= params.max_detections {
                break;
            }
            if kept[class_start..]
                .iter()
                .all(|k| k.bbox.iou(&cand.bbox) <= params.iou_threshold)
            {
                kept.push(*cand);
            }
        }
        start = end;
    }
    kept.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.class_id.cmp(&b.class_id))
            .then(a.index.cmp(&b.index))
    });
    kept.truncate(params.max_detections);
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(
        ymin: f32,
        xmin: f32,
        ymax: f32,
        xmax: f32,
        score: f32,
        class_id: u32,
        index: u32,
    ) -> Candidate {
        Candidate {
            bbox: NormBox {
                ymin,
                xmin,
                ymax,
                xmax,
            },
            score,
            class_id,
            index,
        }
    }

    #[test]
    fn iou_of_identical_disjoint_and_half_overlapping_boxes() {
        let a = NormBox {
            ymin: 0.0,
            xmin: 0.0,
            ymax: 1.0,
            xmax: 1.0,
        };
        let b = NormBox {
            ymin: 0.0,
            xmin: 0.5,
            ymax: 1.0,
            xmax: 1.5,
        };
        let c = NormBox {
            ymin: 2.0,
            xmin: 2.0,
            ymax: 3.0,
            xmax: 3.0,
        };
        assert_eq!(a.iou(&a), 1.0);
        assert_eq!(a.iou(&c), 0.0);
        assert!((a.iou(&b) - 1.0 / 3.0).abs() < 1e-6);
        let zero = NormBox {
            ymin: 0.5,
            xmin: 0.5,
            ymax: 0.5,
            xmax: 0.5,
        };
        assert_eq!(
            zero.iou(&zero),
            0.0,
            "an empty union must not divide by zero"
        );
    }

    #[test]
    fn nms_suppresses_overlaps_within_a_class_only() {
        let params = NmsParams {
            score_threshold: 0.0,
            iou_threshold: 0.5,
            max_detections: 10,
        };
        let kept = per_class_nms(
            vec![
                cand(0.0, 0.0, 0.5, 0.5, 0.9, 1, 0),
                cand(0.01, 0.01, 0.5, 0.5, 0.8, 1, 1), // same object, lower score: suppressed
                cand(0.01, 0.01, 0.5, 0.5, 0.7, 2, 2), // same place, other class: kept
                cand(0.6, 0.6, 0.9, 0.9, 0.6, 1, 3),   // elsewhere: kept
            ],
            &params,
        );
        let idx: Vec<u32> = kept.iter().map(|c| c.index).collect();
        assert_eq!(idx, vec![0, 2, 3]);
    }

    #[test]
    fn nms_keeps_boxes_at_exactly_the_threshold_and_breaks_ties_by_index() {
        // IoU of these two is exactly 1/3: with threshold 1/3 it is *not* greater, so both stay.
        let params = NmsParams {
            score_threshold: 0.0,
            iou_threshold: 1.0 / 3.0,
            max_detections: 10,
        };
        let kept = per_class_nms(
            vec![
                cand(0.0, 0.5, 1.0, 1.5, 0.5, 1, 7),
                cand(0.0, 0.0, 1.0, 1.0, 0.5, 1, 3),
            ],
            &params,
        );
        assert_eq!(kept.iter().map(|c| c.index).collect::<Vec<_>>(), vec![3, 7]);
    }

    #[test]
    fn nms_caps_the_total() {
        let params = NmsParams {
            score_threshold: 0.0,
            iou_threshold: 0.5,
            max_detections: 2,
        };
        let many: Vec<_> = (0..5)
            .map(|i| {
                cand(
                    i as f32 * 0.2,
                    0.0,
                    i as f32 * 0.2 + 0.1,
                    0.1,
                    0.5 + i as f32 * 0.01,
                    1 + i % 2,
                    i,
                )
            })
            .collect();
        let kept = per_class_nms(many, &params);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].index, 4);
        assert_eq!(kept[1].index, 3);
    }

    #[test]
    fn crop_rect_rounds_outward_and_clamps() {
        let b = PixelBox {
            xmin: -3.2,
            ymin: 10.5,
            xmax: 20.1,
            ymax: 700.0,
        };
        assert_eq!(b.crop_rect(640, 480), Some((0, 10, 21, 470)));
        let outside = PixelBox {
            xmin: 700.0,
            ymin: 0.0,
            xmax: 800.0,
            ymax: 10.0,
        };
        assert_eq!(outside.crop_rect(640, 480), None);
    }
}
