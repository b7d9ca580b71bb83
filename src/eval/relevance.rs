//! `vitrine eval relevance`: does the display show items of the garment's colour?
//!
//! The configured pipeline (the daemon's own [`Engine`]: detector, garment regions, tracker,
//! embedder, catalog search) runs over a folder of images; for every garment that has a list on
//! display, the garment's colour is compared with the colours of the items shown and with two
//! baselines from the same catalog group:
//! - garment colour: median CIELAB of the central half (in each dimension) of its region, or of
//!   the pixels of its mask once the pipeline hands masks out ([`garment_pixels`]);
//! - item colour: median CIELAB of the item photo's pixels that are not background (not within
//!   `background_tolerance` of `background` in every channel; all pixels when none is left);
//! - ΔE: CIEDE2000 (see [`super::lab`] for why not CIE76);
//! - random: the mean ΔE to every item of the group (what a list drawn by chance shows);
//! - oracle: the ΔE to the group's closest item (what a perfect colour match shows).
//!
//! Colour fidelity = (random − shown) / (random − oracle), from the means over all garments (a
//! ratio of means: one garment whose group happens to have random ≈ oracle cannot swing it), for
//! the top item and for the whole list. 1 = always the best colour, 0 = no better than chance.
//!
//! Two ways to feed images:
//! - footage (default): the frames in name order, time-stamped at the camera's rate so the
//!   tracker behaves as live; every `every`-th frame is scored, as a shopper would see it then.
//! - stills: each photo is a scene of its own. A blank frame, time-stamped past the tracker's
//!   timeout, goes first so nothing carries over from the photo before; the photo is then fed
//!   again (same time stamp) until every garment in it has a list or a feed embeds nothing new —
//!   the tracker embeds a bounded number of crops per frame, so a crowded photo needs several.
//!
//! The contact sheet holds crops of the people in the images; it is for test photos and demo
//! footage, never for a shop's camera (shoppers' frames are never stored).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::EvalError;
use super::lab::{ciede2000, lab_to_srgb, median_lab};
use super::sheet::{self, SheetRow};
use crate::capture::{Frame, SourceConfig};
use crate::catalog::Catalog;
use crate::config::Settings;
use crate::pipeline::Engine;
use crate::recommend::{GarmentRec, Recommendations, Tracker};

/// Feeds of one still at most: enough for 8 × `max_embeds_per_frame` garments.
const MAX_FEEDS: usize = 8;

#[derive(Debug, Clone)]
pub struct RelevanceOptions {
    pub images: PathBuf,
    /// Each image is an independent photo, not a frame of footage.
    pub stills: bool,
    /// Footage: score every n-th frame.
    pub every: usize,
    /// Folder for the contact sheet.
    pub out: Option<PathBuf>,
    /// The catalog photos' background colour and how far (per channel) a pixel may be from it
    /// and still count as background.
    pub background: [u8; 3],
    pub background_tolerance: u8,
    /// JSONL of photo labels (`{"image", "waist_up"}`); `labels.jsonl` in the images folder when
    /// absent and present.
    pub labels: Option<PathBuf>,
    /// Garments drawn on the contact sheet at most.
    pub sheet_rows: usize,
}

/// One image's label in the labels file.
#[derive(Debug, Clone, Deserialize)]
pub struct PhotoLabel {
    pub image: String,
    /// Only the upper body is in the picture: no bottom region should be found.
    pub waist_up: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ItemScore {
    pub id: String,
    pub lab: [f32; 3],
    pub delta_e: f32,
}

/// One garment with a list on display in one scored image.
#[derive(Debug, Clone, Serialize)]
pub struct GarmentScore {
    pub image: String,
    pub track_id: u64,
    pub group: String,
    pub bbox: [f32; 4],
    pub lab: [f32; 3],
    pub items: Vec<ItemScore>,
    /// Mean ΔE to every item of the group.
    pub random: f32,
    /// ΔE to the group's closest item.
    pub oracle: f32,
}

/// Means over a set of garments and the fidelities they give.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Summary {
    pub garments: usize,
    pub shown_top: f64,
    pub shown_list: f64,
    pub random: f64,
    pub oracle: f64,
    /// `None` without garments, or when random equals oracle (no colour choice to make).
    pub fidelity_top: Option<f64>,
    pub fidelity_list: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WaistUp {
    /// Scored images labelled waist-up.
    pub photos: usize,
    /// …in which a shopper was found and none has a bottom region (the target: ≥ 95 %).
    pub without_bottom: usize,
    /// …in which no shopper was found at all (not counted as a success).
    pub no_shopper: usize,
    pub share: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SheetInfo {
    pub path: PathBuf,
    pub width: u32,
    pub height: u32,
    pub rows: usize,
    pub items_per_row: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ImageSummary {
    pub image: String,
    pub shoppers: usize,
    pub with_bottom: usize,
    pub garments_scored: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct RelevanceReport {
    pub images_folder: PathBuf,
    pub mode: &'static str,
    pub delta_e: &'static str,
    /// Images scored (footage: every n-th frame).
    pub scored_images: usize,
    /// Shoppers in view, summed over the scored images.
    pub shoppers: usize,
    pub shoppers_with_bottom: usize,
    pub bottom_share: Option<f64>,
    pub overall: Summary,
    pub groups: BTreeMap<String, Summary>,
    pub waist_up: Option<WaistUp>,
    pub sheet: Option<SheetInfo>,
    pub images: Vec<ImageSummary>,
    pub garments: Vec<GarmentScore>,
}

/// The pixels that stand for a garment: its mask's pixels when there is a mask (same size as
/// `rect`, > 127 = garment), otherwise the central half of `rect` in each dimension, where the
/// garment is most likely to be and background least.
pub fn garment_pixels(
    img: &RgbImage,
    rect: (u32, u32, u32, u32),
    mask: Option<&image::GrayImage>,
) -> Vec<[u8; 3]> {
    let (x, y, w, h) = rect;
    if let Some(m) = mask.filter(|m| m.dimensions() == (w, h)) {
        return m
            .enumerate_pixels()
            .filter(|(_, _, v)| v.0[0] > 127)
            .map(|(mx, my, _)| img.get_pixel(x + mx, y + my).0)
            .collect();
    }
    let (cw, ch) = ((w / 2).max(1), (h / 2).max(1));
    let (cx, cy) = (x + (w - cw) / 2, y + (h - ch) / 2);
    (cy..cy + ch)
        .flat_map(|yy| (cx..cx + cw).map(move |xx| (xx, yy)))
        .map(|(xx, yy)| img.get_pixel(xx, yy).0)
        .collect()
}

/// The pixels of a catalog photo that are not its background (all of them when every pixel is).
pub fn item_pixels(img: &RgbImage, background: [u8; 3], tolerance: u8) -> Vec<[u8; 3]> {
    let fg: Vec<[u8; 3]> = img
        .pixels()
        .map(|p| p.0)
        .filter(|p| {
            p.iter()
                .zip(background)
                .any(|(c, b)| c.abs_diff(b) > tolerance)
        })
        .collect();
    if fg.is_empty() {
        img.pixels().map(|p| p.0).collect()
    } else {
        fg
    }
}

/// Item colours and photos, read on first use.
struct ItemColours<'a> {
    catalog: &'a Catalog,
    background: [u8; 3],
    tolerance: u8,
    labs: HashMap<usize, [f32; 3]>,
    /// Members of each group, with their colours, once computed.
    groups: HashMap<String, Vec<(usize, [f32; 3])>>,
}

impl<'a> ItemColours<'a> {
    fn photo(&self, i: usize) -> Result<RgbImage, EvalError> {
        let path = self.catalog.root.join(&self.catalog.item(i).image);
        crate::capture::replay::read_image(&path).map_err(|message| EvalError::Image {
            path: path.clone(),
            message: format!(
                "{message} (item {}: the relevance evaluation needs every item's photo)",
                self.catalog.item(i).id
            ),
        })
    }

    fn lab(&mut self, i: usize) -> Result<[f32; 3], EvalError> {
        if let Some(l) = self.labs.get(&i) {
            return Ok(*l);
        }
        let px = item_pixels(&self.photo(i)?, self.background, self.tolerance);
        let lab = median_lab(px).unwrap_or([0.0; 3]);
        self.labs.insert(i, lab);
        Ok(lab)
    }

    fn group(&mut self, group: &str) -> Result<&[(usize, [f32; 3])], EvalError> {
        if !self.groups.contains_key(group) {
            let members: Vec<usize> = (0..self.catalog.items.len())
                .filter(|&i| self.catalog.item(i).group == group)
                .collect();
            let mut out = Vec::with_capacity(members.len());
            for i in members {
                out.push((i, self.lab(i)?));
            }
            self.groups.insert(group.to_string(), out);
        }
        Ok(&self.groups[group])
    }
}

/// Scores one garment against the items shown and its group; `None` when the group is empty.
pub fn score_garment(
    lab: [f32; 3],
    shown: &[(String, [f32; 3])],
    group: &[[f32; 3]],
) -> Option<(Vec<ItemScore>, f32, f32)> {
    if group.is_empty() || shown.is_empty() {
        return None;
    }
    let des: Vec<f32> = group.iter().map(|g| ciede2000(lab, *g)).collect();
    let random = des.iter().sum::<f32>() / des.len() as f32;
    let oracle = des.iter().copied().fold(f32::INFINITY, f32::min);
    let items = shown
        .iter()
        .map(|(id, l)| ItemScore {
            id: id.clone(),
            lab: *l,
            delta_e: ciede2000(lab, *l),
        })
        .collect();
    Some((items, random, oracle))
}

/// Means and fidelities over `garments`.
pub fn summarise<'a>(garments: impl IntoIterator<Item = &'a GarmentScore>) -> Summary {
    let (mut n, mut top, mut list, mut random, mut oracle) = (0usize, 0.0, 0.0, 0.0, 0.0);
    for g in garments {
        let Some(first) = g.items.first() else {
            continue;
        };
        n += 1;
        top += first.delta_e as f64;
        list += g.items.iter().map(|i| i.delta_e as f64).sum::<f64>() / g.items.len() as f64;
        random += g.random as f64;
        oracle += g.oracle as f64;
    }
    if n == 0 {
        return Summary::default();
    }
    let nf = n as f64;
    let (top, list, random, oracle) = (top / nf, list / nf, random / nf, oracle / nf);
    let fid = |shown: f64| (random - oracle > 1e-9).then(|| (random - shown) / (random - oracle));
    Summary {
        garments: n,
        shown_top: top,
        shown_list: list,
        random,
        oracle,
        fidelity_top: fid(top),
        fidelity_list: fid(list),
    }
}

/// What scoring gathers across images.
#[derive(Default)]
struct Tally {
    garments: Vec<GarmentScore>,
    images: Vec<ImageSummary>,
    /// Sheet rows keyed by (track, group): the latest view of each garment.
    sheet: BTreeMap<(u64, String), SheetRow>,
    waist_up: Option<WaistUp>,
}

fn in_view_garments(recs: &Recommendations) -> impl Iterator<Item = (u64, &GarmentRec)> {
    recs.shoppers
        .iter()
        .filter(|s| s.in_view)
        .flat_map(|s| s.garments.iter().map(move |g| (s.track_id, g)))
}

/// The person mask the garment was last embedded with, when it was cut from this very rectangle
/// (a still, or the frame of the embedding): a mask from an earlier frame would select the wrong
/// pixels, so those garments fall back to the central half like unmasked ones.
fn garment_mask(
    tracker: &Tracker,
    track: u64,
    garment: usize,
    rect: (u32, u32, u32, u32),
) -> Option<image::GrayImage> {
    let crop = tracker
        .tracks()
        .iter()
        .find(|t| t.id == track)?
        .garments
        .get(garment)?
        .last_crop()?;
    let m = crop.mask.as_ref().filter(|_| crop.rect == rect)?;
    image::GrayImage::from_raw(m.width, m.height, m.data.clone())
}

fn name_of(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Scores one image's displayed lists.
fn score_image(
    path: &Path,
    img: &RgbImage,
    recs: &Recommendations,
    tracker: &Tracker,
    labels: &HashMap<String, bool>,
    colours: &mut ItemColours,
    tally: &mut Tally,
) -> Result<(), EvalError> {
    let name = &name_of(path);
    let waist_up = labels.get(name).copied();
    let shoppers: Vec<_> = recs.shoppers.iter().filter(|s| s.in_view).collect();
    let with_bottom = shoppers
        .iter()
        .filter(|s| s.garments.iter().any(|g| g.group == "bottom"))
        .count();
    let mut scored = 0;
    let garments = shoppers
        .iter()
        .flat_map(|s| (s.garments.iter().enumerate()).map(move |(gi, g)| (s.track_id, gi, g)));
    for (track, gi, g) in garments {
        let Some(rect) = g.bbox.crop_rect(img.width(), img.height()) else {
            continue;
        };
        let mask = garment_mask(tracker, track, gi, rect);
        let Some(lab) = median_lab(garment_pixels(img, rect, mask.as_ref())) else {
            continue;
        };
        let mut shown = Vec::new();
        for it in &g.items {
            if let Some(pos) = colours.catalog.position(&it.id) {
                shown.push((it.id.clone(), colours.lab(pos)?));
            }
        }
        let group: Vec<[f32; 3]> = colours.group(&g.group)?.iter().map(|m| m.1).collect();
        let Some((items, random, oracle)) = score_garment(lab, &shown, &group) else {
            continue;
        };
        scored += 1;
        let row = SheetRow {
            crop: image::imageops::crop_imm(img, rect.0, rect.1, rect.2, rect.3).to_image(),
            mask,
            colour: lab_to_srgb(lab),
            items: Vec::new(),
        };
        tally.sheet.insert((track, g.group.clone()), row);
        tally.garments.push(GarmentScore {
            image: name.to_string(),
            track_id: track,
            group: g.group.clone(),
            bbox: g.bbox.into(),
            lab,
            items,
            random,
            oracle,
        });
    }
    if let Some(true) = waist_up {
        let w = tally.waist_up.get_or_insert(WaistUp {
            photos: 0,
            without_bottom: 0,
            no_shopper: 0,
            share: None,
        });
        w.photos += 1;
        if shoppers.is_empty() {
            w.no_shopper += 1;
        } else if with_bottom == 0 {
            w.without_bottom += 1;
        }
    }
    tally.images.push(ImageSummary {
        image: name.to_string(),
        shoppers: shoppers.len(),
        with_bottom,
        garments_scored: scored,
    });
    Ok(())
}

fn read_labels(path: &Path) -> Result<HashMap<String, bool>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|reason| EvalError::Read {
        path: path.into(),
        reason,
    })?;
    let mut out = HashMap::new();
    let mut problems = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<PhotoLabel>(line) {
            Ok(l) => {
                out.insert(l.image, l.waist_up);
            }
            Err(e) => problems.push(format!(
                "line {}: {e} (expected {{\"image\": \"a.jpg\", \"waist_up\": true}})",
                n + 1
            )),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(EvalError::Invalid {
            path: path.into(),
            problems,
        })
    }
}

fn frame(image: Arc<RgbImage>, captured: Instant, seq: u64) -> Frame {
    Frame {
        image,
        captured_at: SystemTime::now(),
        captured,
        seq,
        decode: Duration::ZERO,
        detector_input: None,
    }
}

fn load_image(path: &Path) -> Result<Arc<RgbImage>, EvalError> {
    crate::capture::replay::read_image(path)
        .map(Arc::new)
        .map_err(|message| EvalError::Image {
            path: path.into(),
            message,
        })
}

/// Runs the pipeline over `opts.images` and scores what it shows.
pub fn run(settings: &Settings, opts: &RelevanceOptions) -> Result<RelevanceReport, EvalError> {
    if opts.every == 0 {
        return Err(EvalError::Usage("--every must be at least 1".into()));
    }
    let files =
        crate::capture::replay::list_frames(&opts.images).map_err(|reason| EvalError::Read {
            path: opts.images.clone(),
            reason,
        })?;
    if files.is_empty() {
        return Err(EvalError::Usage(format!(
            "{} holds no .jpg, .jpeg or .png images",
            opts.images.display()
        )));
    }
    let labels_path = opts.labels.clone().or_else(|| {
        let p = opts.images.join("labels.jsonl");
        p.is_file().then_some(p)
    });
    let labels = match &labels_path {
        Some(p) => read_labels(p)?,
        None => HashMap::new(),
    };
    let spec = &settings.embedder.spec;
    let catalog = Arc::new(Catalog::load(
        &settings.catalog.path,
        Some(&crate::catalog::EmbedderFingerprint::running(
            spec,
            &settings.similarity,
        )),
        &settings.catalog.index,
    )?);
    let shared = Arc::new(arc_swap::ArcSwap::new(catalog.clone()));
    let mut engine = Engine::build(settings, shared)?;
    let mut colours = ItemColours {
        catalog: &catalog,
        background: opts.background,
        tolerance: opts.background_tolerance,
        labs: HashMap::new(),
        groups: HashMap::new(),
    };
    let mut tally = Tally::default();
    let clock = Instant::now();
    if opts.stills {
        // Past the tracker's timeout between photos, so the blank frame forgets every track.
        let gap = settings.recommend.tracking.timeout_ms + Duration::from_secs(1);
        for (i, path) in files.iter().enumerate() {
            let img = load_image(path)?;
            let at = clock + gap * (i as u32 + 1);
            let blank = Arc::new(RgbImage::new(img.width(), img.height()));
            engine.process(&frame(blank, at, 0))?;
            let mut recs = Recommendations::default();
            for feed in 0..MAX_FEEDS {
                let (r, timing) = engine.process(&frame(img.clone(), at, feed as u64 + 1))?;
                recs = r;
                let done = in_view_garments(&recs).all(|(_, g)| !g.items.is_empty());
                if done || (feed > 0 && timing.crops == 0) {
                    break;
                }
            }
            score_image(
                path,
                &img,
                &recs,
                engine.tracker(),
                &labels,
                &mut colours,
                &mut tally,
            )?;
        }
    } else {
        let fps = match &settings.camera {
            SourceConfig::Replay(r) if r.fps > 0.0 => r.fps,
            _ => 10.0,
        };
        for (i, path) in files.iter().enumerate() {
            let img = load_image(path)?;
            let at = clock + Duration::from_secs_f64(i as f64 / fps);
            let (recs, _) = engine.process(&frame(img.clone(), at, i as u64))?;
            if (i + 1) % opts.every == 0 {
                let tracker = engine.tracker();
                score_image(
                    path,
                    &img,
                    &recs,
                    tracker,
                    &labels,
                    &mut colours,
                    &mut tally,
                )?;
            }
        }
    }
    finish(settings, opts, labels_path.is_some(), tally, &mut colours)
}

/// Summaries, the waist-up share and the contact sheet.
fn finish(
    settings: &Settings,
    opts: &RelevanceOptions,
    labelled: bool,
    mut tally: Tally,
    colours: &mut ItemColours,
) -> Result<RelevanceReport, EvalError> {
    let mut groups: BTreeMap<String, Vec<&GarmentScore>> = BTreeMap::new();
    for g in &tally.garments {
        groups.entry(g.group.clone()).or_default().push(g);
    }
    let groups = groups.into_iter().map(|(k, v)| (k, summarise(v))).collect();
    let shoppers: usize = tally.images.iter().map(|i| i.shoppers).sum();
    let with_bottom: usize = tally.images.iter().map(|i| i.with_bottom).sum();
    if let Some(w) = &mut tally.waist_up {
        w.share = (w.photos > 0).then(|| w.without_bottom as f64 / w.photos as f64);
    }
    let waist_up = match (tally.waist_up.take(), labelled) {
        (Some(w), _) => Some(w),
        (None, true) => Some(WaistUp {
            photos: 0,
            without_bottom: 0,
            no_shopper: 0,
            share: None,
        }),
        (None, false) => None,
    };
    let sheet = match &opts.out {
        Some(dir) => Some(write_sheet(dir, settings, opts, &tally, colours)?),
        None => None,
    };
    Ok(RelevanceReport {
        images_folder: opts.images.clone(),
        mode: if opts.stills { "stills" } else { "footage" },
        delta_e: "CIEDE2000",
        scored_images: tally.images.len(),
        shoppers,
        shoppers_with_bottom: with_bottom,
        bottom_share: (shoppers > 0).then(|| with_bottom as f64 / shoppers as f64),
        overall: summarise(&tally.garments),
        groups,
        waist_up,
        sheet,
        images: tally.images,
        garments: tally.garments,
    })
}

fn write_sheet(
    dir: &Path,
    settings: &Settings,
    opts: &RelevanceOptions,
    tally: &Tally,
    colours: &mut ItemColours,
) -> Result<SheetInfo, EvalError> {
    std::fs::create_dir_all(dir).map_err(|reason| EvalError::Write {
        path: dir.into(),
        reason,
    })?;
    // The latest score of each (track, group) goes with its sheet row.
    let mut latest: HashMap<(u64, &str), &GarmentScore> = HashMap::new();
    for g in &tally.garments {
        latest.insert((g.track_id, g.group.as_str()), g);
    }
    let mut rows = Vec::new();
    for ((track, group), row) in tally.sheet.iter().take(opts.sheet_rows) {
        let Some(score) = latest.get(&(*track, group.as_str())) else {
            continue;
        };
        let mut items = Vec::new();
        for it in &score.items {
            if let Some(pos) = colours.catalog.position(&it.id) {
                items.push((colours.photo(pos)?, lab_to_srgb(it.lab), it.delta_e));
            }
        }
        rows.push(SheetRow {
            crop: row.crop.clone(),
            mask: row.mask.clone(),
            colour: row.colour,
            items,
        });
    }
    let k = settings.recommend.top_k;
    let img = sheet::render(&rows, k);
    let path = dir.join("relevance_sheet.png");
    img.save(&path).map_err(|e| EvalError::Write {
        path: path.clone(),
        reason: std::io::Error::other(e.to_string()),
    })?;
    Ok(SheetInfo {
        path,
        width: img.width(),
        height: img.height(),
        rows: rows.len(),
        items_per_row: k,
    })
}

impl std::fmt::Display for RelevanceReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{:.1} %", v * 100.0));
        let num = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.3}"));
        writeln!(
            f,
            "{} ({}): {} images scored, {} shoppers, {} with a bottom region ({})",
            self.images_folder.display(),
            self.mode,
            self.scored_images,
            self.shoppers,
            self.shoppers_with_bottom,
            pct(self.bottom_share)
        )?;
        writeln!(
            f,
            "{:<10} {:>8} {:>9} {:>9} {:>8} {:>8} {:>9} {:>9}",
            "group", "garments", "ΔE top", "ΔE list", "random", "oracle", "fid top", "fid list"
        )?;
        let rows = self
            .groups
            .iter()
            .map(|(g, s)| (g.as_str(), s))
            .chain([("all", &self.overall)]);
        for (g, s) in rows {
            writeln!(
                f,
                "{g:<10} {:>8} {:>9.2} {:>9.2} {:>8.2} {:>8.2} {:>9} {:>9}",
                s.garments,
                s.shown_top,
                s.shown_list,
                s.random,
                s.oracle,
                num(s.fidelity_top),
                num(s.fidelity_list)
            )?;
        }
        writeln!(
            f,
            "ΔE is {}; fidelity = (random − shown) / (random − oracle)",
            self.delta_e
        )?;
        if let Some(w) = &self.waist_up {
            writeln!(
                f,
                "waist-up photos: {} of {} without a bottom region ({}; {} with no shopper found; target ≥ 95 %)",
                w.without_bottom,
                w.photos,
                pct(w.share),
                w.no_shopper
            )?;
        }
        if let Some(s) = &self.sheet {
            writeln!(
                f,
                "contact sheet: {} ({}×{}, {} garments)",
                s.path.display(),
                s.width,
                s.height,
                s.rows
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::lab::srgb_to_lab;

    fn score(top: f32, list: &[f32], random: f32, oracle: f32) -> GarmentScore {
        GarmentScore {
            image: "a.jpg".into(),
            track_id: 1,
            group: "top".into(),
            bbox: [0.0; 4],
            lab: [50.0, 0.0, 0.0],
            items: std::iter::once(top)
                .chain(list.iter().copied())
                .map(|d| ItemScore {
                    id: "x".into(),
                    lab: [0.0; 3],
                    delta_e: d,
                })
                .collect(),
            random,
            oracle,
        }
    }

    #[test]
    fn fidelity_is_a_ratio_of_means_worked_by_hand() {
        // Garment 1: top 10, list (10+20)/2 = 15, random 30, oracle 10.
        // Garment 2: top 20, list 20, random 40, oracle 0.
        // Means: top 15, list 17.5, random 35, oracle 5 → top (35−15)/30 = 2/3, list 17.5/30.
        let s = summarise(&[
            score(10.0, &[20.0], 30.0, 10.0),
            score(20.0, &[], 40.0, 0.0),
        ]);
        assert_eq!(s.garments, 2);
        assert!((s.fidelity_top.unwrap() - 2.0 / 3.0).abs() < 1e-9);
        assert!((s.fidelity_list.unwrap() - 17.5 / 30.0).abs() < 1e-9);
        // No colour choice in the group: no fidelity rather than a division by zero.
        assert_eq!(summarise(&[score(5.0, &[], 5.0, 5.0)]).fidelity_top, None);
        assert_eq!(summarise(&[]).garments, 0);
    }

    #[test]
    fn scoring_a_garment_against_its_group() {
        let red = srgb_to_lab(200, 20, 20);
        let blue = srgb_to_lab(20, 20, 200);
        let group = [red, blue, blue];
        let (items, random, oracle) =
            score_garment(red, &[("b".into(), blue), ("r".into(), red)], &group).unwrap();
        let d = ciede2000(red, blue);
        assert_eq!(oracle, 0.0);
        assert!((random - 2.0 * d / 3.0).abs() < 1e-4);
        assert_eq!(items[0].delta_e, d);
        assert_eq!(items[1].delta_e, 0.0);
        assert!(score_garment(red, &[], &group).is_none());
        assert!(score_garment(red, &[("r".into(), red)], &[]).is_none());
    }

    #[test]
    fn garment_pixels_take_the_centre_or_the_mask() {
        // 8×8 image: a red 4×4 centre on white.
        let mut img = RgbImage::from_pixel(8, 8, image::Rgb([255, 255, 255]));
        for y in 2..6 {
            for x in 2..6 {
                img.put_pixel(x, y, image::Rgb([200, 0, 0]));
            }
        }
        let centre = garment_pixels(&img, (0, 0, 8, 8), None);
        assert_eq!(centre.len(), 16);
        assert!(centre.iter().all(|p| *p == [200, 0, 0]));
        // A mask selecting the top-left corner only.
        let mut m = image::GrayImage::new(8, 8);
        m.put_pixel(0, 0, image::Luma([255]));
        m.put_pixel(1, 0, image::Luma([128]));
        m.put_pixel(2, 0, image::Luma([127]));
        assert_eq!(
            garment_pixels(&img, (0, 0, 8, 8), Some(&m)),
            vec![[255, 255, 255]; 2]
        );
    }

    #[test]
    fn item_pixels_drop_the_background() {
        let mut img = RgbImage::from_pixel(4, 4, image::Rgb([250, 252, 255]));
        img.put_pixel(1, 1, image::Rgb([10, 200, 10]));
        img.put_pixel(2, 2, image::Rgb([240, 240, 240]));
        assert_eq!(
            item_pixels(&img, [255, 255, 255], 12),
            vec![[10, 200, 10], [240, 240, 240]]
        );
        assert_eq!(item_pixels(&img, [255, 255, 255], 20), vec![[10, 200, 10]]);
        // A white item on white: every pixel, not none.
        let white = RgbImage::from_pixel(2, 2, image::Rgb([255, 255, 255]));
        assert_eq!(item_pixels(&white, [255, 255, 255], 12).len(), 4);
    }
}
