//! The store's catalog: items, their embeddings, and the per-group HNSW indexes searched for each
//! garment.
//!
//! A [`Catalog`] is built once and then never changes; the pipeline reads the active one through an
//! `ArcSwap`, so a new catalog can be built off the hot path and swapped in without a pause. Each
//! group (top, bottom, footwear, …) has its own index, so a shopper's trousers are only ever
//! matched against trousers-and-skirts, never against shoes.

pub mod build;
pub mod index;
pub mod items;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

pub use index::{GroupIndex, IndexParams};
pub use items::{Item, Manifest};

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("catalog {path} is invalid:\n  {}{}", .problems.iter().take(20).cloned().collect::<Vec<_>>().join("\n  "), if .problems.len() > 20 { format!("\n  … and {} more", .problems.len() - 20) } else { String::new() })]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
    #[error(
        "catalog {path} was made with a different embedder (dim {catalog_dim}, sha256 {catalog_sha}) than the running one (dim {dim}, sha256 {sha}); \
         rebuild its embeddings with `vitrine catalog build`"
    )]
    EmbedderMismatch {
        path: PathBuf,
        catalog_dim: usize,
        catalog_sha: String,
        dim: usize,
        sha: String,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

/// One search hit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Hit {
    /// Index into [`Catalog::items`].
    pub item: usize,
    /// Cosine similarity, 1 = identical.
    pub similarity: f32,
}

/// An immutable, searchable catalog.
pub struct Catalog {
    pub version: String,
    pub root: PathBuf,
    pub items: Vec<Item>,
    pub dim: usize,
    pub embedder_sha256: Option<String>,
    groups: BTreeMap<String, GroupIndex>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("version", &self.version)
            .field("items", &self.items.len())
            .field("dim", &self.dim)
            .finish()
    }
}

impl Catalog {
    /// Builds the indexes for items whose embeddings are already checked (unit length, `dim`).
    pub fn from_items(
        version: String,
        root: PathBuf,
        items: Vec<Item>,
        vectors: Vec<Vec<f32>>,
        dim: usize,
        embedder_sha256: Option<String>,
        params: &IndexParams,
    ) -> Self {
        let mut by_group: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, it) in items.iter().enumerate() {
            by_group.entry(it.group.clone()).or_default().push(i);
        }
        let groups = by_group
            .into_iter()
            .map(|(g, members)| {
                let vecs: Vec<Vec<f32>> = members.iter().map(|&i| vectors[i].clone()).collect();
                (g, GroupIndex::build(members, vecs, params))
            })
            .collect();
        Self {
            version,
            root,
            items,
            dim,
            embedder_sha256,
            groups,
        }
    }

    /// Loads a catalog folder (`manifest.json` optional, `items.jsonl` with inline embeddings).
    /// `expect` is the running embedder's (dim, sha256); a mismatch is refused.
    pub fn load(
        dir: &Path,
        expect: Option<(usize, &str)>,
        params: &IndexParams,
    ) -> Result<Self, CatalogError> {
        let manifest = Manifest::load_optional(dir)?;
        if let (Some(m), Some((dim, sha))) = (&manifest, expect)
            && (m.embedder.dim != dim || !m.embedder.sha256.eq_ignore_ascii_case(sha))
        {
            return Err(CatalogError::EmbedderMismatch {
                path: dir.into(),
                catalog_dim: m.embedder.dim,
                catalog_sha: m.embedder.sha256.clone(),
                dim,
                sha: sha.into(),
            });
        }
        let dim = expect
            .map(|e| e.0)
            .or(manifest.as_ref().map(|m| m.embedder.dim));
        let (items, vectors, dim) = items::read_items(&dir.join("items.jsonl"), dim)?;
        let version = manifest
            .as_ref()
            .map(|m| m.version.clone())
            .unwrap_or_else(|| "unversioned".into());
        Ok(Self::from_items(
            version,
            dir.into(),
            items,
            vectors,
            dim,
            manifest.map(|m| m.embedder.sha256),
            params,
        ))
    }

    pub fn groups(&self) -> impl Iterator<Item = (&str, usize)> {
        self.groups.iter().map(|(g, i)| (g.as_str(), i.len()))
    }

    pub fn has_group(&self, group: &str) -> bool {
        self.groups.contains_key(group)
    }

    /// The `k` most similar items of `group`; empty when the catalog has no such group.
    pub fn search(&self, group: &str, query: &[f32], k: usize, ef: usize) -> Vec<Hit> {
        self.groups
            .get(group)
            .map(|g| g.search(query, k, ef))
            .unwrap_or_default()
    }

    /// Exact search by brute force, the reference for recall.
    pub fn search_exact(&self, group: &str, query: &[f32], k: usize) -> Vec<Hit> {
        self.groups
            .get(group)
            .map(|g| g.search_exact(query, k))
            .unwrap_or_default()
    }

    pub fn item(&self, i: usize) -> &Item {
        &self.items[i]
    }
}

pub type SharedCatalog = Arc<arc_swap::ArcSwap<Catalog>>;
