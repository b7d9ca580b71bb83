//! The annotation and prediction files the evaluation tools read and write, turned into one
//! in-memory form: a list of [`ImageRecord`]s, each an image name, its size when known, and its
//! labelled pixel boxes `[xmin, ymin, xmax, ymax]`.
//!
//! - Vitrine's own JSONL, one image a line — the form `vitrine detect` prints, so its output is a
//!   prediction file as it stands; ground truth is the same without `score`.
//! - DeepFashion (Category and Attribute Prediction benchmark): `list_bbox.txt`,
//!   `list_category_img.txt`, `list_category_cloth.txt` and optionally `list_eval_partition.txt`,
//!   each a count line, a header line, then whitespace-separated rows.
//! - DeepFashion2: one JSON file per image with `item1`, `item2`, … objects.
//! - Retrieval pairs: DeepFashion's consumer-to-shop `list_eval_partition.txt`, or JSONL.
//!
//! Every reader reports all bad lines of a file at once (the first 20, then a count), each naming
//! the file and line, because these files are fixed in an editor or a script and a one-error-at-a-
//! time loop over 289,000 lines is no way to spend a day.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::EvalError;
use crate::vision::geometry::PixelBox;

/// One labelled box: ground truth (no score) or a prediction (with one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BoxRecord {
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
    /// `[xmin, ymin, xmax, ymax]` in the image's pixels, continuous coordinates.
    pub bbox: PixelBox,
}

/// One image and its boxes; one line of the JSONL form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The image's path as the dataset names it (relative to the images folder).
    pub image: String,
    /// The size the boxes were drawn on. DeepFashion's lists do not carry it; the image file does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    #[serde(default)]
    pub boxes: Vec<BoxRecord>,
}

/// Ground truth or predictions, in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dataset {
    pub images: Vec<ImageRecord>,
    /// Where it came from, for messages.
    pub source: PathBuf,
}

impl Dataset {
    pub fn box_count(&self) -> usize {
        self.images.iter().map(|i| i.boxes.len()).sum()
    }

    /// Box count per label, sorted by label.
    pub fn category_counts(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for b in self.images.iter().flat_map(|i| &i.boxes) {
            *m.entry(b.label.clone()).or_insert(0) += 1;
        }
        m
    }

    /// Keeps only the images `keep` accepts (used for a DeepFashion split).
    pub fn retain(&mut self, mut keep: impl FnMut(&ImageRecord) -> bool) {
        self.images.retain(|i| keep(i));
    }
}

/// Which way a JSONL file is read: predictions need a finite score on every box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    GroundTruth,
    Predictions,
}

/// Caps a problem list the way the catalog reader does: the first 20 and a total.
pub(crate) fn invalid(path: &Path, mut problems: Vec<String>) -> EvalError {
    let total = problems.len();
    if total > 20 {
        problems.truncate(20);
        problems.push(format!("… {total} problems in all"));
    }
    EvalError::Invalid {
        path: path.into(),
        problems,
    }
}

fn read_text(path: &Path) -> Result<String, EvalError> {
    std::fs::read_to_string(path).map_err(|reason| EvalError::Read {
        path: path.into(),
        reason,
    })
}

/// Reads the JSONL form. Blank lines are skipped; an image named twice is refused (merging them
/// silently would double-count its boxes in one of the two files being compared).
pub fn read_jsonl(path: &Path, role: Role) -> Result<Dataset, EvalError> {
    let file = std::fs::File::open(path).map_err(|reason| EvalError::Read {
        path: path.into(),
        reason,
    })?;
    let mut images = Vec::new();
    let mut problems = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line_no = n + 1;
        let line = line.map_err(|reason| EvalError::Read {
            path: path.into(),
            reason,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let rec: ImageRecord = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!(
                    "line {line_no}: {e} (expected {{\"image\": \"a.jpg\", \"width\": 640, \"height\": 480, \"boxes\": [{{\"label\": \"Dress\", {}\"bbox\": [xmin, ymin, xmax, ymax]}}]}})",
                    if role == Role::Predictions {
                        "\"score\": 0.9, "
                    } else {
                        ""
                    }
                ));
                continue;
            }
        };
        if let Some(first) = seen.insert(rec.image.clone(), line_no) {
            problems.push(format!(
                "line {line_no}: image '{}' was already listed on line {first}; put all its boxes on one line",
                rec.image
            ));
            continue;
        }
        for (i, b) in rec.boxes.iter().enumerate() {
            let coords: [f32; 4] = b.bbox.into();
            if coords.iter().any(|c| !c.is_finite()) {
                problems.push(format!(
                    "line {line_no}, box {i} ('{}'): coordinates must be finite numbers",
                    b.label
                ));
            }
            if role == Role::Predictions {
                match b.score {
                    None => problems.push(format!(
                        "line {line_no}, box {i} ('{}'): a prediction needs a \"score\"",
                        b.label
                    )),
                    Some(s) if !s.is_finite() => problems.push(format!(
                        "line {line_no}, box {i} ('{}'): score {s} is not a finite number",
                        b.label
                    )),
                    Some(_) => {}
                }
            }
        }
        images.push(rec);
    }
    if !problems.is_empty() {
        return Err(invalid(path, problems));
    }
    Ok(Dataset {
        images,
        source: path.into(),
    })
}

/// Writes the JSONL form, one image a line.
pub fn write_jsonl(
    images: &[ImageRecord],
    out: &mut dyn Write,
    path: &Path,
) -> Result<(), EvalError> {
    let werr = |reason: std::io::Error| EvalError::Write {
        path: path.into(),
        reason,
    };
    for rec in images {
        let line = serde_json::to_string(rec).map_err(|e| EvalError::Usage(e.to_string()))?;
        writeln!(out, "{line}").map_err(werr)?;
    }
    out.flush().map_err(werr)
}

/// Writes the JSONL form to a file (created or replaced).
pub fn write_jsonl_file(images: &[ImageRecord], path: &Path) -> Result<(), EvalError> {
    let file = std::fs::File::create(path).map_err(|reason| EvalError::Write {
        path: path.into(),
        reason,
    })?;
    let mut w = std::io::BufWriter::new(file);
    write_jsonl(images, &mut w, path)
}

// ---------------------------------------------------------------------------------------------
// DeepFashion list files

/// The rows of a DeepFashion list file, after its count and header lines, each with its line
/// number. The count must agree with the rows: a short file is a truncated download.
fn list_rows(path: &Path, columns: &[&str]) -> Result<Vec<(usize, Vec<String>)>, EvalError> {
    let text = read_text(path)?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let bad = |line: usize, message: String| EvalError::Parse {
        path: path.into(),
        line,
        message,
    };
    let (_, count_line) = lines
        .next()
        .ok_or_else(|| bad(1, "the file is empty; expected a count line".into()))?;
    let count: usize = count_line.trim().parse().map_err(|_| {
        bad(
            1,
            format!(
                "the first line should be the number of rows, found '{}'",
                count_line.trim()
            ),
        )
    })?;
    let (hn, header) = lines.next().ok_or_else(|| {
        bad(
            2,
            format!("no header line; expected '{}'", columns.join(" ")),
        )
    })?;
    let got: Vec<&str> = header.split_whitespace().collect();
    if got.first() != columns.first() {
        return Err(bad(
            hn + 1,
            format!(
                "header '{}' does not start with '{}'; is this the right file? (expected columns: {})",
                header.trim(),
                columns[0],
                columns.join(" ")
            ),
        ));
    }
    let rows: Vec<(usize, Vec<String>)> = lines
        .map(|(n, l)| (n + 1, l.split_whitespace().map(str::to_string).collect()))
        .collect();
    if rows.len() != count {
        return Err(bad(
            1,
            format!(
                "the count line says {count} rows but the file has {}; the file is truncated or was edited without updating the count",
                rows.len()
            ),
        ));
    }
    Ok(rows)
}

/// One category of `list_category_cloth.txt`: its 1-based id is its row number.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DfCategory {
    pub id: u32,
    pub name: String,
    /// 1 upper-body, 2 lower-body, 3 full-body.
    pub kind: u8,
}

impl DfCategory {
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            1 => "upper-body",
            2 => "lower-body",
            3 => "full-body",
            _ => "unknown",
        }
    }
}

/// Reads `list_category_cloth.txt` (`category_name category_type`). A name with spaces keeps
/// them: the type is the last column.
pub fn read_df_categories(path: &Path) -> Result<Vec<DfCategory>, EvalError> {
    let rows = list_rows(path, &["category_name", "category_type"])?;
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (i, (line, cols)) in rows.into_iter().enumerate() {
        let Some((kind, name)) = cols.split_last().filter(|(_, n)| !n.is_empty()) else {
            problems.push(format!(
                "line {line}: expected 'category_name category_type'"
            ));
            continue;
        };
        match kind.parse::<u8>() {
            Ok(k @ 1..=3) => out.push(DfCategory {
                id: i as u32 + 1,
                name: name.join(" "),
                kind: k,
            }),
            _ => problems.push(format!(
                "line {line}: category_type '{kind}' must be 1 (upper), 2 (lower) or 3 (full body)"
            )),
        }
    }
    if !problems.is_empty() {
        return Err(invalid(path, problems));
    }
    Ok(out)
}

/// The three (or four) files of a DeepFashion annotation folder.
#[derive(Debug, Clone, PartialEq)]
pub struct DeepFashionFiles {
    pub bbox: PathBuf,
    pub category_img: PathBuf,
    pub category_cloth: PathBuf,
    pub partition: Option<PathBuf>,
    /// The folder image names are relative to (the one holding `img/`).
    pub root: PathBuf,
}

impl DeepFashionFiles {
    /// Finds the lists in `dir`, `dir/Anno`, `dir/Anno_coarse` (and the partition in `dir/Eval`),
    /// the layouts of the benchmark's downloads.
    pub fn locate(dir: &Path) -> Result<Self, EvalError> {
        let find = |name: &str, subdirs: &[&str]| -> Option<PathBuf> {
            std::iter::once(dir.to_path_buf())
                .chain(subdirs.iter().map(|s| dir.join(s)))
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        };
        let anno = ["Anno", "Anno_coarse"];
        let need = |name: &str| {
            find(name, &anno).ok_or_else(|| {
                EvalError::Usage(format!(
                    "{} has no {name} (looked in it and in its Anno/ and Anno_coarse/ folders); point --deepfashion at the benchmark's folder",
                    dir.display()
                ))
            })
        };
        let bbox = need("list_bbox.txt")?;
        let category_img = need("list_category_img.txt")?;
        let category_cloth = need("list_category_cloth.txt")?;
        let partition = find("list_eval_partition.txt", &["Eval", "Anno", "Anno_coarse"]);
        // Image names start with `img/`, which sits beside Anno/ in the download: the folder
        // given, or its parent when the Anno/ folder itself was given.
        let root = [Some(dir), dir.parent()]
            .into_iter()
            .flatten()
            .find(|d| d.join("img").is_dir())
            .unwrap_or(dir)
            .to_path_buf();
        Ok(Self {
            bbox,
            category_img,
            category_cloth,
            partition,
            root,
        })
    }
}

/// Reads DeepFashion's category benchmark annotations: one box per image, labelled with the
/// category's name (its 1-based row in `list_category_cloth.txt`). `split` keeps only the images
/// `list_eval_partition.txt` marks so (`train`, `val`, `test`).
pub fn read_deepfashion(
    files: &DeepFashionFiles,
    split: Option<&str>,
) -> Result<(Dataset, Vec<DfCategory>), EvalError> {
    let cats = read_df_categories(&files.category_cloth)?;
    let mut problems = Vec::new();
    let mut label_of: HashMap<String, String> = HashMap::new();
    for (line, cols) in list_rows(&files.category_img, &["image_name", "category_label"])? {
        let [name, label] = &cols[..] else {
            problems.push(format!("line {line}: expected 'image_name category_label'"));
            continue;
        };
        match label.parse::<usize>() {
            Ok(id) if (1..=cats.len()).contains(&id) => {
                label_of.insert(name.clone(), cats[id - 1].name.clone());
            }
            _ => problems.push(format!(
                "line {line}: category_label '{label}' is not between 1 and {} (the rows of {})",
                cats.len(),
                files.category_cloth.display()
            )),
        }
    }
    if !problems.is_empty() {
        return Err(invalid(&files.category_img, problems));
    }
    let mut images = Vec::new();
    let mut unlabelled = Vec::new();
    for (line, cols) in list_rows(&files.bbox, &["image_name", "x_1", "y_1", "x_2", "y_2"])? {
        let [name, x1, y1, x2, y2] = &cols[..] else {
            problems.push(format!(
                "line {line}: expected 'image_name x_1 y_1 x_2 y_2'"
            ));
            continue;
        };
        let c: Result<Vec<f32>, _> = [x1, y1, x2, y2].iter().map(|v| v.parse::<f32>()).collect();
        let Ok(c) = c else {
            problems.push(format!("line {line}: coordinates must be numbers"));
            continue;
        };
        let Some(label) = label_of.remove(name) else {
            unlabelled.push(name.clone());
            continue;
        };
        images.push(ImageRecord {
            image: name.clone(),
            width: None,
            height: None,
            boxes: vec![BoxRecord {
                label,
                score: None,
                bbox: PixelBox::from([c[0], c[1], c[2], c[3]]),
            }],
        });
    }
    if !unlabelled.is_empty() {
        problems.push(format!(
            "{} image(s) have a box but no category in {} (first: {})",
            unlabelled.len(),
            files.category_img.display(),
            unlabelled[..unlabelled.len().min(3)].join(", ")
        ));
    }
    if !label_of.is_empty() {
        let mut left: Vec<&String> = label_of.keys().collect();
        left.sort();
        problems.push(format!(
            "{} image(s) have a category but no box in {} (first: {})",
            left.len(),
            files.bbox.display(),
            left.iter()
                .take(3)
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !problems.is_empty() {
        return Err(invalid(&files.bbox, problems));
    }
    let mut ds = Dataset {
        images,
        source: files.bbox.clone(),
    };
    if let Some(split) = split {
        let Some(part) = &files.partition else {
            return Err(EvalError::Usage(format!(
                "--split {split} needs list_eval_partition.txt, which is not beside {}",
                files.bbox.display()
            )));
        };
        let mut status = HashMap::new();
        for (line, cols) in list_rows(part, &["image_name", "evaluation_status"])? {
            let [name, s] = &cols[..] else {
                return Err(EvalError::Parse {
                    path: part.clone(),
                    line,
                    message: "expected 'image_name evaluation_status'".into(),
                });
            };
            status.insert(name.clone(), s.clone());
        }
        if !status.values().any(|s| s == split) {
            let mut known: Vec<&String> = status.values().collect();
            known.sort();
            known.dedup();
            return Err(EvalError::Usage(format!(
                "no image of {} is in split '{split}' (its splits: {})",
                part.display(),
                known
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        ds.retain(|r| status.get(&r.image).is_some_and(|s| s == split));
    }
    Ok((ds, cats))
}

// ---------------------------------------------------------------------------------------------
// DeepFashion2

/// DeepFashion2's 13 categories, by `category_id`.
pub const DEEPFASHION2_CATEGORIES: [&str; 13] = [
    "short sleeve top",
    "long sleeve top",
    "short sleeve outwear",
    "long sleeve outwear",
    "vest",
    "sling",
    "shorts",
    "trousers",
    "skirt",
    "short sleeve dress",
    "long sleeve dress",
    "vest dress",
    "sling dress",
];

#[derive(Deserialize)]
struct Df2Item {
    category_id: Option<u32>,
    category_name: Option<String>,
    bounding_box: [f32; 4],
}

/// Reads one DeepFashion2 annotation: its `itemN` objects in N order. The image is the JSON's
/// stem with `.jpg` (the dataset's `image/` folder beside `annos/`).
pub fn read_deepfashion2_file(path: &Path) -> Result<ImageRecord, EvalError> {
    let text = read_text(path)?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| EvalError::Parse {
        path: path.into(),
        line: e.line(),
        message: e.to_string(),
    })?;
    let Some(obj) = value.as_object() else {
        return Err(EvalError::Parse {
            path: path.into(),
            line: 1,
            message: "expected a JSON object with item1, item2, …".into(),
        });
    };
    let mut items: Vec<(u32, &serde_json::Value)> = obj
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("item")
                .and_then(|n| n.parse().ok())
                .map(|n| (n, v))
        })
        .collect();
    items.sort_by_key(|(n, _)| *n);
    let mut boxes = Vec::new();
    let mut problems = Vec::new();
    for (n, v) in items {
        let item: Df2Item = match serde_json::from_value(v.clone()) {
            Ok(i) => i,
            Err(e) => {
                problems.push(format!("item{n}: {e}"));
                continue;
            }
        };
        let by_id = item
            .category_id
            .and_then(|id| DEEPFASHION2_CATEGORIES.get((id as usize).checked_sub(1)?));
        let label = match (&item.category_name, by_id) {
            (Some(name), Some(std_name)) if !name.eq_ignore_ascii_case(std_name) => {
                problems.push(format!(
                    "item{n}: category_id {} is '{std_name}' in DeepFashion2 but the file says '{name}'",
                    item.category_id.unwrap_or(0)
                ));
                continue;
            }
            (Some(name), _) => name.clone(),
            (None, Some(std_name)) => std_name.to_string(),
            (None, None) => {
                problems.push(format!(
                    "item{n}: no category_name and category_id {:?} is not 1-13",
                    item.category_id
                ));
                continue;
            }
        };
        boxes.push(BoxRecord {
            label,
            score: None,
            bbox: PixelBox::from(item.bounding_box),
        });
    }
    if !problems.is_empty() {
        return Err(invalid(path, problems));
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(ImageRecord {
        image: format!("{stem}.jpg"),
        width: None,
        height: None,
        boxes,
    })
}

/// Reads a DeepFashion2 `annos/` folder (every `*.json`, sorted by name) or one file.
pub fn read_deepfashion2(path: &Path) -> Result<Dataset, EvalError> {
    let files = if path.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|reason| EvalError::Read {
                path: path.into(),
                reason,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        v.sort();
        if v.is_empty() {
            return Err(EvalError::Usage(format!(
                "{} holds no .json files; point --deepfashion2 at the dataset's annos/ folder",
                path.display()
            )));
        }
        v
    } else {
        vec![path.to_path_buf()]
    };
    let mut images = Vec::with_capacity(files.len());
    let mut problems = Vec::new();
    for f in &files {
        match read_deepfashion2_file(f) {
            Ok(r) => images.push(r),
            Err(e) => problems.push(e.to_string()),
        }
    }
    if !problems.is_empty() {
        return Err(invalid(path, problems));
    }
    Ok(Dataset {
        images,
        source: path.into(),
    })
}

/// Where DeepFashion2's images are, given its `annos/` folder: the sibling `image/`.
pub fn deepfashion2_images(annos: &Path) -> PathBuf {
    let dir = if annos.is_dir() {
        annos
    } else {
        annos.parent().unwrap_or(Path::new("."))
    };
    dir.parent().unwrap_or(Path::new(".")).join("image")
}

// ---------------------------------------------------------------------------------------------
// Retrieval pairs

/// One retrieval query: a photo (optionally a box in it) and the catalog item it shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrievalPair {
    /// The query photo (a shopper's or consumer's), relative to the images folder.
    pub query: String,
    /// The item it shows: a catalog item's `id`, or its `attributes.item_id`.
    pub item: String,
    /// The garment's box in the query photo; the whole photo when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bbox: Option<PixelBox>,
    /// The catalog group to search; all groups when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// Reads JSONL pairs: `{"query": "c/1.jpg", "item": "id_00001", "bbox": [..]?, "group": "top"?}`.
pub fn read_pairs_jsonl(path: &Path) -> Result<Vec<RetrievalPair>, EvalError> {
    let text = read_text(path)?;
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<RetrievalPair>(line) {
            Ok(p) => out.push(p),
            Err(e) => problems.push(format!(
                "line {}: {e} (expected {{\"query\": \"consumer/1.jpg\", \"item\": \"id_00001\"}})",
                n + 1
            )),
        }
    }
    if !problems.is_empty() {
        return Err(invalid(path, problems));
    }
    Ok(out)
}

/// Reads the consumer-to-shop benchmark's `list_eval_partition.txt`
/// (`image_pair_name_1 image_pair_name_2 item_id evaluation_status`): the consumer photo is the
/// query and the item id the answer; `split` keeps one evaluation status. Boxes come from
/// `list_bbox_consumer2shop.txt` when given (`image_name clothes_type source_type x_1 y_1 x_2 y_2`).
pub fn read_consumer2shop(
    path: &Path,
    split: Option<&str>,
    bboxes: Option<&Path>,
) -> Result<Vec<RetrievalPair>, EvalError> {
    let rows = list_rows(
        path,
        &[
            "image_pair_name_1",
            "image_pair_name_2",
            "item_id",
            "evaluation_status",
        ],
    )?;
    let mut boxes: HashMap<String, PixelBox> = HashMap::new();
    if let Some(bpath) = bboxes {
        let mut problems = Vec::new();
        for (line, cols) in list_rows(bpath, &["image_name"])? {
            let parsed: Option<Vec<f32>> = (cols.len() >= 5)
                .then(|| {
                    cols[cols.len() - 4..]
                        .iter()
                        .map(|v| v.parse().ok())
                        .collect()
                })
                .flatten();
            match parsed {
                Some(c) => {
                    boxes.insert(cols[0].clone(), PixelBox::from([c[0], c[1], c[2], c[3]]));
                }
                None => problems.push(format!(
                    "line {line}: expected 'image_name clothes_type source_type x_1 y_1 x_2 y_2'"
                )),
            }
        }
        if !problems.is_empty() {
            return Err(invalid(bpath, problems));
        }
    }
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (line, cols) in rows {
        let [consumer, _shop, item, status] = &cols[..] else {
            problems.push(format!(
                "line {line}: expected 'image_pair_name_1 image_pair_name_2 item_id evaluation_status'"
            ));
            continue;
        };
        if split.is_some_and(|s| s != status) {
            continue;
        }
        out.push(RetrievalPair {
            query: consumer.clone(),
            item: item.clone(),
            bbox: boxes.get(consumer).copied(),
            group: None,
        });
    }
    if !problems.is_empty() {
        return Err(invalid(path, problems));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_reports_every_bad_line_and_refuses_repeated_images() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("pred.jsonl");
        std::fs::write(
            &p,
            [
                r#"{"image":"a.jpg","boxes":[{"label":"Dress","score":0.5,"bbox":[0,0,1,1]}]}"#,
                r#"{"image":"b.jpg","boxes":[{"label":"Dress","bbox":[0,0,1,1]}]}"#,
                r#"{"image":"a.jpg","boxes":[]}"#,
                r#"{"image":"c.jpg","boxes":[{"label":"Dress","score":0.5,"bbox":[0,0]}]}"#,
            ]
            .join("\n"),
        )
        .expect("write");
        let Err(EvalError::Invalid { problems, .. }) = read_jsonl(&p, Role::Predictions) else {
            panic!("must be refused");
        };
        let all = problems.join("\n");
        assert!(
            all.contains("line 2, box 0 ('Dress'): a prediction needs a \"score\""),
            "{all}"
        );
        assert!(
            all.contains("line 3: image 'a.jpg' was already listed on line 1"),
            "{all}"
        );
        assert!(all.contains("line 4:"), "{all}");
        // The same file without the prediction rule is fine up to the repeated image.
        assert!(read_jsonl(&p, Role::GroundTruth).is_err());
    }

    #[test]
    fn deepfashion2_checks_names_against_ids() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("000001.json");
        std::fs::write(
            &p,
            r#"{"source":"user","pair_id":1,"item1":{"category_id":7,"category_name":"trousers","bounding_box":[1,2,3,4]}}"#,
        )
        .expect("write");
        let Err(EvalError::Invalid { problems, .. }) = read_deepfashion2_file(&p) else {
            panic!("a name that contradicts its id must be refused");
        };
        assert!(
            problems[0].contains("category_id 7 is 'shorts'"),
            "{problems:?}"
        );
    }

    #[test]
    fn list_files_must_match_their_count_line() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("list_category_cloth.txt");
        std::fs::write(&p, "3\ncategory_name  category_type\nAnorak 1\nBlazer 1\n").expect("w");
        let e = read_df_categories(&p).expect_err("truncated");
        assert!(
            e.to_string().contains("says 3 rows but the file has 2"),
            "{e}"
        );
    }
}
