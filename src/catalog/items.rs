//! Catalog items and the files that hold them: `manifest.json` and `items.jsonl`
//! (format documented in the README's "Catalog bundles" section).
//!
//! The checks here are per row; [`super::bundle`] runs them over a whole bundle and reports every
//! bad row at once (the first 20 and a count), because staff fix a catalog in a spreadsheet and
//! need the whole list.

use std::collections::BTreeMap;
use std::path::{Component, Path};

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

/// What made a catalog's vectors: the embedder model file, the vector size and the recipe that
/// turns an embedding (and the photo's colour) into the stored vector ([`crate::vision::fusion`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbedderFingerprint {
    pub sha256: String,
    pub dim: usize,
    /// [`crate::vision::fusion::Recipe::describe`]; catalogs made before recipes existed read as
    /// the CNN embedding alone.
    #[serde(default = "cnn_only")]
    pub recipe: String,
}

fn cnn_only() -> String {
    crate::vision::fusion::CNN_ONLY.into()
}

impl EmbedderFingerprint {
    /// The running embedder's fingerprint.
    pub fn running(
        spec: &crate::config::model::EmbedderSpec,
        recipe: &crate::vision::fusion::Recipe,
    ) -> Self {
        Self {
            sha256: spec.sha256.clone(),
            dim: recipe.dim(spec.output.dim),
            recipe: recipe.describe(),
        }
    }

    /// How a catalog made with `self` differs from the `running` embedder, in words; `None` when
    /// its vectors can be searched as they are.
    pub fn mismatch(&self, running: &Self) -> Option<String> {
        let mut why = Vec::new();
        if !self.sha256.eq_ignore_ascii_case(&running.sha256) {
            why.push(format!(
                "embedder model sha256 {} (running: {})",
                self.sha256, running.sha256
            ));
        }
        if self.recipe != running.recipe {
            why.push(format!(
                "recipe '{}' (running: '{}')",
                self.recipe, running.recipe
            ));
        }
        if self.dim != running.dim {
            why.push(format!("{}-d vectors (running: {})", self.dim, running.dim));
        }
        (!why.is_empty()).then(|| why.join(", "))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    /// The label staff gave this catalog, e.g. "spring-2026".
    pub version: String,
    #[serde(default)]
    pub created: String,
    pub item_count: usize,
    /// Which embedder made the embeddings; may be absent when the bundle carries only images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedder: Option<EmbedderFingerprint>,
    /// Where the embeddings are: "inline" (in items.jsonl), "npy" (a float32 matrix in item
    /// order) or "none" (images only: the appliance computes them).
    #[serde(default = "inline")]
    pub embeddings: String,
    /// The matrix file when `embeddings` is "npy".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embeddings_file: Option<String>,
}

fn inline() -> String {
    "inline".into()
}

pub const FORMAT: &str = "vitrine-catalog/1";

/// The largest `manifest.json` read: it is a dozen lines.
pub const MANIFEST_MAX: u64 = 64 << 10;

/// Where a bundle's embeddings are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmbeddingSource {
    Inline,
    Npy(String),
    None,
}

impl Manifest {
    pub fn load_optional(dir: &Path) -> Result<Option<Self>, CatalogError> {
        use std::io::Read;
        let path = dir.join("manifest.json");
        let file = match std::fs::File::open(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CatalogError::Read { path, source }),
            Ok(f) => f,
        };
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            return Err(CatalogError::Invalid {
                path,
                problems: vec!["manifest.json is not a regular file".into()],
            });
        }
        // Read no more than a manifest can be: a bloated one must not fill memory.
        let mut bytes = Vec::new();
        if let Err(source) = file.take(MANIFEST_MAX + 1).read_to_end(&mut bytes) {
            return Err(CatalogError::Read { path, source });
        }
        if bytes.len() as u64 > MANIFEST_MAX {
            return Err(CatalogError::Invalid {
                path,
                problems: vec![format!(
                    "manifest.json is larger than {} KiB; a manifest is a few lines",
                    MANIFEST_MAX >> 10
                )],
            });
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| CatalogError::Invalid {
                path,
                problems: vec![format!("manifest.json: {e}")],
            })
    }

    pub fn embedding_source(&self) -> Result<EmbeddingSource, String> {
        match self.embeddings.as_str() {
            "inline" => Ok(EmbeddingSource::Inline),
            "npy" => {
                let f = self
                    .embeddings_file
                    .clone()
                    .unwrap_or_else(|| "embeddings.npy".into());
                if safe_relative(&f).is_none() {
                    return Err(format!(
                        "manifest.json: embeddings_file '{f}' must be a path inside the bundle"
                    ));
                }
                Ok(EmbeddingSource::Npy(f))
            }
            "none" => Ok(EmbeddingSource::None),
            other => Err(format!(
                "manifest.json: embeddings = \"{other}\" is not one of \"inline\", \"npy\", \"none\""
            )),
        }
    }
}

/// A relative path of plain components only: no `..`, no root, no drive prefix, not empty.
pub fn safe_relative(p: &str) -> Option<&Path> {
    let path = Path::new(p);
    let ok = !p.is_empty()
        && !p.contains('\\')
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        && path.components().any(|c| matches!(c, Component::Normal(_)));
    ok.then_some(path)
}

/// Every problem with an item's fields (not its embedding), as phrases.
pub fn check_fields(it: &Item) -> Vec<String> {
    let mut p = Vec::new();
    if it.id.trim().is_empty() {
        p.push("empty id".into());
    } else if it.id.len() > 200 || it.id.chars().any(|c| c.is_control() || c == '/') {
        p.push("id must be at most 200 characters, without '/' or control characters".into());
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
    if !(it.currency.len() == 3 && it.currency.chars().all(|c| c.is_ascii_uppercase())) {
        p.push(format!(
            "currency '{}' is not a three-letter code such as EUR",
            it.currency
        ));
    }
    if safe_relative(&it.image).is_none() {
        p.push(format!(
            "image path '{}' must be a relative path inside the bundle",
            it.image
        ));
    }
    p
}

/// Every problem with an embedding, as phrases; `dim` is the running embedder's size.
pub fn check_vector(v: &[f32], dim: usize) -> Vec<String> {
    let mut p = Vec::new();
    if v.len() != dim {
        p.push(format!(
            "embedding has {} values but the embedder and its [similarity] recipe make {dim}",
            v.len()
        ));
    }
    if v.iter().any(|x| !x.is_finite()) {
        p.push("embedding contains NaN or infinite values".into());
    } else if v.iter().all(|x| *x == 0.0) {
        p.push("embedding is all zeros".into());
    }
    p
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

/// A list of problems cut to the first `keep`, with a line saying how many there were in all.
pub fn cap_problems(mut problems: Vec<String>, keep: usize) -> Vec<String> {
    let total = problems.len();
    if total > keep {
        problems.truncate(keep);
        problems.push(format!("… {total} problems in all"));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item() -> Item {
        serde_json::from_str(
            r#"{"id":"a","name":"Shirt","group":"top","price":10,"image":"images/a.jpg"}"#,
        )
        .expect("item")
    }

    #[test]
    fn field_checks_name_each_problem() {
        assert!(check_fields(&item()).is_empty());
        let mut it = item();
        it.image = "../../etc/passwd".into();
        it.currency = "euro".into();
        it.price = f64::NAN;
        let p = check_fields(&it).join("; ");
        assert!(p.contains("image path '../../etc/passwd'"), "{p}");
        assert!(p.contains("currency 'euro'"), "{p}");
        assert!(p.contains("price NaN"), "{p}");
        assert!(safe_relative("/etc/passwd").is_none());
        assert!(safe_relative("a/../b").is_none());
        assert!(safe_relative("./images/a.jpg").is_some());
    }

    #[test]
    fn vector_checks_and_normalisation() {
        assert!(check_vector(&[1.0, 0.0], 3)[0].contains("has 2 values"));
        assert!(check_vector(&[f32::NAN, 0.0, 1.0], 3)[0].contains("NaN"));
        assert!(check_vector(&[0.0; 3], 3)[0].contains("all zeros"));
        let mut v = [3.0, 4.0, 0.0];
        assert!(normalise(&mut v));
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        assert!(!normalise(&mut v));
        let capped = cap_problems((0..30).map(|i| i.to_string()).collect(), 20);
        assert_eq!(capped.len(), 21);
        assert!(capped[20].contains("30 problems in all"));
    }
}
