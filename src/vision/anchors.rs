//! SSD anchors generated in Rust from the TF Object Detection API `ssd_anchor_generator`
//! parameters, and the box decoding that uses them.
//!
//! Why here and not in the graph: the `ssd-raw` contract keeps the model free of decode and NMS
//! ops so TensorRT can take the whole graph; the price is that these few lines must match the
//! TF OD API (`multiple_grid_anchor_generator.create_ssd_anchors`) exactly. Anchors are built once
//! per detector in `build`, never per frame.

use serde::Deserialize;

use super::geometry::NormBox;

/// The `ssd_anchor_generator` block of a TF OD API pipeline config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnchorParams {
    pub num_layers: usize,
    pub min_scale: f32,
    pub max_scale: f32,
    pub aspect_ratios: Vec<f32>,
    pub feature_map_sizes: Vec<usize>,
    #[serde(default = "yes")]
    pub reduce_boxes_in_lowest_layer: bool,
    #[serde(default = "one")]
    pub interpolated_scale_aspect_ratio: f32,
}

fn yes() -> bool {
    true
}
fn one() -> f32 {
    1.0
}

/// An anchor as TF stores it: centre and size, normalised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Anchor {
    pub yc: f32,
    pub xc: f32,
    pub h: f32,
    pub w: f32,
}

impl AnchorParams {
    /// Problems with the parameters, in words a config author can act on.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.num_layers == 0 {
            out.push("num_layers must be at least 1".to_string());
        }
        if self.feature_map_sizes.len() != self.num_layers {
            out.push(format!(
                "feature_map_sizes has {} entries but num_layers is {}",
                self.feature_map_sizes.len(),
                self.num_layers
            ));
        }
        if !(self.min_scale > 0.0 && self.max_scale >= self.min_scale && self.max_scale <= 1.0) {
            out.push(format!(
                "scales must satisfy 0 < min_scale ({}) <= max_scale ({}) <= 1",
                self.min_scale, self.max_scale
            ));
        }
        if self.aspect_ratios.is_empty()
            || self.aspect_ratios.iter().any(|a| a.is_nan() || *a <= 0.0)
        {
            out.push("aspect_ratios must be a non-empty list of positive numbers".to_string());
        }
        out
    }

    /// Box specs `(scale, aspect_ratio)` of each layer.
    fn layer_specs(&self) -> Vec<Vec<(f32, f32)>> {
        let l = self.num_layers;
        let mut scales: Vec<f32> = (0..l)
            .map(|i| {
                if l == 1 {
                    self.min_scale
                } else {
                    self.min_scale + (self.max_scale - self.min_scale) * i as f32 / (l - 1) as f32
                }
            })
            .collect();
        scales.push(1.0);
        (0..l)
            .map(|i| {
                let (s, s_next) = (scales[i], scales[i + 1]);
                if i == 0 && self.reduce_boxes_in_lowest_layer {
                    vec![(0.1, 1.0), (s, 2.0), (s, 0.5)]
                } else {
                    let mut specs: Vec<(f32, f32)> =
                        self.aspect_ratios.iter().map(|&ar| (s, ar)).collect();
                    if self.interpolated_scale_aspect_ratio > 0.0 {
                        specs.push(((s * s_next).sqrt(), self.interpolated_scale_aspect_ratio));
                    }
                    specs
                }
            })
            .collect()
    }

    /// Anchors in the order the model emits its boxes: layer → row → column → box spec.
    pub fn generate(&self) -> Vec<Anchor> {
        let mut anchors = Vec::new();
        for (specs, &f) in self.layer_specs().iter().zip(&self.feature_map_sizes) {
            let f_inv = 1.0 / f as f32;
            for y in 0..f {
                for x in 0..f {
                    let yc = (y as f32 + 0.5) * f_inv;
                    let xc = (x as f32 + 0.5) * f_inv;
                    for &(scale, ar) in specs {
                        let sq = ar.sqrt();
                        anchors.push(Anchor {
                            yc,
                            xc,
                            h: scale / sq,
                            w: scale * sq,
                        });
                    }
                }
            }
        }
        anchors
    }
}

/// Decodes one `(ty, tx, th, tw)` encoding against its anchor, clipped to the unit square.
#[inline]
pub fn decode(enc: &[f32], a: &Anchor, scales: &[f32; 4]) -> NormBox {
    let yc = enc[0] / scales[0] * a.h + a.yc;
    let xc = enc[1] / scales[1] * a.w + a.xc;
    let h = (enc[2] / scales[2]).exp() * a.h;
    let w = (enc[3] / scales[3]).exp() * a.w;
    NormBox {
        ymin: yc - h / 2.0,
        xmin: xc - w / 2.0,
        ymax: yc + h / 2.0,
        xmax: xc + w / 2.0,
    }
    .clipped()
}

#[cfg(test)]
pub(crate) fn mobilenet_v2_300() -> AnchorParams {
    AnchorParams {
        num_layers: 6,
        min_scale: 0.2,
        max_scale: 0.95,
        aspect_ratios: vec![1.0, 2.0, 0.5, 3.0, 1.0 / 3.0],
        feature_map_sizes: vec![19, 10, 5, 3, 2, 1],
        reduce_boxes_in_lowest_layer: true,
        interpolated_scale_aspect_ratio: 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-5
    }

    #[test]
    fn standard_ssd_mobilenet_v2_layout_has_1917_anchors() {
        let p = mobilenet_v2_300();
        assert!(p.problems().is_empty());
        assert_eq!(p.generate().len(), 1917);
    }

    #[test]
    fn known_anchors_match_the_tf_od_api() {
        let a = mobilenet_v2_300().generate();
        // First cell of the 19×19 layer: the reduced specs (0.1, 1), (0.2, 2), (0.2, 0.5).
        let c = 0.5 / 19.0;
        assert!(close(a[0].yc, c) && close(a[0].xc, c) && close(a[0].h, 0.1) && close(a[0].w, 0.1));
        assert!(close(a[1].h, 0.2 / 2f32.sqrt()) && close(a[1].w, 0.2 * 2f32.sqrt()));
        assert!(close(a[2].h, 0.2 * 2f32.sqrt()) && close(a[2].w, 0.2 / 2f32.sqrt()));
        // Fourth anchor: second column of the first row.
        assert!(close(a[3].yc, c) && close(a[3].xc, 1.5 / 19.0));
        // First anchor of layer 1 (10×10, scale 0.35, 6 specs per cell).
        let l1 = &a[19 * 19 * 3..];
        assert!(close(l1[0].yc, 0.05) && close(l1[0].h, 0.35) && close(l1[0].w, 0.35));
        // Its interpolated extra box: sqrt(0.35 * 0.5).
        assert!(close(l1[5].h, (0.35f32 * 0.5).sqrt()));
        // The very last anchor: the 1×1 layer, interpolated scale sqrt(0.95 * 1.0), centred.
        let last = a.last().copied().unwrap_or(Anchor {
            yc: 0.0,
            xc: 0.0,
            h: 0.0,
            w: 0.0,
        });
        assert!(close(last.yc, 0.5) && close(last.xc, 0.5) && close(last.h, 0.95f32.sqrt()));
    }

    #[test]
    fn decoding_a_zero_encoding_gives_the_anchor_and_offsets_scale_as_tf_does() {
        let anchor = Anchor {
            yc: 0.5,
            xc: 0.4,
            h: 0.2,
            w: 0.1,
        };
        let s = [10.0, 10.0, 5.0, 5.0];
        let b = decode(&[0.0, 0.0, 0.0, 0.0], &anchor, &s);
        assert!(
            close(b.ymin, 0.4) && close(b.xmin, 0.35) && close(b.ymax, 0.6) && close(b.xmax, 0.45)
        );
        // ty = 10 moves the centre one anchor height down; th = 5 * ln 2 doubles the height.
        let b = decode(&[10.0, 0.0, 5.0 * 2f32.ln(), 0.0], &anchor, &s);
        assert!(close(b.ymin, 0.5) && close(b.ymax, 0.9));
    }

    #[test]
    fn decoded_boxes_are_clipped_to_the_unit_square() {
        let anchor = Anchor {
            yc: 0.02,
            xc: 0.98,
            h: 0.2,
            w: 0.2,
        };
        let b = decode(&[0.0; 4], &anchor, &[10.0, 10.0, 5.0, 5.0]);
        assert_eq!((b.ymin, b.xmax), (0.0, 1.0));
    }

    #[test]
    fn inconsistent_parameters_are_reported() {
        let mut p = mobilenet_v2_300();
        p.feature_map_sizes.pop();
        p.min_scale = 0.0;
        assert_eq!(p.problems().len(), 2);
    }
}
