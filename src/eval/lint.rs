//! `vitrine dataset lint`: the clean-up the source project did by hand, done by machine.
//!
//! A ground-truth [`Dataset`] and (optionally) its images folder enter; a [`LintReport`] leaves,
//! with counts and the offending files per check, and the cleaned dataset beside it. Checks, in
//! the order they run on each image (a box is judged after its image's size problems are
//! repaired, so one cause is reported once, not again as every symptom):
//!
//! 1. the image file: missing or undecodable;
//! 2. size: the record's declared `width`/`height` differ from the file's (the boxes were drawn on
//!    another copy: they are rescaled), or every coordinate is within 0..1 (the boxes are
//!    normalised, not pixels: they are multiplied out);
//! 3. boxes: non-finite or inverted (dropped), zero area (dropped), past the image's edges by
//!    more than the tolerance (clamped; dropped when nothing is left). An image whose boxes were
//!    all dropped is dropped too: keeping it would teach a model that its garments are background;
//! 4. duplicates: byte-identical files (SHA-256) and near-identical ones (64-bit difference hash,
//!    Hamming distance up to a threshold); the first in dataset order is kept;
//! 5. people (optional, runs the detector): images with no person or with several;
//! 6. categories: unknown to a label map, and imbalance (categories far rarer than the largest).
//!
//! Across images, when many boxes overshoot the right/bottom edges the report adds a hint: that
//! is the signature of boxes drawn on larger copies of the images (the source project's wrong
//! normalisation after resizing).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use image::RgbImage;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::EvalError;
use super::formats::{BoxRecord, Dataset, ImageRecord};
use crate::vision::geometry::PixelBox;

/// What a lint run looks for.
#[derive(Debug, Clone, PartialEq)]
pub struct LintOptions {
    /// Folder the dataset's image names are relative to; `None` skips the checks that need pixels.
    pub images: Option<PathBuf>,
    /// Largest difference-hash distance (of 64 bits) at which two images count as near-duplicates.
    pub hash_distance: u32,
    /// Slack, in pixels, before a box counts as past an edge (annotation tools round outward).
    pub edge_tolerance: f32,
    /// A category is rare when the largest category has more than this many times its boxes.
    pub imbalance_ratio: f64,
    /// Known category names (a label map's); boxes with other labels are reported.
    pub categories: Option<Vec<String>>,
    /// Worker threads for reading and hashing images.
    pub threads: usize,
}

impl Default for LintOptions {
    fn default() -> Self {
        Self {
            images: None,
            hash_distance: 3,
            edge_tolerance: 1.0,
            imbalance_ratio: 10.0,
            categories: None,
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        }
    }
}

/// The checks, by the name the report uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Check {
    MissingImage,
    UnreadableImage,
    SizeMismatch,
    NormalisedBoxes,
    InvalidBox,
    ZeroArea,
    OutOfImage,
    ExactDuplicate,
    NearDuplicate,
    NoPerson,
    SeveralPeople,
    UnknownCategory,
    RareCategory,
}

impl Check {
    pub fn name(self) -> &'static str {
        match self {
            Check::MissingImage => "missing_image",
            Check::UnreadableImage => "unreadable_image",
            Check::SizeMismatch => "size_mismatch",
            Check::NormalisedBoxes => "normalised_boxes",
            Check::InvalidBox => "invalid_box",
            Check::ZeroArea => "zero_area",
            Check::OutOfImage => "out_of_image",
            Check::ExactDuplicate => "exact_duplicate",
            Check::NearDuplicate => "near_duplicate",
            Check::NoPerson => "no_person",
            Check::SeveralPeople => "several_people",
            Check::UnknownCategory => "unknown_category",
            Check::RareCategory => "rare_category",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Check::MissingImage => "image file missing",
            Check::UnreadableImage => "image file cannot be decoded",
            Check::SizeMismatch => "declared size differs from the image file's",
            Check::NormalisedBoxes => "boxes in 0..1 (normalised, not pixels)",
            Check::InvalidBox => "inverted or non-finite boxes",
            Check::ZeroArea => "zero-area boxes",
            Check::OutOfImage => "boxes past the image's edges",
            Check::ExactDuplicate => "byte-identical duplicate images",
            Check::NearDuplicate => "near-duplicate images (perceptual hash)",
            Check::NoPerson => "images with no person",
            Check::SeveralPeople => "images with several people",
            Check::UnknownCategory => "boxes with a category the label map lacks",
            Check::RareCategory => "rare categories (imbalance)",
        }
    }
}

/// One offending image or box.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub box_index: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckResult {
    pub count: usize,
    pub findings: Vec<Finding>,
}

/// What the cleaned set changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CleanSummary {
    pub images_kept: usize,
    pub images_dropped: usize,
    pub boxes_kept: usize,
    pub boxes_dropped: usize,
    pub boxes_clamped: usize,
    pub boxes_rescaled: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LintReport {
    pub images: usize,
    pub boxes: usize,
    /// Only checks that found something.
    pub checks: BTreeMap<&'static str, CheckResult>,
    /// Boxes per category, largest first.
    pub categories: Vec<(String, usize)>,
    /// Boxes of the largest category over boxes of the smallest.
    pub imbalance: f64,
    /// Dataset-wide observations (likely causes), in words.
    pub hints: Vec<String>,
    /// Checks that could not run, and why.
    pub skipped: Vec<String>,
    pub clean: CleanSummary,
    /// The dataset with the problems above repaired or removed.
    #[serde(skip)]
    pub cleaned: Vec<ImageRecord>,
}

impl LintReport {
    pub fn total_findings(&self) -> usize {
        self.checks.values().map(|c| c.count).sum()
    }
}

/// What reading one image file told us.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageFacts {
    Missing,
    Unreadable(String),
    Read {
        width: u32,
        height: u32,
        sha256: [u8; 32],
        dhash: u64,
    },
}

/// The 64-bit difference hash: the image in grey, averaged down to 9×8 cells, one bit per
/// horizontally adjacent pair (left brighter than right). Survives re-encoding, resizing and
/// small colour shifts; an unrelated photo differs in about half of its bits. The cells are plain
/// area averages computed in one pass over the pixels, which is also a proper downscale.
pub fn dhash(img: &image::DynamicImage) -> u64 {
    let owned;
    let rgb = match img.as_rgb8() {
        Some(r) => r,
        None => {
            owned = img.to_rgb8();
            &owned
        }
    };
    let (w, h) = (rgb.width().max(1) as usize, rgb.height().max(1) as usize);
    let mut sum = [[0u64; 9]; 8];
    let mut count = [[0u64; 9]; 8];
    for (y, row) in rgb.as_raw().chunks_exact(w * 3).enumerate() {
        let cy = y * 8 / h;
        for (x, p) in row.chunks_exact(3).enumerate() {
            let cx = x * 9 / w;
            // ITU-R BT.601 luma in integers.
            sum[cy][cx] += (299 * p[0] as u64 + 587 * p[1] as u64 + 114 * p[2] as u64) / 1000;
            count[cy][cx] += 1;
        }
    }
    let mut hash = 0u64;
    for y in 0..8 {
        let mean = |x: usize| sum[y][x] * 1024 / count[y][x].max(1);
        for x in 0..8 {
            hash = (hash << 1) | u64::from(mean(x) > mean(x + 1));
        }
    }
    hash
}

/// Reads, hashes and measures one image.
pub fn inspect(path: &Path) -> ImageFacts {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return ImageFacts::Missing,
        Err(e) => return ImageFacts::Unreadable(e.to_string()),
    };
    let sha256: [u8; 32] = Sha256::digest(&bytes).into();
    match image::load_from_memory(&bytes) {
        Ok(img) => ImageFacts::Read {
            width: img.width(),
            height: img.height(),
            sha256,
            dhash: dhash(&img),
        },
        Err(e) => ImageFacts::Unreadable(e.to_string()),
    }
}

/// Inspects every image on `threads` threads (decoding dominates); results in input order.
fn inspect_all(paths: &[PathBuf], threads: usize) -> Vec<ImageFacts> {
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, ImageFacts)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.clamp(1, 64))
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(p) = paths.get(i) else { break };
                        mine.push((i, inspect(p)));
                    }
                    mine
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| {
                w.join().unwrap_or_else(|_| vec![]) // a panicking decoder: its images read as unreadable below
            })
            .collect()
    });
    done.sort_by_key(|(i, _)| *i);
    let mut out: Vec<ImageFacts> = Vec::with_capacity(paths.len());
    let mut it = done.into_iter().peekable();
    for i in 0..paths.len() {
        match it.next_if(|(j, _)| *j == i) {
            Some((_, f)) => out.push(f),
            None => out.push(ImageFacts::Unreadable("the decoder failed on it".into())),
        }
    }
    out
}

/// A BK-tree over 64-bit hashes under Hamming distance: near-duplicate search in far fewer than
/// n² comparisons (DeepFashion has 289,222 images).
#[derive(Default)]
struct BkTree {
    nodes: Vec<(u64, usize, HashMap<u32, usize>)>,
}

impl BkTree {
    fn insert(&mut self, hash: u64, item: usize) {
        if self.nodes.is_empty() {
            self.nodes.push((hash, item, HashMap::new()));
            return;
        }
        let mut at = 0;
        loop {
            let d = (self.nodes[at].0 ^ hash).count_ones();
            match self.nodes[at].2.get(&d) {
                Some(&child) => at = child,
                None => {
                    let id = self.nodes.len();
                    self.nodes.push((hash, item, HashMap::new()));
                    self.nodes[at].2.insert(d, id);
                    return;
                }
            }
        }
    }

    /// Items within `max` of `hash`, with their distance.
    fn within(&self, hash: u64, max: u32) -> Vec<(usize, u32)> {
        let mut out = Vec::new();
        if self.nodes.is_empty() {
            return out;
        }
        let mut stack = vec![0usize];
        while let Some(at) = stack.pop() {
            let (h, item, children) = &self.nodes[at];
            let d = (h ^ hash).count_ones();
            if d <= max {
                out.push((*item, d));
            }
            for (&cd, &child) in children {
                if cd + max >= d && cd <= d + max {
                    stack.push(child);
                }
            }
        }
        out
    }
}

struct Collector {
    checks: BTreeMap<Check, Vec<Finding>>,
}

impl Collector {
    fn add(&mut self, check: Check, image: &str, b: Option<(usize, &str)>, detail: String) {
        self.checks.entry(check).or_default().push(Finding {
            image: image.to_string(),
            box_index: b.map(|(i, _)| i),
            label: b.map(|(_, l)| l.to_string()),
            detail,
        });
    }
}

fn fmt_box(b: &PixelBox) -> String {
    format!("[{}, {}, {}, {}]", b.xmin, b.ymin, b.xmax, b.ymax)
}

/// Counts the people a detector sees in an image: the person check's view of the detector.
pub type PersonCounter<'a> = dyn FnMut(&RgbImage) -> Result<usize, EvalError> + 'a;

/// Runs every check over `ds`. `people` runs on each image that survives the other checks.
pub fn lint(
    ds: &Dataset,
    opts: &LintOptions,
    people: Option<&mut PersonCounter<'_>>,
) -> Result<LintReport, EvalError> {
    let mut run = Run::new(ds, opts);
    let cleaned: Vec<ImageRecord> = (0..ds.images.len()).map(|i| run.clean(i)).collect();
    run.duplicates();
    if let Some(count) = people {
        run.people(count)?;
    }
    let (categories, imbalance) = run.categories();
    run.overshoot_hint();
    Ok(run.finish(cleaned, categories, imbalance))
}

/// One lint run's working state: what each check found, and which images it keeps.
struct Run<'a> {
    ds: &'a Dataset,
    opts: &'a LintOptions,
    /// Image files, in dataset order (empty without an images folder).
    paths: Vec<PathBuf>,
    facts: Vec<Option<ImageFacts>>,
    col: Collector,
    keep: Vec<bool>,
    summary: CleanSummary,
    skipped: Vec<String>,
    hints: Vec<String>,
    unknown_size: usize,
    sized_images: usize,
    /// Images with boxes past their right or bottom edge, and by how much (× the image size).
    overshoot: Vec<(String, f32)>,
}

impl<'a> Run<'a> {
    fn new(ds: &'a Dataset, opts: &'a LintOptions) -> Self {
        let n = ds.images.len();
        let mut skipped = Vec::new();
        let paths: Vec<PathBuf> = match &opts.images {
            Some(root) => ds.images.iter().map(|r| root.join(&r.image)).collect(),
            None => Vec::new(),
        };
        let facts: Vec<Option<ImageFacts>> = if opts.images.is_some() {
            inspect_all(&paths, opts.threads)
                .into_iter()
                .map(Some)
                .collect()
        } else {
            skipped.push(
                "image files (missing/unreadable, size, duplicates, people): no images folder given"
                    .into(),
            );
            vec![None; n]
        };
        Self {
            ds,
            opts,
            paths,
            facts,
            col: Collector {
                checks: BTreeMap::new(),
            },
            keep: vec![true; n],
            summary: CleanSummary::default(),
            skipped,
            hints: Vec::new(),
            unknown_size: 0,
            sized_images: 0,
            overshoot: Vec::new(),
        }
    }

    /// Checks 1–3 on image `i`: its record with the size repaired and bad boxes dropped.
    fn clean(&mut self, i: usize) -> ImageRecord {
        let mut out = self.ds.images[i].clone();
        let actual = self.file(i);
        if !self.keep[i] {
            return out;
        }
        let size = self.repair_size(i, &mut out, actual);
        if size.is_none() {
            self.unknown_size += 1;
        } else {
            self.sized_images += 1;
        }
        self.boxes(i, &mut out, size);
        out
    }

    /// Check 1, the file: its size when it was read; missing and unreadable files drop the image.
    fn file(&mut self, i: usize) -> Option<(u32, u32)> {
        let name = self.ds.images[i].image.as_str();
        match &self.facts[i] {
            Some(ImageFacts::Missing) => {
                let detail = format!("{} does not exist", self.paths[i].display());
                self.col.add(Check::MissingImage, name, None, detail);
                self.keep[i] = false;
                None
            }
            Some(ImageFacts::Unreadable(e)) => {
                self.col.add(Check::UnreadableImage, name, None, e.clone());
                self.keep[i] = false;
                None
            }
            Some(ImageFacts::Read { width, height, .. }) => Some((*width, *height)),
            None => None,
        }
    }

    /// Check 2, size: boxes drawn on another copy of the image are rescaled to the file, normalised
    /// boxes multiplied out. Returns the image's size, when known.
    fn repair_size(
        &mut self,
        i: usize,
        out: &mut ImageRecord,
        actual: Option<(u32, u32)>,
    ) -> Option<(u32, u32)> {
        let rec = &self.ds.images[i];
        let name = rec.image.as_str();
        let declared = rec.width.zip(rec.height);
        if let (Some((dw, dh)), Some((aw, ah))) = (declared, actual)
            && (dw, dh) != (aw, ah)
        {
            let (sx, sy) = (aw as f32 / dw.max(1) as f32, ah as f32 / dh.max(1) as f32);
            self.col.add(
                Check::SizeMismatch,
                name,
                None,
                format!(
                    "the record says {dw}×{dh} but the file is {aw}×{ah}: its boxes were drawn on another copy; rescaled by ({sx:.4}, {sy:.4})"
                ),
            );
            scale_boxes(out, sx, sy);
            self.summary.boxes_rescaled += out.boxes.len();
        }
        let size = actual.or(declared);
        if actual.is_some() {
            out.width = actual.map(|a| a.0);
            out.height = actual.map(|a| a.1);
        }
        if let Some((w, h)) = size
            && w > 2
            && h > 2
            && !out.boxes.is_empty()
            && out.boxes.iter().all(|b| {
                let c: [f32; 4] = b.bbox.into();
                c.iter().all(|v| (0.0..=1.0).contains(v))
            })
        {
            self.col.add(
                Check::NormalisedBoxes,
                name,
                None,
                format!(
                    "every coordinate is within 0..1 on a {w}×{h} image: the boxes are normalised, not pixels; multiplied by the image size"
                ),
            );
            scale_boxes(out, w as f32, h as f32);
            self.summary.boxes_rescaled += out.boxes.len();
        }
        size
    }

    /// Check 3, boxes: invalid and empty ones dropped, those past the edges clamped (dropped when
    /// nothing is left). An image that loses all its boxes is dropped too.
    fn boxes(&mut self, i: usize, out: &mut ImageRecord, size: Option<(u32, u32)>) {
        let name = self.ds.images[i].image.clone();
        let had_boxes = !out.boxes.is_empty();
        let mut boxes = Vec::with_capacity(out.boxes.len());
        let mut worst_overshoot: f32 = 0.0;
        for (bi, b) in std::mem::take(&mut out.boxes).into_iter().enumerate() {
            let original = self.ds.images[i]
                .boxes
                .get(bi)
                .map(|o| o.bbox)
                .unwrap_or(b.bbox);
            if let Some(b) = self.check_box(&name, bi, b, original, size, &mut worst_overshoot) {
                boxes.push(b);
            }
        }
        if worst_overshoot > 1.0 {
            self.overshoot.push((name, worst_overshoot));
        }
        out.boxes = boxes;
        if had_boxes && out.boxes.is_empty() {
            self.keep[i] = false;
        }
    }

    /// One box of check 3: `None` when it is dropped.
    fn check_box(
        &mut self,
        name: &str,
        bi: usize,
        mut b: BoxRecord,
        original: PixelBox,
        size: Option<(u32, u32)>,
        worst_overshoot: &mut f32,
    ) -> Option<BoxRecord> {
        let c: [f32; 4] = b.bbox.into();
        let label = b.label.clone();
        let at = Some((bi, label.as_str()));
        if c.iter().any(|v| !v.is_finite())
            || b.bbox.xmax < b.bbox.xmin
            || b.bbox.ymax < b.bbox.ymin
        {
            let detail = format!(
                "{} is inverted or not finite (expected [xmin, ymin, xmax, ymax]); dropped",
                fmt_box(&original)
            );
            self.col.add(Check::InvalidBox, name, at, detail);
            self.summary.boxes_dropped += 1;
            return None;
        }
        if b.bbox.area() <= 0.0 {
            let detail = format!("{} has zero area; dropped", fmt_box(&original));
            self.col.add(Check::ZeroArea, name, at, detail);
            self.summary.boxes_dropped += 1;
            return None;
        }
        let Some((w, h)) = size else {
            return Some(b);
        };
        let t = self.opts.edge_tolerance;
        let (wf, hf) = (w as f32, h as f32);
        if b.bbox.xmin >= -t && b.bbox.ymin >= -t && b.bbox.xmax <= wf + t && b.bbox.ymax <= hf + t
        {
            return Some(b);
        }
        *worst_overshoot = worst_overshoot.max((b.bbox.xmax / wf).max(b.bbox.ymax / hf));
        let clamped = b.bbox.clamped(w, h);
        if clamped.area() <= 0.0 {
            let detail = format!(
                "{} lies outside the {w}×{h} image; dropped",
                fmt_box(&b.bbox)
            );
            self.col.add(Check::OutOfImage, name, at, detail);
            self.summary.boxes_dropped += 1;
            return None;
        }
        let detail = format!(
            "{} reaches past the {w}×{h} image; clamped to {}",
            fmt_box(&b.bbox),
            fmt_box(&clamped)
        );
        self.col.add(Check::OutOfImage, name, at, detail);
        b.bbox = clamped;
        self.summary.boxes_clamped += 1;
        Some(b)
    }

    /// Check 4, duplicates among images that were read: the first in dataset order is kept.
    fn duplicates(&mut self) {
        let images = &self.ds.images;
        let mut first_by_sha: HashMap<[u8; 32], usize> = HashMap::new();
        let mut tree = BkTree::default();
        for (i, f) in self.facts.iter().enumerate() {
            let Some(ImageFacts::Read { sha256, dhash, .. }) = f else {
                continue;
            };
            if let Some(&first) = first_by_sha.get(sha256) {
                let detail = format!("same bytes as {} (kept)", images[first].image);
                self.col
                    .add(Check::ExactDuplicate, &images[i].image, None, detail);
                self.keep[i] = false;
                continue;
            }
            first_by_sha.insert(*sha256, i);
            let near = tree
                .within(*dhash, self.opts.hash_distance)
                .into_iter()
                .min_by_key(|(j, d)| (*d, *j));
            if let Some((j, d)) = near {
                let detail = format!(
                    "looks like {} (difference-hash distance {d} of 64; kept)",
                    images[j].image
                );
                self.col
                    .add(Check::NearDuplicate, &images[i].image, None, detail);
                self.keep[i] = false;
                continue;
            }
            tree.insert(*dhash, i);
        }
    }

    /// Check 5, people: images where the detector finds nobody, or several people, are dropped.
    fn people(&mut self, count: &mut PersonCounter<'_>) -> Result<(), EvalError> {
        if self.opts.images.is_none() {
            self.skipped.push("people: no images folder given".into());
            return Ok(());
        }
        for (i, rec) in self.ds.images.iter().enumerate() {
            if !self.keep[i] {
                continue;
            }
            let img = image::open(&self.paths[i])
                .map_err(|e| EvalError::Image {
                    path: self.paths[i].clone(),
                    message: e.to_string(),
                })?
                .into_rgb8();
            let (check, detail) = match count(&img)? {
                1 => continue,
                0 => (Check::NoPerson, "the person detector finds nobody".into()),
                k => (
                    Check::SeveralPeople,
                    format!("the person detector finds {k} people"),
                ),
            };
            self.col.add(check, &rec.image, None, detail);
            self.keep[i] = false;
        }
        Ok(())
    }

    /// Check 6, categories: labels unknown to the label map, and categories far rarer than the
    /// largest. Returns boxes per category (largest first) and the imbalance ratio.
    fn categories(&mut self) -> (Vec<(String, usize)>, f64) {
        let opts = self.opts;
        if let Some(known) = &opts.categories {
            let known: std::collections::HashSet<&str> = known.iter().map(String::as_str).collect();
            for rec in &self.ds.images {
                for (bi, b) in rec.boxes.iter().enumerate() {
                    if !known.contains(b.label.as_str()) {
                        let detail = format!("'{}' is not in the label map", b.label);
                        self.col.add(
                            Check::UnknownCategory,
                            &rec.image,
                            Some((bi, &b.label)),
                            detail,
                        );
                    }
                }
            }
        }
        let mut categories: Vec<(String, usize)> = self.ds.category_counts().into_iter().collect();
        for k in opts.categories.iter().flatten() {
            if !categories.iter().any(|(c, _)| c == k) {
                categories.push((k.clone(), 0));
            }
        }
        categories.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let max = categories.first().map(|c| c.1).unwrap_or(0);
        let min = categories.last().map(|c| c.1).unwrap_or(0);
        let imbalance = if min == 0 {
            if max == 0 { 1.0 } else { f64::INFINITY }
        } else {
            max as f64 / min as f64
        };
        for (c, k) in &categories {
            if (*k as f64) * opts.imbalance_ratio < max as f64 {
                let rare = self.col.checks.entry(Check::RareCategory).or_default();
                rare.push(Finding {
                    image: String::new(),
                    box_index: None,
                    label: Some(c.clone()),
                    detail: format!(
                        "{k} boxes against {max} for the largest category (more than {}× fewer)",
                        opts.imbalance_ratio
                    ),
                });
            }
        }
        (categories, imbalance)
    }

    /// Dataset-wide: overshooting boxes that share a scale point at the wrong image copies.
    fn overshoot_hint(&mut self) {
        let (over, sized) = (self.overshoot.len(), self.sized_images);
        if over >= 3 && over * 10 >= sized.max(1) {
            let mut f: Vec<f32> = self.overshoot.iter().map(|o| o.1).collect();
            f.sort_by(f32::total_cmp);
            self.hints.push(format!(
                "{} of {} images ({:.0}%) have boxes past their right or bottom edge, reaching ×{:.2} of the image size (median ×{:.2}): \
                 the annotations were probably drawn on larger copies of these images (e.g. high-resolution originals, or before a resize). \
                 Use the images the boxes belong to, or rescale the boxes rather than clamping them",
                over,
                sized,
                100.0 * over as f64 / sized.max(1) as f64,
                f[f.len() - 1],
                f[f.len() / 2]
            ));
        }
        if self.unknown_size > 0 {
            self.skipped.push(format!(
                "edges of {} image(s) without a known size (no width/height and no image file) were not checked",
                self.unknown_size
            ));
        }
    }

    fn finish(
        mut self,
        cleaned: Vec<ImageRecord>,
        categories: Vec<(String, usize)>,
        imbalance: f64,
    ) -> LintReport {
        let mut kept = Vec::with_capacity(cleaned.len());
        for (i, rec) in cleaned.into_iter().enumerate() {
            if self.keep[i] {
                self.summary.images_kept += 1;
                self.summary.boxes_kept += rec.boxes.len();
                kept.push(rec);
            } else {
                self.summary.images_dropped += 1;
                self.summary.boxes_dropped += rec.boxes.len();
            }
        }
        let checks = self
            .col
            .checks
            .into_iter()
            .map(|(k, findings)| {
                let count = findings.len();
                (k.name(), CheckResult { count, findings })
            })
            .collect();
        LintReport {
            images: self.ds.images.len(),
            boxes: self.ds.box_count(),
            checks,
            categories,
            imbalance,
            hints: self.hints,
            skipped: self.skipped,
            clean: self.summary,
            cleaned: kept,
        }
    }
}

fn scale_boxes(out: &mut ImageRecord, sx: f32, sy: f32) {
    for b in &mut out.boxes {
        b.bbox = PixelBox::from([
            b.bbox.xmin * sx,
            b.bbox.ymin * sy,
            b.bbox.xmax * sx,
            b.bbox.ymax * sy,
        ]);
    }
}

impl LintReport {
    /// The readable report, at most `show` offending entries per check.
    pub fn render(&self, show: usize) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "{} images, {} boxes", self.images, self.boxes);
        let order = [
            Check::MissingImage,
            Check::UnreadableImage,
            Check::SizeMismatch,
            Check::NormalisedBoxes,
            Check::InvalidBox,
            Check::ZeroArea,
            Check::OutOfImage,
            Check::ExactDuplicate,
            Check::NearDuplicate,
            Check::NoPerson,
            Check::SeveralPeople,
            Check::UnknownCategory,
            Check::RareCategory,
        ];
        if self.checks.is_empty() {
            let _ = writeln!(s, "no problems found");
        }
        for c in order {
            let Some(r) = self.checks.get(c.name()) else {
                continue;
            };
            let _ = writeln!(s, "\n{} ({}): {}", c.name(), c.what(), r.count);
            for f in r.findings.iter().take(show) {
                let who = match (&f.label, f.box_index) {
                    (Some(l), Some(b)) => format!("{} box {b} '{l}'", f.image),
                    (Some(l), None) => l.clone(),
                    _ => f.image.clone(),
                };
                let _ = writeln!(s, "  {who}: {}", f.detail);
            }
            if r.count > show {
                let _ = writeln!(s, "  … and {} more (--json lists all)", r.count - show);
            }
        }
        let _ = writeln!(
            s,
            "\ncategories (boxes): {}",
            self.categories
                .iter()
                .map(|(c, k)| format!("{c} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let _ = writeln!(s, "imbalance (largest / smallest): {:.1}", self.imbalance);
        for h in &self.hints {
            let _ = writeln!(s, "\nhint: {h}");
        }
        for k in &self.skipped {
            let _ = writeln!(s, "not checked: {k}");
        }
        let c = &self.clean;
        let _ = write!(
            s,
            "\ncleaned set: {} images and {} boxes kept; {} images and {} boxes dropped; {} boxes clamped, {} rescaled",
            c.images_kept,
            c.boxes_kept,
            c.images_dropped,
            c.boxes_dropped,
            c.boxes_clamped,
            c.boxes_rescaled
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dhash_survives_resizing_and_separates_different_pictures() {
        let img = |seed: u32, w: u32, h: u32| {
            image::DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| {
                let cell = (x * 6 / w) + 6 * (y * 4 / h);
                let v = ((cell + seed * 7919).wrapping_mul(2654435761) >> 24) as u8;
                image::Rgb([v, v, v])
            }))
        };
        let a = dhash(&img(1, 240, 160));
        assert!((a ^ dhash(&img(1, 120, 80))).count_ones() <= 2, "half size");
        assert!(
            (a ^ dhash(&img(1, 480, 320))).count_ones() <= 2,
            "double size"
        );
        assert!(
            (a ^ dhash(&img(99, 240, 160))).count_ones() > 10,
            "another picture"
        );
    }

    #[test]
    fn bk_tree_finds_exactly_the_hashes_within_the_distance() {
        let hashes: Vec<u64> = (0..500u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .collect();
        let mut t = BkTree::default();
        for (i, h) in hashes.iter().enumerate() {
            t.insert(*h, i);
        }
        for (qi, q) in hashes.iter().enumerate().step_by(37) {
            let probe = q ^ 0b1011; // 3 bits away from hash qi
            let mut got: Vec<usize> = t.within(probe, 3).into_iter().map(|(i, _)| i).collect();
            got.sort();
            let want: Vec<usize> = hashes
                .iter()
                .enumerate()
                .filter(|(_, h)| (*h ^ probe).count_ones() <= 3)
                .map(|(i, _)| i)
                .collect();
            assert_eq!(got, want);
            assert!(got.contains(&qi));
        }
    }
}
