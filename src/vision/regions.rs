//! From detections to the garment regions of each shopper.
//!
//! The shipped detector finds people and footwear, not garments (no registry package carries a
//! garment detector), so a configurable body layout cuts each person box into a top and a bottom
//! region; footwear boxes join the person they stand under. A clothing detector (DeepFashion-style)
//! drops into the same slot: its labels map straight to groups through `label_groups`, and each
//! garment joins the person box that holds it, or stands alone when there is none.
//!
//! With a pose model (`[pose]` in the config), [`body_regions`] cuts the garments out of the body
//! instead: top from the shoulders to the hips, bottom from the hips to the ankles (or the knees),
//! footwear around ankles, heels and toes. A region exists only where the model saw its
//! keypoints, so a shopper seen from the waist up has no bottom. The fixed layout stays as the
//! fallback when no pose model is configured.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::detector::Detection;
use super::geometry::PixelBox;
use super::pose::{Keypoint, kp};

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
    /// Found from the shopper's body keypoints.
    Pose,
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
    /// A person box (a pose model can look at it), not a lone garment.
    pub person: bool,
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
                person: true,
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
                person: false,
                regions: vec![region],
            }),
        }
    }
    out
}

/// The levels a pose must reach before its garment regions are trusted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BodyGates {
    /// Below this pose confidence the body is not believed at all (the model invents limbs).
    pub min_confidence: f32,
    /// A keypoint counts only when its visibility reaches this.
    pub min_visibility: f32,
}

/// Garment regions from a body: `confidence` is the pose confidence, `keypoints` the 33 body
/// keypoints in frame pixels. Each region needs one of each pair of its keypoints (left or right)
/// to be visible, so a shopper turned sideways keeps their garments.
pub fn body_regions(keypoints: &[Keypoint], confidence: f32, gates: &BodyGates) -> Vec<Region> {
    if confidence < gates.min_confidence || keypoints.len() < kp::COUNT {
        return Vec::new();
    }
    let seen = |pair: [usize; 2]| -> Vec<Keypoint> {
        pair.iter()
            .map(|&i| keypoints[i])
            .filter(|k| k.visibility >= gates.min_visibility)
            .collect()
    };
    let shoulders = seen([kp::LEFT_SHOULDER, kp::RIGHT_SHOULDER]);
    let hips = seen([kp::LEFT_HIP, kp::RIGHT_HIP]);
    let knees = seen([kp::LEFT_KNEE, kp::RIGHT_KNEE]);
    let ankles = seen([kp::LEFT_ANKLE, kp::RIGHT_ANKLE]);
    let region = |group: &str, bbox: PixelBox| Region {
        group: group.into(),
        bbox,
        source: RegionSource::Pose,
    };
    let mut out = Vec::new();
    if let Some(b) = top_box(&shoulders, &hips) {
        out.push(region("top", b));
    }
    if let Some(b) = bottom_box(&hips, &knees, &ankles) {
        out.push(region("bottom", b));
    }
    if let Some(b) = footwear_box(keypoints, gates.min_visibility) {
        out.push(region("footwear", b));
    }
    out
}

fn span(points: &[Keypoint], f: impl Fn(&Keypoint) -> f32) -> (f32, f32) {
    points
        .iter()
        .map(f)
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        })
}

fn mean_y(points: &[Keypoint]) -> f32 {
    points.iter().map(|k| k.y).sum::<f32>() / points.len().max(1) as f32
}

/// A box around `points` across, `[ymin, ymax]` down, at least `min_half` wide on each side of
/// the points' centre, widened by `pad` beyond the outermost points.
fn body_box(points: &[Keypoint], ymin: f32, ymax: f32, pad: f32, min_half: f32) -> PixelBox {
    let (x0, x1) = span(points, |k| k.x);
    let cx = (x0 + x1) / 2.0;
    let half = ((x1 - x0) / 2.0 + pad).max(min_half);
    PixelBox {
        xmin: cx - half,
        ymin,
        xmax: cx + half,
        ymax,
    }
}

/// Shoulders to hips. The collar sits above the shoulder joints and the hem near the hip joints;
/// seen from the side the shoulders overlap, so the torso is kept at least half as wide as long.
fn top_box(shoulders: &[Keypoint], hips: &[Keypoint]) -> Option<PixelBox> {
    if shoulders.is_empty() || hips.is_empty() {
        return None;
    }
    let torso = mean_y(hips) - mean_y(shoulders);
    if torso <= 1.0 {
        return None;
    }
    let all: Vec<Keypoint> = shoulders.iter().chain(hips).copied().collect();
    let (sy, _) = span(shoulders, |k| k.y);
    let (_, hy) = span(hips, |k| k.y);
    Some(body_box(
        &all,
        sy - 0.1 * torso,
        hy + 0.05 * torso,
        0.15 * torso,
        0.25 * torso,
    ))
}

/// Hips to ankles, or to the knees when the ankles are out of view. The waistband sits above
/// the hip joints.
fn bottom_box(hips: &[Keypoint], knees: &[Keypoint], ankles: &[Keypoint]) -> Option<PixelBox> {
    let end = if ankles.is_empty() { knees } else { ankles };
    if hips.is_empty() || end.is_empty() {
        return None;
    }
    let legs = mean_y(end) - mean_y(hips);
    if legs <= 1.0 {
        return None;
    }
    let all: Vec<Keypoint> = hips.iter().chain(knees).chain(end).copied().collect();
    let (hy, _) = span(hips, |k| k.y);
    let (_, ey) = span(end, |k| k.y);
    Some(body_box(
        &all,
        hy - 0.1 * legs,
        ey + 0.03 * legs,
        0.1 * legs,
        0.15 * legs,
    ))
}

/// Around the feet whose ankle and toe are both visible (heels when seen), padded by part of the
/// foot's length so the whole shoe is inside.
fn footwear_box(k: &[Keypoint], min_visibility: f32) -> Option<PixelBox> {
    let feet = [
        [kp::LEFT_ANKLE, kp::LEFT_HEEL, kp::LEFT_TOE],
        [kp::RIGHT_ANKLE, kp::RIGHT_HEEL, kp::RIGHT_TOE],
    ];
    let visible = |i: usize| k[i].visibility >= min_visibility;
    let mut points = Vec::new();
    let mut foot_len: f32 = 0.0;
    for [ankle, heel, toe] in feet {
        if !(visible(ankle) && visible(toe)) {
            continue;
        }
        foot_len = foot_len.max((k[toe].x - k[ankle].x).hypot(k[toe].y - k[ankle].y));
        points.extend(
            [ankle, heel, toe]
                .into_iter()
                .filter(|&i| visible(i))
                .map(|i| k[i]),
        );
    }
    if points.is_empty() || foot_len <= 1.0 {
        return None;
    }
    let (x0, x1) = span(&points, |p| p.x);
    let (y0, y1) = span(&points, |p| p.y);
    let pad = 0.35 * foot_len;
    Some(PixelBox {
        xmin: x0 - pad,
        ymin: y0 - pad,
        xmax: x1 + pad,
        ymax: y1 + pad,
    })
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
    const GATES: BodyGates = BodyGates {
        min_confidence: 0.5,
        min_visibility: 0.5,
    };

    /// A shopper standing facing the camera, 300 px from shoulders to ankles; every keypoint
    /// that is not set here sits at the centre with visibility 0.99.
    fn standing() -> Vec<Keypoint> {
        let centre = Keypoint {
            x: 100.0,
            y: 150.0,
            visibility: 0.99,
            presence: 1.0,
        };
        let mut k = vec![centre; kp::COUNT];
        let mut set = |i: usize, x: f32, y: f32| k[i] = Keypoint { x, y, ..centre };
        set(kp::LEFT_SHOULDER, 120.0, 100.0);
        set(kp::RIGHT_SHOULDER, 80.0, 100.0);
        set(kp::LEFT_HIP, 115.0, 200.0);
        set(kp::RIGHT_HIP, 85.0, 200.0);
        set(kp::LEFT_KNEE, 113.0, 290.0);
        set(kp::RIGHT_KNEE, 87.0, 290.0);
        set(kp::LEFT_ANKLE, 112.0, 380.0);
        set(kp::RIGHT_ANKLE, 88.0, 380.0);
        set(kp::LEFT_HEEL, 112.0, 390.0);
        set(kp::RIGHT_HEEL, 88.0, 390.0);
        set(kp::LEFT_TOE, 114.0, 398.0);
        set(kp::RIGHT_TOE, 86.0, 398.0);
        k
    }

    fn groups(r: &[Region]) -> Vec<&str> {
        r.iter().map(|r| r.group.as_str()).collect()
    }

    fn close(b: PixelBox, want: [f32; 4]) -> bool {
        <[f32; 4]>::from(b)
            .iter()
            .zip(want)
            .all(|(a, w)| (a - w).abs() < 1e-3)
    }

    #[test]
    fn a_whole_body_gets_top_bottom_and_footwear_from_its_keypoints() {
        let r = body_regions(&standing(), 0.99, &GATES);
        assert_eq!(groups(&r), vec!["top", "bottom", "footwear"]);
        assert!(r.iter().all(|r| r.source == RegionSource::Pose));
        // Torso 100 px: collar 10 px above the shoulders, hem 5 below the hips, 15 px each side.
        assert!(
            close(r[0].bbox, [65.0, 90.0, 135.0, 205.0]),
            "{:?}",
            r[0].bbox
        );
        // Legs 180 px: waistband 18 px above the hips, hem 5.4 below the ankles.
        assert!(
            close(r[1].bbox, [67.0, 182.0, 133.0, 385.4]),
            "{:?}",
            r[1].bbox
        );
        let foot = 2.0f32.hypot(18.0) * 0.35;
        assert!(close(
            r[2].bbox,
            [86.0 - foot, 380.0 - foot, 114.0 + foot, 398.0 + foot]
        ));
    }

    #[test]
    fn a_shopper_seen_from_the_waist_up_has_no_bottom() {
        let mut k = standing();
        for p in &mut k[kp::LEFT_KNEE..=kp::RIGHT_TOE] {
            p.visibility = 0.2;
        }
        assert_eq!(groups(&body_regions(&k, 0.95, &GATES)), vec!["top"]);
    }

    #[test]
    fn a_shopper_seen_from_behind_keeps_both_garments() {
        // From behind the model's left side is on the image's left: x mirrored around 100.
        let k: Vec<Keypoint> = standing()
            .into_iter()
            .map(|p| Keypoint {
                x: 200.0 - p.x,
                ..p
            })
            .collect();
        let r = body_regions(&k, 0.9, &GATES);
        assert_eq!(groups(&r), vec!["top", "bottom", "footwear"]);
        assert!(close(r[0].bbox, [65.0, 90.0, 135.0, 205.0]));
    }

    #[test]
    fn an_unsure_pose_gives_no_region_at_all() {
        assert!(body_regions(&standing(), 0.38, &GATES).is_empty());
        assert!(body_regions(&standing()[..20], 0.99, &GATES).is_empty());
    }

    #[test]
    fn without_ankles_the_bottom_ends_at_the_knees_and_the_feet_have_no_region() {
        let mut k = standing();
        for p in &mut k[kp::LEFT_ANKLE..=kp::RIGHT_TOE] {
            p.visibility = 0.1;
        }
        let r = body_regions(&k, 0.9, &GATES);
        assert_eq!(groups(&r), vec!["top", "bottom"]);
        // Legs to the knees 90 px: waistband 9 px above the hips, hem 2.7 px below the knees.
        assert!(
            close(r[1].bbox, [76.0, 191.0, 124.0, 292.7]),
            "{:?}",
            r[1].bbox
        );
    }

    #[test]
    fn a_shopper_turned_sideways_keeps_a_torso_of_plausible_width() {
        let mut k = standing();
        for i in [kp::RIGHT_SHOULDER, kp::RIGHT_HIP] {
            k[i].visibility = 0.1;
        }
        k[kp::LEFT_HIP].x = 120.0;
        let r = body_regions(&k, 0.9, &GATES);
        assert_eq!(r[0].group, "top");
        assert!(
            close(r[0].bbox, [95.0, 90.0, 145.0, 205.0]),
            "{:?}",
            r[0].bbox
        );
        let strict = BodyGates {
            min_visibility: 0.995,
            ..GATES
        };
        assert!(body_regions(&k, 0.9, &strict).is_empty());
    }
}
