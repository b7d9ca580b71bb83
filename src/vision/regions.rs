//! From detections to the garment regions of each shopper.
//!
//! The shipped detector finds people and footwear, not garments (no registry package carries a
//! garment detector), so a configurable body layout cuts each person box into a top and a bottom
//! region; footwear boxes join the person they stand under. A clothing detector (DeepFashion-style)
//! drops into the same slot: its labels map straight to groups through `label_groups`, and each
//! garment joins the person box that holds it, or stands alone when there is none.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::detector::Detection;
use super::geometry::PixelBox;

/// A band of the person box, in fractions of its width and height.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutBand {
    pub group: String,
    /// `[from, to]` down the person box, 0 = head, 1 = feet.
    pub y: [f32; 2],
    /// `[from, to]` across it.
    #[serde(default = "full")]
    pub x: [f32; 2],
}

fn full() -> [f32; 2] {
    [0.0, 1.0]
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionSettings {
    /// Detector labels that are shoppers.
    #[serde(default = "default_person_labels")]
    pub person_labels: Vec<String>,
    /// Shoppers shorter than this (pixels) are too small to embed meaningfully and are skipped.
    #[serde(default = "default_min_height")]
    pub min_person_height: f32,
    /// How a person box is cut into garments; empty when the detector finds garments itself.
    #[serde(default = "default_layout")]
    pub layout: Vec<LayoutBand>,
    /// Detector labels that are garments themselves, and their catalog group.
    #[serde(default = "default_label_groups")]
    pub label_groups: BTreeMap<String, String>,
}

fn default_person_labels() -> Vec<String> {
    vec!["Person".into()]
}
fn default_min_height() -> f32 {
    40.0
}
fn default_layout() -> Vec<LayoutBand> {
    // Proportions of a standing adult: the torso from below the chin to the hips, the legs from
    // the hips to the ankles, trimmed at the sides where arms and background dominate.
    vec![
        LayoutBand {
            group: "top".into(),
            y: [0.16, 0.52],
            x: [0.12, 0.88],
        },
        LayoutBand {
            group: "bottom".into(),
            y: [0.50, 0.90],
            x: [0.18, 0.82],
        },
    ]
}
fn default_label_groups() -> BTreeMap<String, String> {
    [
        ("Footwear", "footwear"),
        ("Boot", "footwear"),
        ("High heels", "footwear"),
        ("Sandal", "footwear"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect()
}

impl Default for RegionSettings {
    fn default() -> Self {
        Self {
            person_labels: default_person_labels(),
            min_person_height: default_min_height(),
            layout: default_layout(),
            label_groups: default_label_groups(),
        }
    }
}

impl RegionSettings {
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for b in &self.layout {
            let ok = |r: [f32; 2]| {
                (0.0..=1.0).contains(&r[0]) && (0.0..=1.0).contains(&r[1]) && r[0] < r[1]
            };
            if !ok(b.y) || !ok(b.x) {
                out.push(format!("regions.layout band '{}': y {:?} and x {:?} must be increasing fractions in 0..=1", b.group, b.y, b.x));
            }
        }
        if self.layout.is_empty() && self.label_groups.is_empty() {
            out.push("regions: neither a body layout nor label_groups is set, so no garment would ever be found".into());
        }
        out
    }

    /// Labels the configuration expects from the detector; each must exist in its label map.
    pub fn labels_used(&self) -> impl Iterator<Item = &str> {
        self.person_labels
            .iter()
            .map(String::as_str)
            .chain(self.label_groups.keys().map(String::as_str))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "from", rename_all = "kebab-case")]
pub enum RegionSource {
    /// Cut out of the person box by the body layout.
    Layout,
    /// A detector box of its own.
    Detection { label: String, score: f32 },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Region {
    pub group: String,
    pub bbox: PixelBox,
    pub source: RegionSource,
}

/// A shopper in one frame: their box (or the lone garment's) and garment regions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShopperRegions {
    pub bbox: PixelBox,
    pub score: f32,
    pub regions: Vec<Region>,
}

/// How much of `inner` lies inside `outer`.
fn containment(inner: &PixelBox, outer: &PixelBox) -> f32 {
    let iw = (inner.xmax.min(outer.xmax) - inner.xmin.max(outer.xmin)).max(0.0);
    let ih = (inner.ymax.min(outer.ymax) - inner.ymin.max(outer.ymin)).max(0.0);
    let a = inner.area();
    if a <= 0.0 { 0.0 } else { iw * ih / a }
}

pub fn shoppers(dets: &[Detection], settings: &RegionSettings) -> Vec<ShopperRegions> {
    let is_person = |d: &Detection| {
        settings
            .person_labels
            .iter()
            .any(|l| l.eq_ignore_ascii_case(&d.label))
    };
    let mut out: Vec<ShopperRegions> = dets
        .iter()
        .filter(|d| is_person(d) && d.bbox.height() >= settings.min_person_height)
        .map(|d| {
            let b = d.bbox;
            let (w, h) = (b.width(), b.height());
            let regions = settings
                .layout
                .iter()
                .map(|band| Region {
                    group: band.group.clone(),
                    bbox: PixelBox {
                        xmin: b.xmin + band.x[0] * w,
                        ymin: b.ymin + band.y[0] * h,
                        xmax: b.xmin + band.x[1] * w,
                        ymax: b.ymin + band.y[1] * h,
                    },
                    source: RegionSource::Layout,
                })
                .collect();
            ShopperRegions {
                bbox: b,
                score: d.score,
                regions,
            }
        })
        .collect();
    for d in dets.iter().filter(|d| !is_person(d)) {
        let Some(group) = settings
            .label_groups
            .iter()
            .find(|(l, _)| l.eq_ignore_ascii_case(&d.label))
            .map(|(_, g)| g.clone())
        else {
            continue;
        };
        let region = Region {
            group,
            bbox: d.bbox,
            source: RegionSource::Detection {
                label: d.label.clone(),
                score: d.score,
            },
        };
        // Footwear sits at the bottom edge of a person box and often pokes out of it: half inside
        // is enough to belong. Of several people, the one holding most of it wins.
        let owner = out
            .iter()
            .enumerate()
            .map(|(i, s)| (i, containment(&d.bbox, &s.bbox)))
            .filter(|(_, c)| *c >= 0.5)
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i);
        match owner {
            Some(i) => out[i].regions.push(region),
            None => out.push(ShopperRegions {
                bbox: d.bbox,
                score: d.score,
                regions: vec![region],
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(label: &str, b: [f32; 4], score: f32) -> Detection {
        Detection {
            label: label.into(),
            class_id: 1,
            score,
            bbox: b.into(),
        }
    }

    #[test]
    fn a_person_gets_top_bottom_and_their_footwear() {
        let dets = vec![
            det("Person", [100.0, 100.0, 200.0, 400.0], 0.9),
            det("Footwear", [120.0, 380.0, 160.0, 410.0], 0.6),
            det("Person", [400.0, 100.0, 500.0, 400.0], 0.8),
            det("Footwear", [600.0, 380.0, 640.0, 410.0], 0.5), // nobody's: stands alone
            det("Car", [0.0, 0.0, 50.0, 50.0], 0.9),
        ];
        let s = shoppers(&dets, &RegionSettings::default());
        assert_eq!(s.len(), 3);
        let groups: Vec<_> = s[0].regions.iter().map(|r| r.group.as_str()).collect();
        assert_eq!(groups, vec!["top", "bottom", "footwear"]);
        let top = s[0].regions[0].bbox;
        assert!(
            (top.ymin - 148.0).abs() < 1e-3
                && (top.ymax - 256.0).abs() < 1e-3
                && (top.xmin - 112.0).abs() < 1e-3
        );
        assert_eq!(s[1].regions.len(), 2);
        assert_eq!(s[2].regions[0].group, "footwear");
    }

    #[test]
    fn small_people_are_skipped_and_bad_layouts_reported() {
        let s = shoppers(
            &[det("person", [0.0, 0.0, 10.0, 20.0], 0.9)],
            &RegionSettings::default(),
        );
        assert!(s.is_empty());
        let mut cfg = RegionSettings::default();
        cfg.layout[0].y = [0.6, 0.2];
        assert_eq!(cfg.problems().len(), 1);
    }
}
