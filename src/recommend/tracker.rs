//! The shopper tracker: greedy IoU association, per-garment embedding state, and the hysteresis
//! that keeps a garment's list steady.
//!
//! With a pose model the tracker also says when a shopper's body must be looked at again
//! ([`Tracker::pose_requests`]: new, moved, grown or aged, like a garment's embedding). The
//! garment regions found then are kept relative to the person box ([`BodyLayout`]) and follow the
//! shopper's box between pose runs, so the model runs only when garments are re-embedded.
//!
//! It also notes what the audience figures count ([`AudienceEvents`]): people coming into view and
//! how long they stayed, garments given a list, lists put on display. The inference thread takes
//! them after each frame ([`Tracker::take_audience`]).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::catalog::Hit;
use crate::telemetry::AudienceEvents;
use crate::vision::embedder::l2_normalise;
use crate::vision::garment::GarmentCrop;
use crate::vision::geometry::PixelBox;
use crate::vision::regions::{Region, RegionSource, ShopperRegions};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackerSettings {
    /// Minimum IoU between a track's last box and a new detection to be the same shopper.
    #[serde(default = "iou")]
    pub match_iou: f32,
    /// A shopper out of view this long is forgotten.
    #[serde(default = "timeout", with = "millis")]
    pub timeout_ms: Duration,
    /// Weight of a new embedding in the moving average (1 = no smoothing).
    #[serde(default = "alpha")]
    pub smoothing: f32,
    /// Re-embed a garment whose box centre moved more than this fraction of the box's diagonal
    /// since it was last embedded (what is behind the garment changes)…
    #[serde(default = "shift")]
    pub reembed_shift: f32,
    /// …or whose box grew or shrank by more than this factor (the shopper came closer or turned).
    #[serde(default = "scale")]
    pub reembed_scale: f32,
    /// Re-embed a garment at least this often even when it stands still.
    #[serde(default = "refresh", with = "millis")]
    pub refresh_ms: Duration,
    /// Updates a different list must win in a row before the display switches to it.
    #[serde(default = "confirm")]
    pub confirm_updates: u32,
    /// At most this many crops are embedded per frame: new garments first, then the stalest.
    /// The rest wait a frame, so a crowd walking in never makes one frame late (p99 latency).
    #[serde(default = "budget")]
    pub max_embeds_per_frame: usize,
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

fn iou() -> f32 {
    0.3
}
fn timeout() -> Duration {
    Duration::from_millis(1500)
}
fn alpha() -> f32 {
    0.5
}
fn shift() -> f32 {
    0.5
}
fn scale() -> f32 {
    1.25
}
fn refresh() -> Duration {
    Duration::from_millis(1000)
}
fn confirm() -> u32 {
    2
}
fn budget() -> usize {
    6
}

impl Default for TrackerSettings {
    fn default() -> Self {
        Self {
            match_iou: iou(),
            timeout_ms: timeout(),
            smoothing: alpha(),
            reembed_shift: shift(),
            reembed_scale: scale(),
            refresh_ms: refresh(),
            confirm_updates: confirm(),
            max_embeds_per_frame: budget(),
        }
    }
}

impl TrackerSettings {
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !(0.0..=1.0).contains(&self.match_iou) {
            p.push(format!(
                "recommend.tracking.match_iou = {} must be between 0 and 1",
                self.match_iou
            ));
        }
        if self.reembed_shift.is_nan() || self.reembed_shift < 0.0 {
            p.push(format!(
                "recommend.tracking.reembed_shift = {} must be 0 or more",
                self.reembed_shift
            ));
        }
        if self.reembed_scale.is_nan() || self.reembed_scale < 1.0 {
            p.push(format!(
                "recommend.tracking.reembed_scale = {} must be 1 or more",
                self.reembed_scale
            ));
        }
        if !(self.smoothing > 0.0 && self.smoothing <= 1.0) {
            p.push(format!(
                "recommend.smoothing = {} must be in (0, 1]",
                self.smoothing
            ));
        }
        if self.max_embeds_per_frame == 0 {
            p.push("recommend.tracking.max_embeds_per_frame must be at least 1".into());
        }
        if self.confirm_updates == 0 {
            p.push("recommend.confirm_updates must be at least 1".into());
        }
        p
    }
}

#[derive(Debug, Clone)]
pub struct GarmentTrack {
    pub group: String,
    pub kind: Option<String>,
    pub bbox: PixelBox,
    pub embedding: Option<Vec<f32>>,
    embedded_bbox: Option<PixelBox>,
    embedded_at: Option<Instant>,
    /// Set when the embedding changed and the list must be searched again.
    pub dirty: bool,
    /// The list on display.
    pub shown: Vec<Hit>,
    pending: Option<(Vec<usize>, u32)>,
    /// The crop (rectangle and person mask) of the last embedding.
    crop: Option<GarmentCrop>,
    /// A list has been shown for it (the audience counts each garment once).
    recommended: bool,
}

impl GarmentTrack {
    /// The crop the garment's embedding was last made from: its rectangle in that frame and,
    /// with a pose model, which of its pixels were the shopper.
    pub fn last_crop(&self) -> Option<&GarmentCrop> {
        self.crop.as_ref()
    }
}

/// Garment regions found from a shopper's body, as fractions of the person box they were found
/// in: applied to the current box, they follow the shopper between pose runs.
#[derive(Debug, Clone, PartialEq)]
pub struct BodyLayout {
    /// `(group, [xmin, ymin, xmax, ymax])`, 0 = the box's left/top edge, 1 = its right/bottom.
    regions: Vec<(String, [f32; 4])>,
}

impl BodyLayout {
    pub fn new(person: &PixelBox, regions: &[Region]) -> Self {
        let (w, h) = (person.width().max(1.0), person.height().max(1.0));
        let rel = |b: &PixelBox| {
            [
                (b.xmin - person.xmin) / w,
                (b.ymin - person.ymin) / h,
                (b.xmax - person.xmin) / w,
                (b.ymax - person.ymin) / h,
            ]
        };
        Self {
            regions: regions
                .iter()
                .map(|r| (r.group.clone(), rel(&r.bbox)))
                .collect(),
        }
    }

    /// The regions on `person`'s current box.
    pub fn apply(&self, person: &PixelBox) -> Vec<Region> {
        let (w, h) = (person.width(), person.height());
        self.regions
            .iter()
            .map(|(group, r)| Region {
                group: group.clone(),
                bbox: PixelBox {
                    xmin: person.xmin + r[0] * w,
                    ymin: person.ymin + r[1] * h,
                    xmax: person.xmin + r[2] * w,
                    ymax: person.ymin + r[3] * h,
                },
                source: RegionSource::Pose,
            })
            .collect()
    }

    fn has(&self, group: &str) -> bool {
        self.regions.iter().any(|(g, _)| g == group)
    }
}

/// When and where a shopper's body was last looked at.
#[derive(Debug, Clone)]
struct BodyState {
    layout: BodyLayout,
    at: Instant,
    bbox: PixelBox,
}

#[derive(Debug, Clone)]
pub struct Track {
    pub id: u64,
    pub bbox: PixelBox,
    pub last_seen: Instant,
    pub in_view: bool,
    /// A person (a pose model can look at them), not a lone garment.
    pub person: bool,
    pub garments: Vec<GarmentTrack>,
    body: Option<BodyState>,
    /// When the audience figures started counting this track: the first frame it was a person.
    counted_at: Option<Instant>,
}

impl Track {
    /// The garment regions of the last pose run, relative to the person box.
    pub fn body_layout(&self) -> Option<&BodyLayout> {
        self.body.as_ref().map(|b| &b.layout)
    }
}

/// This frame's regions for a track: the body layout's on the current box when there is one,
/// plus the detector's own garments of groups the body did not give.
fn regions_for(body: Option<&BodyState>, s: ShopperRegions) -> ShopperRegions {
    let Some(b) = body else { return s };
    let mut regions = b.layout.apply(&s.bbox);
    regions.extend(
        s.regions
            .into_iter()
            .filter(|r| matches!(r.source, RegionSource::Detection { .. }))
            .filter(|r| !b.layout.has(&r.group)),
    );
    ShopperRegions { regions, ..s }
}

/// A garment that needs a (new) embedding: `(track index, garment index, crop box)`.
pub type EmbedRequest = (usize, usize, PixelBox);

#[derive(Debug)]
pub struct Tracker {
    settings: TrackerSettings,
    tracks: Vec<Track>,
    next_id: u64,
    audience: AudienceEvents,
}

impl Tracker {
    pub fn new(settings: TrackerSettings) -> Self {
        Self {
            settings,
            tracks: Vec::new(),
            next_id: 1,
            audience: AudienceEvents::default(),
        }
    }

    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    /// Associates this frame's shoppers with tracks, starts new tracks, forgets old ones.
    pub fn update(&mut self, shoppers: Vec<ShopperRegions>, now: Instant) {
        let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
        for (ti, t) in self.tracks.iter().enumerate() {
            for (si, s) in shoppers.iter().enumerate() {
                let iou = t.bbox.iou(&s.bbox);
                if iou >= self.settings.match_iou {
                    pairs.push((iou, ti, si));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut track_of: Vec<Option<usize>> = vec![None; shoppers.len()];
        let mut taken = vec![false; self.tracks.len()];
        for (_, ti, si) in pairs {
            if !taken[ti] && track_of[si].is_none() {
                taken[ti] = true;
                track_of[si] = Some(ti);
            }
        }
        for t in &mut self.tracks {
            t.in_view = false;
        }
        for (si, s) in shoppers.into_iter().enumerate() {
            match track_of[si] {
                Some(ti) => {
                    let t = &mut self.tracks[ti];
                    t.bbox = s.bbox;
                    t.last_seen = now;
                    t.in_view = true;
                    t.person = s.person;
                    merge_garments(&mut t.garments, regions_for(t.body.as_ref(), s));
                }
                None => {
                    let mut garments = Vec::new();
                    let (bbox, person) = (s.bbox, s.person);
                    merge_garments(&mut garments, s);
                    self.tracks.push(Track {
                        id: self.next_id,
                        bbox,
                        last_seen: now,
                        in_view: true,
                        person,
                        garments,
                        body: None,
                        counted_at: None,
                    });
                    self.next_id += 1;
                }
            }
        }
        // A shopper counts once, from the first frame they are a person: a lone garment is not
        // one yet, and becomes one when its person box is found.
        for t in self.tracks.iter_mut() {
            if t.in_view && t.person && t.counted_at.is_none() {
                t.counted_at = Some(now);
                self.audience.shoppers_seen += 1;
            }
        }
        let timeout = self.settings.timeout_ms;
        let dwell = &mut self.audience.dwell;
        self.tracks.retain(|t| {
            let keep = now.saturating_duration_since(t.last_seen) <= timeout;
            if let (false, Some(since)) = (keep, t.counted_at) {
                dwell.push(t.last_seen.saturating_duration_since(since));
            }
            keep
        });
    }

    /// What the audience figures count that happened since the last call.
    pub fn take_audience(&mut self) -> AudienceEvents {
        std::mem::take(&mut self.audience)
    }

    /// Garments of shoppers in view whose embedding is missing, stale, or taken at a box that has
    /// since moved too far, within the per-frame budget (missing ones first, then the oldest).
    /// Returns the requests and how many garments reuse their tracked embedding this frame.
    pub fn embed_requests(&self, now: Instant) -> (Vec<EmbedRequest>, usize) {
        self.embed_requests_where(now, |_| true)
    }

    /// [`Tracker::embed_requests`] among the tracks `eligible` accepts (with a pose model: those
    /// whose body was just looked at, and lone garments); the budget goes to those only.
    pub fn embed_requests_where(
        &self,
        now: Instant,
        eligible: impl Fn(usize) -> bool,
    ) -> (Vec<EmbedRequest>, usize) {
        // (never embedded, embedded at) orders new garments first, then the stalest.
        let mut stale: Vec<(bool, Option<Instant>, EmbedRequest)> = Vec::new();
        let mut fresh = 0;
        for (ti, t) in self.tracks.iter().enumerate().filter(|(_, t)| t.in_view) {
            if !eligible(ti) {
                fresh += t.garments.len();
                continue;
            }
            for (gi, g) in t.garments.iter().enumerate() {
                let is_stale = match (g.embedded_bbox, g.embedded_at) {
                    (Some(b), Some(at)) => {
                        changed(
                            &b,
                            &g.bbox,
                            self.settings.reembed_shift,
                            self.settings.reembed_scale,
                        ) || now.saturating_duration_since(at) >= self.settings.refresh_ms
                    }
                    _ => true,
                };
                if is_stale {
                    stale.push((g.embedding.is_some(), g.embedded_at, (ti, gi, g.bbox)));
                } else {
                    fresh += 1;
                }
            }
        }
        stale.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        let deferred = stale
            .len()
            .saturating_sub(self.settings.max_embeds_per_frame);
        stale.truncate(self.settings.max_embeds_per_frame);
        (
            stale.into_iter().map(|(_, _, r)| r).collect(),
            fresh + deferred,
        )
    }

    /// People in view whose body should be looked at (again): never posed, posed more than
    /// `refresh` ago (`pose.refresh_ms`: a pose run costs five embeddings' CPU), or moved or grown/shrunk in height since (`reembed_shift`, `reembed_scale`
    /// of the person box). New ones first, then the oldest; as many as the embedding budget can take this frame
    /// (three garments a person), at least one.
    pub fn pose_requests(&self, now: Instant, refresh: Duration) -> Vec<usize> {
        let s = &self.settings;
        let mut due: Vec<(bool, Option<Instant>, usize)> = self
            .tracks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.in_view && t.person)
            .filter(|(_, t)| match &t.body {
                None => true,
                Some(b) => {
                    // The width is left out: a walker's arms swing the box's width every step,
                    // while the body's regions only move with its position and height.
                    let then = PixelBox {
                        xmin: t.bbox.xmin,
                        xmax: t.bbox.xmax,
                        ..b.bbox
                    };
                    now.saturating_duration_since(b.at) >= refresh
                        || changed(&b.bbox, &t.bbox, s.reembed_shift, f32::INFINITY)
                        || changed(&then, &t.bbox, f32::INFINITY, s.reembed_scale)
                }
            })
            .map(|(ti, t)| (t.body.is_some(), t.body.as_ref().map(|b| b.at), ti))
            .collect();
        due.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        let people = (s.max_embeds_per_frame / 3).max(1);
        due.into_iter().take(people).map(|(_, _, ti)| ti).collect()
    }

    /// Takes the garment regions a pose run found on track `ti`'s current box: they replace its
    /// body's garments (each keeping its smoothed embedding when its group is still there), and
    /// every garment is due for a fresh embedding from this frame's crop.
    pub fn set_body(&mut self, ti: usize, regions: Vec<Region>, now: Instant) {
        let t = &mut self.tracks[ti];
        let layout = BodyLayout::new(&t.bbox, &regions);
        let mut all = regions;
        // The detector's own garments stay for the groups the body does not give.
        all.extend(
            t.garments
                .iter()
                .filter(|g| !layout.has(&g.group))
                .filter_map(|g| {
                    g.kind.as_ref().map(|label| Region {
                        group: g.group.clone(),
                        bbox: g.bbox,
                        source: RegionSource::Detection {
                            label: label.clone(),
                            score: 0.0,
                        },
                    })
                }),
        );
        let shopper = ShopperRegions {
            bbox: t.bbox,
            score: 0.0,
            person: t.person,
            regions: all,
        };
        merge_garments(&mut t.garments, shopper);
        for g in &mut t.garments {
            g.embedded_at = None;
        }
        t.body = Some(BodyState {
            layout,
            at: now,
            bbox: t.bbox,
        });
    }

    /// Keeps the crop a garment was just embedded from (see [`GarmentTrack::last_crop`]).
    pub fn set_crop(&mut self, ti: usize, gi: usize, crop: GarmentCrop) {
        self.tracks[ti].garments[gi].crop = Some(crop);
    }

    /// Folds a fresh embedding into the garment's moving average.
    pub fn set_embedding(&mut self, ti: usize, gi: usize, mut v: Vec<f32>, now: Instant) {
        let a = self.settings.smoothing;
        let g = &mut self.tracks[ti].garments[gi];
        if let Some(old) = &g.embedding
            && old.len() == v.len()
        {
            for (n, o) in v.iter_mut().zip(old) {
                *n = a * *n + (1.0 - a) * o;
            }
            l2_normalise(&mut v);
        }
        g.embedding = Some(v);
        g.embedded_bbox = Some(g.bbox);
        g.embedded_at = Some(now);
        g.dirty = true;
    }

    /// Garments whose list must be searched again: `(track, garment, group, embedding)`.
    pub fn dirty(&self) -> impl Iterator<Item = (usize, usize, &str, &[f32])> {
        self.tracks.iter().enumerate().flat_map(|(ti, t)| {
            t.garments
                .iter()
                .enumerate()
                .filter(|(_, g)| g.dirty)
                .filter_map(move |(gi, g)| {
                    g.embedding
                        .as_deref()
                        .map(|e| (ti, gi, g.group.as_str(), e))
                })
        })
    }

    /// Offers a fresh search result. The display switches only when a different list wins
    /// `confirm_updates` times in a row; the same list just refreshes its similarities.
    pub fn offer(&mut self, ti: usize, gi: usize, hits: Vec<Hit>) {
        let confirm = self.settings.confirm_updates;
        let g = &mut self.tracks[ti].garments[gi];
        g.dirty = false;
        let ids: Vec<usize> = hits.iter().map(|h| h.item).collect();
        let shown: Vec<usize> = g.shown.iter().map(|h| h.item).collect();
        if g.shown.is_empty() || ids == shown || confirm <= 1 {
            if ids != shown {
                note_shown(&mut self.audience, g, ids);
            }
            g.shown = hits;
            g.pending = None;
            return;
        }
        let count = match &g.pending {
            Some((p, n)) if *p == ids => n + 1,
            _ => 1,
        };
        if count >= confirm {
            note_shown(&mut self.audience, g, ids);
            g.shown = hits;
            g.pending = None;
        } else {
            g.pending = Some((ids, count));
        }
    }

    /// Forgets every list (after a catalog swap, item positions mean something else).
    pub fn reset_lists(&mut self) {
        for g in self.tracks.iter_mut().flat_map(|t| t.garments.iter_mut()) {
            g.shown.clear();
            g.pending = None;
            g.dirty = g.embedding.is_some();
        }
    }
}

/// Notes a list going on display for the audience figures: its items, and the garment's first list.
fn note_shown(audience: &mut AudienceEvents, g: &mut GarmentTrack, items: Vec<usize>) {
    if items.is_empty() {
        return;
    }
    if !g.recommended {
        g.recommended = true;
        audience.garments_recommended += 1;
    }
    audience.shown.push((g.group.clone(), items));
}

/// Whether a garment box moved or changed size enough since `then` that its look may have changed.
fn changed(then: &PixelBox, now: &PixelBox, max_shift: f32, max_scale: f32) -> bool {
    let centre = |b: &PixelBox| ((b.xmin + b.xmax) / 2.0, (b.ymin + b.ymax) / 2.0);
    let ((x0, y0), (x1, y1)) = (centre(then), centre(now));
    let diag = then.width().hypot(then.height()).max(1.0);
    let ratio = |a: f32, b: f32| {
        if a <= 0.0 || b <= 0.0 {
            f32::INFINITY
        } else {
            (a / b).max(b / a)
        }
    };
    (x1 - x0).hypot(y1 - y0) > max_shift * diag
        || ratio(then.width(), now.width()) > max_scale
        || ratio(then.height(), now.height()) > max_scale
}

/// Takes this frame's regions into a track's garments, keeping each garment's state when a
/// region of the same group (the nearest one, for two shoes) is still there.
fn merge_garments(garments: &mut Vec<GarmentTrack>, s: ShopperRegions) {
    let mut next: Vec<GarmentTrack> = Vec::with_capacity(s.regions.len());
    for r in s.regions {
        let kind = match &r.source {
            RegionSource::Detection { label, .. } => Some(label.clone()),
            RegionSource::Layout | RegionSource::Pose => None,
        };
        let best = garments
            .iter()
            .enumerate()
            .filter(|(_, g)| g.group == r.group)
            .max_by(|a, b| a.1.bbox.iou(&r.bbox).total_cmp(&b.1.bbox.iou(&r.bbox)))
            .map(|(i, _)| i);
        match best {
            Some(i) => {
                let mut g = garments.swap_remove(i);
                g.bbox = r.bbox;
                g.kind = kind;
                next.push(g);
            }
            None => next.push(GarmentTrack {
                group: r.group,
                kind,
                bbox: r.bbox,
                embedding: None,
                embedded_bbox: None,
                embedded_at: None,
                dirty: false,
                shown: Vec::new(),
                pending: None,
                crop: None,
                recommended: false,
            }),
        }
    }
    *garments = next;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shopper(x: f32) -> ShopperRegions {
        let b = PixelBox {
            xmin: x,
            ymin: 0.0,
            xmax: x + 100.0,
            ymax: 300.0,
        };
        ShopperRegions {
            bbox: b,
            score: 0.9,
            person: true,
            regions: vec![Region {
                group: "top".into(),
                bbox: PixelBox { ymax: 150.0, ..b },
                source: RegionSource::Layout,
            }],
        }
    }

    fn hits(ids: &[usize]) -> Vec<Hit> {
        ids.iter()
            .map(|&item| Hit {
                item,
                similarity: 0.9,
            })
            .collect()
    }

    #[test]
    fn shoppers_keep_their_id_while_they_move_and_expire_after_the_timeout() {
        let mut t = Tracker::new(TrackerSettings::default());
        let t0 = Instant::now();
        t.update(vec![shopper(0.0), shopper(500.0)], t0);
        let ids: Vec<u64> = t.tracks().iter().map(|t| t.id).collect();
        t.update(
            vec![shopper(510.0), shopper(10.0)],
            t0 + Duration::from_millis(100),
        );
        assert_eq!(
            t.tracks().iter().map(|t| t.id).collect::<Vec<_>>(),
            ids,
            "same people, same ids"
        );
        assert!((t.tracks()[0].bbox.xmin - 10.0).abs() < 1e-6);
        t.update(vec![shopper(20.0)], t0 + Duration::from_millis(200));
        assert_eq!(
            t.tracks().len(),
            2,
            "the one out of view is kept until the timeout"
        );
        assert!(!t.tracks()[1].in_view);
        t.update(vec![shopper(30.0)], t0 + Duration::from_millis(2000));
        assert_eq!(t.tracks().len(), 1);
        t.update(vec![shopper(1000.0)], t0 + Duration::from_millis(2100));
        assert_eq!(
            t.tracks().last().map(|t| t.id),
            Some(3),
            "ids are never reused"
        );
    }

    /// Issue 7's cache: a garment standing still keeps its embedding until the refresh interval;
    /// one that moved away from where it was embedded is re-embedded at once.
    #[test]
    fn cached_embeddings_are_refreshed_when_the_garment_moves_or_ages() {
        let mut t = Tracker::new(TrackerSettings::default());
        let t0 = Instant::now();
        t.update(vec![shopper(0.0)], t0);
        let (req, reused) = t.embed_requests(t0);
        assert_eq!((req.len(), reused), (1, 0));
        t.set_embedding(0, 0, vec![1.0, 0.0], t0);
        t.update(vec![shopper(5.0)], t0 + Duration::from_millis(100));
        assert_eq!(
            t.embed_requests(t0 + Duration::from_millis(100)),
            (vec![], 1),
            "barely moved: reused"
        );
        // Walking sideways: each step keeps the track, the third takes the garment more than half
        // its diagonal (~90 px) away from where it was embedded.
        t.update(vec![shopper(45.0)], t0 + Duration::from_millis(150));
        assert_eq!(
            t.embed_requests(t0 + Duration::from_millis(150)).0.len(),
            0,
            "45 px: reused"
        );
        t.update(vec![shopper(85.0)], t0 + Duration::from_millis(180));
        assert_eq!(
            t.embed_requests(t0 + Duration::from_millis(180)).0.len(),
            0,
            "85 px: reused"
        );
        t.update(vec![shopper(125.0)], t0 + Duration::from_millis(200));
        assert_eq!(
            t.embed_requests(t0 + Duration::from_millis(200)).0.len(),
            1,
            "moved: re-embedded"
        );
        t.set_embedding(0, 0, vec![0.0, 1.0], t0 + Duration::from_millis(200));
        let e = t.tracks()[0].garments[0]
            .embedding
            .clone()
            .unwrap_or_default();
        assert!(
            (e[0] - e[1]).abs() < 1e-6 && (e[0] - 0.70710677).abs() < 1e-5,
            "smoothed and normalised: {e:?}"
        );
        assert_eq!(
            t.embed_requests(t0 + Duration::from_millis(1300)).0.len(),
            1,
            "aged: re-embedded"
        );
    }

    #[test]
    fn a_garment_that_grows_is_embedded_again() {
        let mut t = Tracker::new(TrackerSettings::default());
        let t0 = Instant::now();
        t.update(vec![shopper(0.0)], t0);
        t.set_embedding(0, 0, vec![1.0, 0.0], t0);
        let mut closer = shopper(0.0);
        closer.bbox.ymax = 400.0;
        closer.regions[0].bbox.ymax = 200.0; // 150 → 200 px tall: 1.33× > 1.25
        t.update(vec![closer], t0 + Duration::from_millis(100));
        assert_eq!(t.embed_requests(t0 + Duration::from_millis(100)).0.len(), 1);
    }

    #[test]
    fn a_crowd_is_embedded_within_the_budget_new_garments_first() {
        let settings = TrackerSettings {
            max_embeds_per_frame: 3,
            ..Default::default()
        };
        let mut t = Tracker::new(settings);
        let t0 = Instant::now();
        t.update(vec![shopper(0.0), shopper(300.0)], t0);
        for (ti, gi, _) in t.embed_requests(t0).0 {
            t.set_embedding(ti, gi, vec![1.0, 0.0], t0);
        }
        // Two known shoppers gone stale and three new ones arrive: the new ones go first.
        let later = t0 + Duration::from_millis(1100);
        t.update(
            vec![
                shopper(0.0),
                shopper(300.0),
                shopper(600.0),
                shopper(900.0),
                shopper(1200.0),
            ],
            later,
        );
        let (req, waiting) = t.embed_requests(later);
        assert_eq!(req.len(), 3);
        assert!(
            req.iter().all(|(ti, _, _)| *ti >= 2),
            "new shoppers first: {req:?}"
        );
        assert_eq!(waiting, 2, "the two stale ones wait a frame");
    }

    /// With a pose model: a shopper is posed when new and again at the refresh interval; in
    /// between, the regions of the last pose run follow their box, and only posed shoppers'
    /// garments are embedded.
    #[test]
    fn body_regions_follow_the_shopper_between_pose_runs() {
        const REFRESH: Duration = Duration::from_millis(3000);
        let mut t = Tracker::new(TrackerSettings::default());
        let t0 = Instant::now();
        let bare = |x: f32| ShopperRegions {
            regions: vec![],
            ..shopper(x)
        };
        let shoe = Region {
            group: "footwear".into(),
            bbox: PixelBox::from([10.0, 280.0, 40.0, 310.0]),
            source: RegionSource::Detection {
                label: "Footwear".into(),
                score: 0.6,
            },
        };
        let mut first = bare(0.0);
        first.regions.push(shoe.clone());
        let lone = ShopperRegions {
            person: false,
            ..first.clone()
        };
        t.update(
            vec![
                first,
                ShopperRegions {
                    bbox: PixelBox::from([600.0, 280.0, 640.0, 310.0]),
                    ..lone
                },
            ],
            t0,
        );
        assert_eq!(
            t.pose_requests(t0, REFRESH),
            vec![0],
            "the lone shoe is nobody to pose"
        );
        // A waist-up body: a top and no bottom; the detector's shoe stays.
        let top = Region {
            group: "top".into(),
            bbox: PixelBox::from([20.0, 30.0, 80.0, 120.0]),
            source: RegionSource::Pose,
        };
        t.set_body(0, vec![top], t0);
        let groups: Vec<&str> = t.tracks()[0]
            .garments
            .iter()
            .map(|g| g.group.as_str())
            .collect();
        assert_eq!(groups, vec!["top", "footwear"]);
        let (req, _) = t.embed_requests_where(t0, |ti| ti == 0);
        assert_eq!(req.len(), 2, "every garment of the posed shopper: {req:?}");
        for (ti, gi, _) in req {
            t.set_embedding(ti, gi, vec![1.0, 0.0], t0);
        }
        let later = t0 + Duration::from_millis(100);
        t.update(vec![bare(10.0)], later);
        let g = &t.tracks()[0].garments;
        assert!((g[0].bbox.xmin - 30.0).abs() < 1e-4 && (g[0].bbox.ymax - 120.0).abs() < 1e-4);
        assert_eq!(g.len(), 1, "the shoe left with its detection");
        assert!(t.pose_requests(later, REFRESH).is_empty(), "not due yet");
        assert_eq!(t.embed_requests_where(later, |_| false), (vec![], 1));
        assert_eq!(t.pose_requests(t0 + REFRESH, REFRESH), vec![0], "aged");
        let mut closer = bare(10.0);
        closer.bbox.ymax = 400.0;
        t.update(vec![closer], later);
        assert_eq!(t.pose_requests(later, REFRESH), vec![0], "came closer");
        assert_eq!(
            t.tracks()[0].garments[0].bbox.ymax,
            160.0,
            "the top scaled with the box"
        );
    }

    #[test]
    fn the_list_switches_only_after_a_confirmed_change() {
        let mut t = Tracker::new(TrackerSettings::default());
        t.update(vec![shopper(0.0)], Instant::now());
        t.offer(0, 0, hits(&[1, 2, 3]));
        t.offer(0, 0, hits(&[4, 5, 6]));
        assert_eq!(
            t.tracks()[0].garments[0].shown,
            hits(&[1, 2, 3]),
            "one outlier does not flip the display"
        );
        t.offer(0, 0, hits(&[4, 5, 6]));
        assert_eq!(t.tracks()[0].garments[0].shown, hits(&[4, 5, 6]));
    }

    #[test]
    fn audience_counts_people_once_their_dwell_when_gone_and_each_list_put_on_display() {
        let mut t = Tracker::new(TrackerSettings::default());
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut shoe = shopper(500.0);
        shoe.person = false;
        t.update(vec![shopper(0.0), shoe.clone()], t0);
        t.update(vec![shopper(10.0), shoe.clone()], ms(2000));
        t.offer(0, 0, hits(&[1, 2, 3]));
        t.offer(0, 0, hits(&[1, 2, 3])); // the same list again: nothing new on display
        t.offer(0, 0, hits(&[4, 5, 6]));
        t.offer(0, 0, hits(&[4, 5, 6])); // confirmed: the second list goes on display
        t.offer(1, 0, vec![]); // nothing found: nothing shown
        assert_eq!(
            t.take_audience(),
            AudienceEvents {
                shoppers_seen: 1,
                dwell: vec![],
                garments_recommended: 1,
                shown: vec![("top".into(), vec![1, 2, 3]), ("top".into(), vec![4, 5, 6])],
            },
            "the lone garment is not a shopper"
        );
        assert!(t.take_audience().is_empty(), "taken once");

        // The person leaves; once the timeout passes they are gone, after 2 s in view.
        t.update(vec![shoe.clone()], ms(3000));
        assert!(t.take_audience().is_empty());
        t.update(vec![shoe], ms(3600));
        let ev = t.take_audience();
        assert_eq!(ev.dwell, vec![Duration::from_millis(2000)]);
        assert_eq!(ev.shoppers_seen, 0);
    }
}
