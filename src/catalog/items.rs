//! Catalog items and the files that hold them: `manifest.json` and `items.jsonl`
//! (format documented in the README's "Catalog bundles" section).
//!
//! Reading reports every bad row at once (first 20 shown, with a count), each naming the line and
//! the item id, because staff fix a catalog in a spreadsheet and need the whole list.

use std::collections::{BTreeMap, HashSet};
use std::io::BufRead;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::CatalogError;

/// An item as the display shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub id: String,
    pub name: String,
    pub group: String,
    #[serde(default)]
    pub category: String,
    pub price: f64,
    #[serde(default = "eur")]
    pub currency: String,
    /// Path of the product image, relative to the catalog folder.
    pub image: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, serde_json::Value>,
}

fn eur() -> String {
    "EUR".into()
}

/// One line of `items.jsonl`: an item plus, optionally, its embedding.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ItemLine {
    #[serde(flatten)]
    pub item: Item,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Vec<f32>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbedderFingerprint {
    pub sha256: String,
    pub dim: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: String,
    #[serde(default)]
    pub created: String,
    pub item_count: usize,
    pub embedder: EmbedderFingerprint,
    #[serde(default = "inline")]
    pub embeddings: String,
}

fn inline() -> String {
    "inline".into()
}

pub const FORMAT: &str = "vitrine-catalog/1";

impl Manifest {
    pub fn load_optional(dir: &Path) -> Result<Option<Self>, CatalogError> {
        let path = dir.join("manifest.json");
        match std::fs::read_to_string(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(CatalogError::Read { path, source }),
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| CatalogError::Invalid {
                    path,
                    problems: vec![format!("manifest.json: {e}")],
                }),
        }
    }
}

/// Items, their unit-length vectors (same order) and the embedding size.
pub type ItemsAndVectors = (Vec<Item>, Vec<Vec<f32>>, usize);

/// Reads `items.jsonl` with inline embeddings. `dim` is the expected embedding size (the running
/// embedder's); when unknown, the first item's size is taken. Vectors come back unit length.
pub fn read_items(path: &Path, dim: Option<usize>) -> Result<ItemsAndVectors, CatalogError> {
    let file = std::fs::File::open(path).map_err(|source| CatalogError::Read {
        path: path.into(),
        source,
    })?;
    let mut items = Vec::new();
    let mut vectors = Vec::new();
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    let mut dim = dim;
    let mut renormalised = 0usize;
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line_no = n + 1;
        let line = line.map_err(|source| CatalogError::Read {
            path: path.into(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: ItemLine = match serde_json::from_str(&line) {
            Ok(p) => p,
            Err(e) => {
                problems.push(format!("line {line_no}: {e}"));
                continue;
            }
        };
        let id = parsed.item.id.clone();
        match check_item(&parsed, dim) {
            Err(p) => problems.extend(
                p.into_iter()
                    .map(|p| format!("line {line_no}, item '{id}': {p}")),
            ),
            Ok(mut v) => {
                if !seen.insert(id.clone()) {
                    problems.push(format!("line {line_no}, item '{id}': duplicate id"));
                    continue;
                }
                dim.get_or_insert(v.len());
                if normalise(&mut v) {
                    renormalised += 1;
                }
                items.push(parsed.item);
                vectors.push(v);
            }
        }
    }
    if items.is_empty() && problems.is_empty() {
        problems.push("no items".into());
    }
    if !problems.is_empty() {
        let total = problems.len();
        if total > 20 {
            problems.truncate(20);
            problems.push(format!("{total} problems in all"));
        }
        return Err(CatalogError::Invalid {
            path: path.into(),
            problems,
        });
    }
    if renormalised > 0 {
        tracing::warn!(path = %path.display(), renormalised, "embeddings were not unit length and have been normalised");
    }
    Ok((items, vectors, dim.unwrap_or(0)))
}

/// Checks one line; returns its embedding or every problem with it.
pub fn check_item(line: &ItemLine, dim: Option<usize>) -> Result<Vec<f32>, Vec<String>> {
    let mut p = Vec::new();
    let it = &line.item;
    if it.id.trim().is_empty() {
        p.push("empty id".into());
    }
    if it.name.trim().is_empty() {
        p.push("empty name".into());
    }
    if it.group.trim().is_empty() {
        p.push("empty group".into());
    }
    if !(it.price.is_finite() && it.price >= 0.0) {
        p.push(format!("price {} is not a non-negative number", it.price));
    }
    if it.image.contains("..") || it.image.starts_with('/') {
        p.push(format!(
            "image path '{}' must stay inside the catalog folder",
            it.image
        ));
    }
    match &line.embedding {
        None => p.push("no embedding (compute them with `vitrine catalog build`)".into()),
        Some(v) => {
            if let Some(d) = dim.filter(|d| *d != v.len()) {
                p.push(format!(
                    "embedding has {} values but the embedder produces {d}",
                    v.len()
                ));
            }
            if v.iter().any(|x| !x.is_finite()) {
                p.push("embedding contains NaN or infinite values".into());
            } else if v.iter().all(|x| *x == 0.0) {
                p.push("embedding is all zeros".into());
            }
        }
    }
    if p.is_empty() {
        Ok(line.embedding.clone().unwrap_or_default())
    } else {
        Err(p)
    }
}

/// Normalises to unit length; true when the vector was noticeably off.
pub fn normalise(v: &mut [f32]) -> bool {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let off = (n - 1.0).abs() > 1e-3;
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
    off
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str, emb: &str) -> String {
        format!(
            r#"{{"id":"{id}","name":"Shirt","group":"top","category":"Shirt","price":10,"image":"images/a.jpg","embedding":{emb}}}"#
        )
    }

    #[test]
    fn every_bad_row_is_reported_with_its_line_and_id() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("items.jsonl");
        let text = [
            line("a", "[1,0,0]"),
            line("b", "[1,0]"),
            line("a", "[0,1,0]"),
            "{not json".into(),
            line("c", "[0,0,0]"),
        ]
        .join("\n");
        std::fs::write(&p, text).expect("write");
        let Err(CatalogError::Invalid { problems, .. }) = read_items(&p, Some(3)) else {
            panic!("must be invalid");
        };
        let all = problems.join("\n");
        assert!(
            all.contains("line 2, item 'b': embedding has 2 values but the embedder produces 3"),
            "{all}"
        );
        assert!(all.contains("line 3, item 'a': duplicate id"), "{all}");
        assert!(all.contains("line 4:"), "{all}");
        assert!(
            all.contains("line 5, item 'c': embedding is all zeros"),
            "{all}"
        );
    }

    #[test]
    fn non_unit_vectors_are_normalised() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("items.jsonl");
        std::fs::write(&p, line("a", "[3,4,0]")).expect("write");
        let (items, vecs, dim) = read_items(&p, None).expect("valid");
        assert_eq!((items.len(), dim), (1, 3));
        assert!((vecs[0][0] - 0.6).abs() < 1e-6 && (vecs[0][1] - 0.8).abs() < 1e-6);
        std::fs::write(&p, line("a", "[NaN,0,0]").replace("NaN", "1e999")).expect("write");
        assert!(read_items(&p, None).is_err(), "infinite values are refused");
    }
}
