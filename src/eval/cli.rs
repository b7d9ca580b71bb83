//! The `vitrine eval`, `vitrine dataset` and `vitrine labels` subcommands: argument types (clap)
//! and the functions `main` hands them to. Raw flags become loaded datasets, label maps and
//! models here, once; the work itself is in the sibling modules.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::EvalError;
use super::ap::{ApOptions, evaluate};
use super::formats::{
    self, Dataset, DeepFashionFiles, Role, deepfashion2_images, read_consumer2shop,
    read_deepfashion, read_deepfashion2, read_jsonl, read_pairs_jsonl,
};
use super::labelmap_tools::{self as lm, LabelCheck};
use super::lint::{LintOptions, lint};
use super::models::{DetectorSetup, EmbedderSetup, open_rgb, predict};
use super::relevance::{self, RelevanceOptions};
use super::retrieval::{self, RetrievalOptions};
use super::taxonomy::Taxonomy;
use crate::catalog::Catalog;
use crate::config::model::{Contract, RawModelFile};
use crate::vision::runtime;

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// AP per category and mAP at an IoU threshold (TF Object Detection API PASCAL semantics).
    Detections(DetectionsArgs),
    /// recall@k of the embedder and catalog index for query photos with known items.
    Retrieval(RetrievalArgs),
    /// Colour fidelity of what the display shows (CIEDE2000 against random and best items of
    /// the group), bottom-region shares, and a contact sheet, over footage or photos.
    Relevance(RelevanceArgs),
}

#[derive(Debug, Subcommand)]
pub enum DatasetCommand {
    /// Find broken boxes, wrong sizes, duplicates, crowded or empty images, and imbalance.
    Lint(LintArgs),
    /// Write any supported ground truth (after --taxonomy, --split) as Vitrine's JSONL.
    Convert {
        #[command(flatten)]
        gt: GtArgs,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Retrieval pairs from the catalog itself: each product photo scaled, rotated, relit and
    /// pasted onto street backgrounds (seeded), with pairs.jsonl for `vitrine eval retrieval`.
    PasteCatalog(PasteArgs),
}

#[derive(Debug, Args)]
pub struct PasteArgs {
    /// Catalog folder (items.jsonl and its images).
    #[arg(long, value_name = "DIR", default_value = "catalog/demo")]
    pub catalog: PathBuf,
    /// Folder of background images, cropped at random.
    #[arg(long, value_name = "DIR", default_value = "models/demo/frames")]
    pub backgrounds: PathBuf,
    /// Writes images/ and pairs.jsonl here.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Queries made from each item.
    #[arg(long, default_value_t = 2)]
    pub per_item: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// The product photos' background colour, R,G,B.
    #[arg(long, value_delimiter = ',', default_value = "255,255,255")]
    pub background: Vec<u8>,
    /// How far from the background (per channel) a pixel may be and still be background.
    #[arg(long, default_value_t = 24)]
    pub background_tolerance: u8,
}

#[derive(Debug, Subcommand)]
pub enum LabelsCommand {
    /// Write a TF OD API label map (pbtxt) from DeepFashion's list_category_cloth.txt, ids from 1.
    FromDeepfashion {
        /// list_category_cloth.txt
        #[arg(long, value_name = "FILE")]
        categories: PathBuf,
        /// Merge categories first (ids are then numbered from 1 over the merged names).
        #[arg(long, value_name = "FILE")]
        taxonomy: Option<PathBuf>,
        /// Where to write; stdout without it.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Check a label map against a model's class count and/or a dataset's categories.
    Check(CheckArgs),
    /// Apply a taxonomy to a label map (prints the old→new id table) or a catalog's items.jsonl.
    ApplyTaxonomy {
        #[arg(long, value_name = "FILE")]
        taxonomy: PathBuf,
        #[arg(long, value_name = "FILE", conflicts_with = "catalog")]
        labels: Option<PathBuf>,
        /// A catalog's items.jsonl: `category` merged, `group` set from the taxonomy's [groups].
        #[arg(long, value_name = "FILE")]
        catalog: Option<PathBuf>,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

/// Where ground truth comes from: exactly one of --gt, --deepfashion, --deepfashion2.
#[derive(Debug, Clone, Args)]
pub struct GtArgs {
    /// Ground truth as JSONL, one image a line:
    /// {"image": "a.jpg", "width": 640, "height": 480, "boxes": [{"label": "Dress", "bbox": [xmin, ymin, xmax, ymax]}]}
    #[arg(long, value_name = "FILE", conflicts_with_all = ["deepfashion", "deepfashion2"])]
    pub gt: Option<PathBuf>,
    /// DeepFashion's category benchmark: the folder with list_bbox.txt, list_category_img.txt and
    /// list_category_cloth.txt (directly or in Anno/); images are relative to the folder holding img/.
    #[arg(long, value_name = "DIR", conflicts_with = "deepfashion2")]
    pub deepfashion: Option<PathBuf>,
    /// DeepFashion2: its annos/ folder (one JSON per image; images in the sibling image/) or one file.
    #[arg(long, value_name = "DIR")]
    pub deepfashion2: Option<PathBuf>,
    /// Only this split of DeepFashion's list_eval_partition.txt (train, val or test).
    #[arg(long, requires = "deepfashion")]
    pub split: Option<String>,
    /// Merge categories with this taxonomy (TOML, [merge] Jacket = ["Anorak", "Bomber"]).
    #[arg(long, value_name = "FILE")]
    pub taxonomy: Option<PathBuf>,
}

/// Ground truth, loaded.
pub struct LoadedGt {
    pub dataset: Dataset,
    /// Categories with the dataset's own ids (DeepFashion, DeepFashion2), before any taxonomy.
    pub numbered: Option<Vec<(u32, String)>>,
    /// Where the images are unless --images says otherwise.
    pub default_images: PathBuf,
}

impl GtArgs {
    fn given(&self) -> bool {
        self.gt.is_some() || self.deepfashion.is_some() || self.deepfashion2.is_some()
    }

    pub fn load(&self) -> Result<LoadedGt, EvalError> {
        let mut loaded = if let Some(p) = &self.gt {
            LoadedGt {
                dataset: read_jsonl(p, Role::GroundTruth)?,
                numbered: None,
                default_images: p
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(Path::new("."))
                    .to_path_buf(),
            }
        } else if let Some(dir) = &self.deepfashion {
            let files = DeepFashionFiles::locate(dir)?;
            let (dataset, cats) = read_deepfashion(&files, self.split.as_deref())?;
            LoadedGt {
                dataset,
                numbered: Some(cats.into_iter().map(|c| (c.id, c.name)).collect()),
                default_images: files.root,
            }
        } else if let Some(p) = &self.deepfashion2 {
            LoadedGt {
                dataset: read_deepfashion2(p)?,
                numbered: Some(
                    formats::DEEPFASHION2_CATEGORIES
                        .iter()
                        .enumerate()
                        .map(|(i, n)| (i as u32 + 1, n.to_string()))
                        .collect(),
                ),
                default_images: deepfashion2_images(p),
            }
        } else {
            return Err(EvalError::Usage(
                "no ground truth: give --gt FILE.jsonl, --deepfashion DIR or --deepfashion2 DIR"
                    .into(),
            ));
        };
        if let Some(t) = &self.taxonomy {
            let tax = Taxonomy::load(t)?;
            let counts = loaded.dataset.category_counts();
            let unused = tax.unused_sources(counts.keys().map(String::as_str));
            if !unused.is_empty() {
                eprintln!(
                    "warning: taxonomy {} merges categories the data does not have (a typo?): {}",
                    t.display(),
                    unused.join(", ")
                );
            }
            tax.apply_dataset(&mut loaded.dataset);
            // Merged names no longer sit at the dataset's ids.
            loaded.numbered = None;
        }
        Ok(loaded)
    }
}

/// Which model: the config's detector, or another model TOML with the config's runtime.
#[derive(Debug, Clone, Args)]
pub struct DetectorArgs {
    /// Vitrine config (runtime, detector thresholds, regions.person_labels); the demo one without it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A detector model TOML (models/*.toml) to use instead of the config's.
    #[arg(long, value_name = "FILE")]
    pub detector: Option<PathBuf>,
}

impl DetectorArgs {
    fn config_path(&self) -> PathBuf {
        self.config
            .clone()
            .unwrap_or_else(crate::config::default_config_path)
    }
}

#[derive(Debug, Args)]
pub struct DetectionsArgs {
    #[command(flatten)]
    pub gt: GtArgs,
    /// Predictions as JSONL (the ground-truth form with "score" on every box; `vitrine detect` prints it).
    #[arg(long, value_name = "FILE", conflicts_with = "run_detector")]
    pub pred: Option<PathBuf>,
    /// Produce the predictions by running the configured detector over the ground truth's images.
    #[arg(long)]
    pub run_detector: bool,
    /// Folder the ground truth's image names are relative to (default: beside the ground truth).
    #[arg(long, value_name = "DIR")]
    pub images: Option<PathBuf>,
    #[command(flatten)]
    pub model: DetectorArgs,
    /// Lowest score kept when running the detector; low values give the AP TF's evaluation reports.
    #[arg(long, default_value_t = 0.01)]
    pub min_score: f32,
    /// Also write the detector's predictions to this JSONL file.
    #[arg(long, value_name = "FILE", requires = "run_detector")]
    pub save_pred: Option<PathBuf>,
    /// IoU a detection needs with a ground-truth box to count as finding it.
    #[arg(long, default_value_t = 0.5)]
    pub iou: f64,
    /// Label map: its categories are reported even without boxes, and unknown labels are refused.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RetrievalArgs {
    /// Pairs as JSONL: {"query": "consumer/1.jpg", "item": "id_00001", "bbox": [..]?, "group": "top"?}
    #[arg(long, value_name = "FILE", conflicts_with = "consumer2shop")]
    pub pairs: Option<PathBuf>,
    /// DeepFashion consumer-to-shop list_eval_partition.txt (consumer photo → item id).
    #[arg(long, value_name = "FILE")]
    pub consumer2shop: Option<PathBuf>,
    /// list_bbox_consumer2shop.txt: crop each consumer photo to its garment.
    #[arg(long, value_name = "FILE", requires = "consumer2shop")]
    pub bbox: Option<PathBuf>,
    /// Only pairs with this evaluation_status (train, val, test).
    #[arg(long, requires = "consumer2shop")]
    pub split: Option<String>,
    /// Folder query names are relative to.
    #[arg(long, value_name = "DIR")]
    pub images: PathBuf,
    /// Vitrine config (embedder, catalog, index); the demo one without it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Catalog folder to search instead of the config's.
    #[arg(long, value_name = "DIR")]
    pub catalog: Option<PathBuf>,
    /// The k of recall@k, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,5,10,20")]
    pub k: Vec<usize>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RelevanceArgs {
    /// Vitrine config (the whole pipeline and its catalog); the demo one without it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Folder of frames or photos (.jpg, .png), in name order; default: the demo footage.
    #[arg(long, value_name = "DIR")]
    pub images: Option<PathBuf>,
    /// Treat each image as a photo of its own (nothing tracked across images), not a frame.
    #[arg(long)]
    pub stills: bool,
    /// Footage: score the lists on display at every n-th frame.
    #[arg(long, default_value_t = 5)]
    pub every: usize,
    /// Write the contact sheet (relevance_sheet.png) here.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The catalog photos' background colour, R,G,B.
    #[arg(long, value_delimiter = ',', default_value = "255,255,255")]
    pub background: Vec<u8>,
    /// How far from the background (per channel, 0–255) a pixel may be and still be background.
    #[arg(long, default_value_t = 24)]
    pub background_tolerance: u8,
    /// JSONL labels {"image": "a.jpg", "waist_up": true}; default: labels.jsonl in the images folder.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// Garments drawn on the contact sheet at most.
    #[arg(long, default_value_t = 60)]
    pub sheet_rows: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LintArgs {
    #[command(flatten)]
    pub gt: GtArgs,
    /// Folder the image names are relative to (default: where the format keeps them).
    #[arg(long, value_name = "DIR")]
    pub images: Option<PathBuf>,
    /// Largest difference-hash distance (of 64 bits) for two images to count as near-duplicates.
    #[arg(long, default_value_t = 3)]
    pub hash_distance: u32,
    /// Pixels a box may reach past an edge before it is reported.
    #[arg(long, default_value_t = 1.0)]
    pub edge_tolerance: f32,
    /// Report categories with this many times fewer boxes than the largest.
    #[arg(long, default_value_t = 10.0)]
    pub imbalance_ratio: f64,
    /// Label map: boxes with categories it lacks are reported.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// Run the person detector: report images with no person or several.
    #[arg(long)]
    pub people: bool,
    /// Score a detection needs to count as a person (default: the config's detector threshold).
    #[arg(long, requires = "people")]
    pub person_score: Option<f32>,
    #[command(flatten)]
    pub model: DetectorArgs,
    /// Write the cleaned annotations (JSONL) here.
    #[arg(long, value_name = "FILE")]
    pub write_clean: Option<PathBuf>,
    /// Offending entries shown per check (all of them with --json).
    #[arg(long, default_value_t = 20)]
    pub show: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Exit with an error when anything is found (for CI).
    #[arg(long)]
    pub strict: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The label map to check (pbtxt or one name a line).
    #[arg(long, value_name = "FILE")]
    pub labels: PathBuf,
    /// A detector model TOML: its graph's class count (ssd-raw) is the reference.
    #[arg(long, value_name = "FILE", conflicts_with = "classes")]
    pub model: Option<PathBuf>,
    /// The model's number of score columns, when there is no model file to read it from.
    #[arg(long)]
    pub classes: Option<usize>,
    /// With --classes: column 0 is not a background column.
    #[arg(long, requires = "classes")]
    pub no_background: bool,
    /// DeepFashion's list_category_cloth.txt, to check ids against.
    #[arg(long, value_name = "FILE")]
    pub categories: Option<PathBuf>,
    #[command(flatten)]
    pub gt: GtArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn write_out(path: Option<&Path>, text: &str) -> Result<(), EvalError> {
    match path {
        Some(p) => std::fs::write(p, text).map_err(|reason| EvalError::Write {
            path: p.into(),
            reason,
        }),
        None => {
            let mut o = std::io::stdout().lock();
            o.write_all(text.as_bytes())
                .and_then(|_| o.flush())
                .map_err(|reason| EvalError::Write {
                    path: "stdout".into(),
                    reason,
                })
        }
    }
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, EvalError> {
    serde_json::to_string_pretty(v).map_err(|e| EvalError::Usage(e.to_string()))
}

fn progress(what: &'static str) -> impl FnMut(usize, usize) {
    move |done, total| {
        if done % 50 == 0 || done == total {
            eprintln!("{what} {done}/{total}");
        }
    }
}

/// `vitrine eval …`
pub fn run_eval(cmd: EvalCommand) -> Result<(), EvalError> {
    match cmd {
        EvalCommand::Detections(a) => eval_detections(a),
        EvalCommand::Retrieval(a) => eval_retrieval(a),
        EvalCommand::Relevance(a) => eval_relevance(a),
    }
}

fn eval_relevance(a: RelevanceArgs) -> Result<(), EvalError> {
    let background = rgb_arg(&a.background)?;
    let config = a
        .config
        .clone()
        .unwrap_or_else(crate::config::default_config_path);
    let settings = crate::config::Settings::load(&config)?;
    let images = match &a.images {
        Some(d) => d.clone(),
        None => match &settings.camera {
            crate::capture::SourceConfig::Replay(r) => r.path.clone(),
            _ => {
                return Err(EvalError::Usage(format!(
                    "{} has no replay camera to take footage from; give --images DIR",
                    config.display()
                )));
            }
        },
    };
    let opts = RelevanceOptions {
        images,
        stills: a.stills,
        every: a.every,
        out: a.out.clone(),
        background,
        background_tolerance: a.background_tolerance,
        labels: a.labels.clone(),
        sheet_rows: a.sheet_rows,
    };
    let report = relevance::run(&settings, &opts)?;
    let text = if a.json {
        json(&report)?
    } else {
        report.to_string()
    };
    write_out(None, &format!("{text}\n"))
}

fn eval_detections(a: DetectionsArgs) -> Result<(), EvalError> {
    let gt = a.gt.load()?;
    let mut pred = match (&a.pred, a.run_detector) {
        (Some(p), _) => read_jsonl(p, Role::Predictions)?,
        (None, true) => {
            let setup = DetectorSetup::from_config(
                &a.model.config_path(),
                a.model.detector.as_deref(),
                Some(a.min_score),
            )?;
            let mut det = setup.build()?;
            let root = a.images.clone().unwrap_or(gt.default_images.clone());
            let pred = predict(&mut det, &gt.dataset, &root, progress("detected"))?;
            if let Some(out) = &a.save_pred {
                formats::write_jsonl_file(&pred.images, out)?;
            }
            pred
        }
        (None, false) => {
            return Err(EvalError::Usage(
                "no predictions: give --pred FILE.jsonl or --run-detector".into(),
            ));
        }
    };
    if let Some(t) = &a.gt.taxonomy {
        Taxonomy::load(t)?.apply_dataset(&mut pred);
    }
    let mut opts = ApOptions {
        iou: a.iou,
        ..Default::default()
    };
    if let Some(l) = &a.labels {
        let entries = lm::read_entries(l)?;
        let names: Vec<String> = entries.into_iter().map(|(_, n)| n).collect();
        let mut unknown: Vec<String> = gt
            .dataset
            .category_counts()
            .into_keys()
            .chain(pred.category_counts().into_keys())
            .filter(|c| !names.contains(c))
            .collect();
        unknown.sort();
        unknown.dedup();
        if !unknown.is_empty() {
            return Err(EvalError::Usage(format!(
                "labels {unknown:?} are not in the label map {} (check the map with `vitrine labels check`, or merge names with --taxonomy)",
                l.display()
            )));
        }
        opts.categories = names;
    }
    let report = evaluate(&gt.dataset, &pred, &opts)?;
    let text = if a.json {
        json(&report)?
    } else {
        report.to_string()
    };
    write_out(None, &format!("{text}\n"))
}

fn eval_retrieval(a: RetrievalArgs) -> Result<(), EvalError> {
    let pairs = match (&a.pairs, &a.consumer2shop) {
        (Some(p), _) => read_pairs_jsonl(p)?,
        (None, Some(c)) => read_consumer2shop(c, a.split.as_deref(), a.bbox.as_deref())?,
        (None, None) => {
            return Err(EvalError::Usage(
                "no pairs: give --pairs FILE.jsonl or --consumer2shop list_eval_partition.txt"
                    .into(),
            ));
        }
    };
    let config = a
        .config
        .clone()
        .unwrap_or_else(crate::config::default_config_path);
    let setup = EmbedderSetup::from_config(&config, a.catalog.as_deref())?;
    let mut emb = setup.build()?;
    let spec = &setup.settings.embedder.spec;
    let index = setup.settings.catalog.index;
    let recipe = setup.settings.similarity;
    let catalog = Catalog::load(
        &setup.catalog,
        Some(&crate::catalog::EmbedderFingerprint::running(spec, &recipe)),
        &index,
    )?;
    let mut ks = a.k.clone();
    ks.sort_unstable();
    ks.dedup();
    let total = pairs.len();
    let mut done = 0usize;
    let mut tick = progress("embedded");
    let report = retrieval::evaluate(
        &pairs,
        &catalog,
        |p| {
            let path = a.images.join(&p.query);
            let img = open_rgb(&path)?;
            let Some(b) = p.bbox else {
                // A query without a box is a product photo: described as the catalog describes its
                // photos (colour from the pixels off the background).
                let whole = (0, 0, img.width(), img.height());
                let e = emb.embed(&img, &[whole])?.pop();
                let e =
                    e.ok_or_else(|| EvalError::Usage("the embedder returned nothing".into()))?;
                done += 1;
                tick(done, total);
                return Ok(recipe.fuse_photo(&img, e));
            };
            let rect = b.crop_rect(img.width(), img.height()).ok_or_else(|| {
                EvalError::Usage(format!(
                    "query {}: box {:?} lies outside the {}×{} image",
                    p.query,
                    <[f32; 4]>::from(b),
                    img.width(),
                    img.height()
                ))
            })?;
            // A boxed query is a camera-side crop: its colour comes from its central half.
            let mut v = recipe.fuse_crops(
                &img,
                &[crate::vision::garment::GarmentCrop::unmasked(rect)],
                emb.embed(&img, &[rect])?,
            );
            done += 1;
            tick(done, total);
            v.pop()
                .ok_or_else(|| EvalError::Usage("the embedder returned nothing".into()))
        },
        &RetrievalOptions {
            ks,
            ef: index.ef_search,
        },
    )?;
    let text = if a.json {
        json(&report)?
    } else {
        report.to_string()
    };
    write_out(None, &format!("{text}\n"))
}

/// The images folder for checks that read pixels: the one given, else the format's default when
/// it holds the dataset's images (so a JSONL without images beside it is not a flood of
/// "missing" findings).
fn images_root(given: Option<&Path>, gt: &LoadedGt) -> Option<PathBuf> {
    if let Some(g) = given {
        return Some(g.to_path_buf());
    }
    let d = &gt.default_images;
    gt.dataset
        .images
        .iter()
        .take(20)
        .any(|r| d.join(&r.image).is_file())
        .then(|| d.clone())
}

/// `vitrine dataset …`
pub fn run_dataset(cmd: DatasetCommand) -> Result<(), EvalError> {
    match cmd {
        DatasetCommand::Lint(a) => dataset_lint(a),
        DatasetCommand::Convert { gt, out } => {
            let loaded = gt.load()?;
            formats::write_jsonl_file(&loaded.dataset.images, &out)?;
            eprintln!(
                "wrote {} images, {} boxes to {}",
                loaded.dataset.images.len(),
                loaded.dataset.box_count(),
                out.display()
            );
            Ok(())
        }
        DatasetCommand::PasteCatalog(a) => {
            let background = rgb_arg(&a.background)?;
            let summary = super::paste::generate(&super::paste::PasteOptions {
                catalog: a.catalog,
                backgrounds: a.backgrounds,
                out: a.out,
                per_item: a.per_item,
                seed: a.seed,
                background,
                tolerance: a.background_tolerance,
            })?;
            eprintln!(
                "wrote {} queries of {} items; score them with `vitrine eval retrieval --pairs {} --images {} --k 1,6`",
                summary.queries,
                summary.items,
                summary.pairs.display(),
                summary.pairs.parent().unwrap_or(Path::new(".")).display()
            );
            Ok(())
        }
    }
}

/// Three channel values from a comma-separated flag.
fn rgb_arg(v: &[u8]) -> Result<[u8; 3], EvalError> {
    v.try_into().map_err(|_| {
        EvalError::Usage(format!(
            "--background {v:?}: give three channel values, e.g. 255,255,255"
        ))
    })
}

fn dataset_lint(a: LintArgs) -> Result<(), EvalError> {
    let gt = a.gt.load()?;
    let images = images_root(a.images.as_deref(), &gt);
    let categories = match &a.labels {
        Some(l) => Some(
            lm::read_entries(l)?
                .into_iter()
                .map(|(_, n)| n)
                .collect::<Vec<_>>(),
        ),
        None => None,
    };
    let opts = LintOptions {
        images,
        hash_distance: a.hash_distance,
        edge_tolerance: a.edge_tolerance,
        imbalance_ratio: a.imbalance_ratio,
        categories,
        ..Default::default()
    };
    let report = if a.people {
        let setup = DetectorSetup::from_config(
            &a.model.config_path(),
            a.model.detector.as_deref(),
            a.person_score,
        )?;
        let persons = setup.person_labels().to_vec();
        let labels = &setup.settings.detector.spec.labels;
        if !persons.iter().any(|p| labels.id_of(p).is_some()) {
            return Err(EvalError::Usage(format!(
                "--people needs a detector that finds people, but {} names none of the config's person labels {persons:?}",
                labels.source().display()
            )));
        }
        let mut det = setup.build()?;
        let mut count = |img: &image::RgbImage| -> Result<usize, EvalError> {
            Ok(det
                .detect(img)?
                .iter()
                .filter(|d| persons.iter().any(|p| p.eq_ignore_ascii_case(&d.label)))
                .count())
        };
        lint(&gt.dataset, &opts, Some(&mut count))?
    } else {
        lint(&gt.dataset, &opts, None)?
    };
    if let Some(out) = &a.write_clean {
        formats::write_jsonl_file(&report.cleaned, out)?;
    }
    let text = if a.json {
        json(&report)?
    } else {
        report.render(a.show)
    };
    write_out(None, &format!("{text}\n"))?;
    if a.strict && report.total_findings() > 0 {
        return Err(EvalError::Usage(format!(
            "{} finding(s) (--strict)",
            report.total_findings()
        )));
    }
    Ok(())
}

/// Score columns of an `ssd-raw` detector's graph, read from the ONNX file itself.
fn model_columns(model_toml: &Path) -> Result<(usize, bool), EvalError> {
    let text = std::fs::read_to_string(model_toml).map_err(|reason| EvalError::Read {
        path: model_toml.into(),
        reason,
    })?;
    let raw: RawModelFile = toml::from_str(&text).map_err(|e| EvalError::Invalid {
        path: model_toml.into(),
        problems: vec![e.message().to_string()],
    })?;
    let ssd = match (raw.contract, &raw.ssd) {
        (Some(Contract::SsdRaw), Some(ssd)) => ssd,
        _ => {
            return Err(EvalError::Usage(format!(
                "{}: only ssd-raw graphs show their class count in the output shape; for this model pass --classes N",
                model_toml.display()
            )));
        }
    };
    let file = model_toml
        .parent()
        .unwrap_or(Path::new("."))
        .join(&raw.file);
    let env = runtime::environment(None).map_err(crate::vision::ModelError::from)?;
    let built = runtime::build_session(&env, &file, &Default::default(), None).map_err(|m| {
        crate::vision::ModelError::Load {
            path: file.clone(),
            message: m,
        }
    })?;
    let shape: Option<Vec<i64>> = built
        .session
        .outputs()
        .iter()
        .find(|o| o.name() == ssd.class_scores)
        .and_then(|o| {
            o.dtype()
                .tensor_shape()
                .map(|s| s.iter().copied().collect())
        });
    match shape.as_deref() {
        Some([_, _, c]) if *c > 0 => Ok((*c as usize, ssd.background_class)),
        other => Err(EvalError::Usage(format!(
            "{}: output '{}' has shape {other:?}, expected [1, N, C] with a fixed C",
            file.display(),
            ssd.class_scores
        ))),
    }
}

/// `vitrine labels …`
pub fn run_labels(cmd: LabelsCommand) -> Result<(), EvalError> {
    match cmd {
        LabelsCommand::FromDeepfashion {
            categories,
            taxonomy,
            out,
        } => {
            let cats = formats::read_df_categories(&categories)?;
            let mut entries = lm::from_deepfashion(&cats);
            if let Some(t) = taxonomy {
                entries = Taxonomy::load(&t)?.apply_labels(&entries).0;
            }
            write_out(out.as_deref(), &lm::to_pbtxt(&entries))?;
            if let Some(o) = out {
                eprintln!("wrote {} classes to {}", entries.len(), o.display());
            }
            Ok(())
        }
        LabelsCommand::Check(a) => labels_check(a),
        LabelsCommand::ApplyTaxonomy {
            taxonomy,
            labels,
            catalog,
            out,
        } => {
            let tax = Taxonomy::load(&taxonomy)?;
            match (labels, catalog) {
                (Some(l), _) => {
                    let entries = lm::read_entries(&l)?;
                    let (merged, remap) = tax.apply_labels(&entries);
                    write_out(Some(&out), &lm::to_pbtxt(&merged))?;
                    println!("old id -> new id");
                    for (old, new) in remap {
                        let name = entries
                            .iter()
                            .find(|(i, _)| *i == old)
                            .map(|(_, n)| n.as_str())
                            .unwrap_or("");
                        println!("{old:>6} -> {new:<4} {name}");
                    }
                    Ok(())
                }
                (None, Some(c)) => {
                    let text = std::fs::read_to_string(&c).map_err(|reason| EvalError::Read {
                        path: c.clone(),
                        reason,
                    })?;
                    let mut items = Vec::new();
                    for (n, line) in text.lines().enumerate() {
                        if line.trim().is_empty() {
                            continue;
                        }
                        items.push(serde_json::from_str::<serde_json::Value>(line).map_err(
                            |e| EvalError::Parse {
                                path: c.clone(),
                                line: n + 1,
                                message: e.to_string(),
                            },
                        )?);
                    }
                    let changes = tax.apply_catalog(&mut items);
                    let mut body = String::new();
                    for it in &items {
                        body.push_str(&it.to_string());
                        body.push('\n');
                    }
                    write_out(Some(&out), &body)?;
                    for ch in &changes {
                        println!("{ch}");
                    }
                    println!(
                        "{} change(s); rebuild the catalog from {} to serve them",
                        changes.len(),
                        out.display()
                    );
                    Ok(())
                }
                (None, None) => Err(EvalError::Usage(
                    "give --labels MAP or --catalog items.jsonl to apply the taxonomy to".into(),
                )),
            }
        }
    }
}

fn labels_check(a: CheckArgs) -> Result<(), EvalError> {
    let entries = lm::read_entries(&a.labels)?;
    let mut parts = vec![lm::check_structure(&entries)];
    let mut checked_something = false;
    if let Some(m) = &a.model {
        let (cols, bg) = model_columns(m)?;
        parts.push(lm::check_against_model(&entries, &a.labels, cols, bg));
        checked_something = true;
    } else if let Some(c) = a.classes {
        parts.push(lm::check_against_model(
            &entries,
            &a.labels,
            c,
            !a.no_background,
        ));
        checked_something = true;
    }
    if let Some(c) = &a.categories {
        let cats = formats::read_df_categories(c)?;
        let numbered: Vec<(u32, String)> = cats.into_iter().map(|c| (c.id, c.name)).collect();
        parts.push(lm::check_against_numbered(&entries, &numbered));
        checked_something = true;
    }
    if a.gt.given() {
        let gt = a.gt.load()?;
        if let Some(numbered) = &gt.numbered {
            // Only the categories the data uses: DeepFashion lists 50 and uses 46.
            let used = gt.dataset.category_counts();
            let numbered: Vec<(u32, String)> = numbered
                .iter()
                .filter(|(_, n)| used.contains_key(n))
                .cloned()
                .collect();
            parts.push(lm::check_against_numbered(&entries, &numbered));
        }
        parts.push(lm::check_against_names(
            &entries,
            &gt.dataset.category_counts(),
        ));
        checked_something = true;
    }
    let report: LabelCheck = lm::combine(parts);
    let text = if a.json {
        json(&report)?
    } else {
        let mut s = String::new();
        for p in &report.problems {
            s.push_str(&format!("problem: {p}\n"));
        }
        for n in &report.notes {
            s.push_str(&format!("note: {n}\n"));
        }
        if !checked_something {
            s.push_str("note: only the map's own structure was checked; add --model or --classes, and --categories, --gt, --deepfashion or --deepfashion2\n");
        }
        s
    };
    write_out(None, &text)?;
    if report.is_ok() {
        Ok(())
    } else {
        Err(EvalError::Usage(format!(
            "label map {} failed {} check(s)",
            a.labels.display(),
            report.problems.len()
        )))
    }
}
