//! The store's catalog: items, their embeddings, and the per-group HNSW indexes searched for each
//! garment.
//!
//! A [`Catalog`] is built once and then never changes; the pipeline reads the active one through an
//! `ArcSwap`, so a new catalog can be built off the hot path and swapped in without a pause. Each
//! group (top, bottom, footwear, …) has its own index, so a shopper's trousers are only ever
//! matched against trousers-and-skirts, never against shoes.

pub mod build;
pub mod bundle;
pub mod channel;
pub mod cli;
pub mod import;
pub mod index;
pub mod items;
pub mod job;
pub mod npy;
pub mod persist;
pub mod prebuilt;
pub mod store;
pub mod synth;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

pub use index::{GroupIndex, IndexParams};
pub use items::{EmbedderFingerprint, Item, Manifest};

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
        "catalog {path} was made with a different embedder than the running one: {why}; \
         rebuild its vectors with `vitrine catalog build`, or import its images only (manifest \"embeddings\": \"none\") so the appliance computes them"
    )]
    EmbedderMismatch { path: PathBuf, why: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the catalog data folder {path} is in use by another vitrine process; stop it (systemctl stop vitrine) or use its staff API"
    )]
    Locked { path: PathBuf },
    #[error("there is no catalog version '{0}' (list them with `vitrine catalog list`)")]
    NoSuchVersion(String),
    #[error(
        "{0:?} is not a catalog version id: ids are 'v' and four or more digits, e.g. v0007 (list them with `vitrine catalog list` or GET /api/catalog/versions)"
    )]
    BadVersionId(String),
    #[error("there is no item '{0}' in the active catalog")]
    NoSuchItem(String),
    #[error("there is no earlier catalog version to roll back to")]
    NothingToRollBack,
    #[error("there is no job '{0}' (GET /api/catalog/jobs lists them)")]
    NoSuchJob(String),
    /// A write is running (`job`: its id and stage, when it is a job); a caller may retry.
    #[error(
        "another catalog change is running{}; try again when it has finished",
        .job.as_ref().map(|(id, stage)| format!(" (job {id}, {stage})")).unwrap_or_default()
    )]
    Busy { job: Option<(String, job::Stage)> },
    #[error("another bundle upload is being received; try again when it has finished")]
    UploadInProgress,
    #[error(
        "the upload is larger than the limit of {} MiB (catalog.upload_limit_mb)",
        .limit >> 20
    )]
    UploadTooLarge { limit: u64 },
    #[error(
        "nothing was received for {} s (catalog.receive_timeout_s); the upload was abandoned, send it again",
        .waited.as_secs()
    )]
    UploadStalled { waited: std::time::Duration },
    #[error("the upload was interrupted ({0}); send it again")]
    UploadInterrupted(String),
    #[error("the request body is empty: send the bundle as a .tar or .tar.gz body")]
    EmptyUpload,
    /// Nothing to serve at start-up: no stored version and no seed folder (`locked`: the data
    /// folder is another process's, so this one could not import the seed anyway).
    #[error("{}", no_catalog(.data_dir, .locked))]
    NoCatalog { data_dir: PathBuf, locked: bool },
    /// Item edits build on the active version's files; a catalog served from elsewhere (a seed
    /// read in place) has none to build on.
    #[error("the active catalog '{0}' is not a stored version; import a bundle first")]
    NotStored(String),
    #[error("no embedder is configured to compute embeddings")]
    NoEmbedder,
    #[error("cannot start the import's embedder: {0}")]
    EmbedderStart(String),
    #[error("embedding item '{item}': {why}")]
    Embedding { item: String, why: String },
    /// A stored file that was fine when it was written no longer is.
    #[error("item '{item}': reading its image {path}: {why}")]
    StoredImage {
        item: String,
        path: PathBuf,
        why: String,
    },
    /// The catalog's own threads (the writer thread, the build pool) could not start or died.
    #[error("{0}")]
    Threads(String),
    /// The channel poller's record of the highest sequence it accepted is unreadable.
    #[error(
        "{path} is damaged ({why}); it holds the highest channel sequence this box accepted. Delete it only if you trust the channel's current document"
    )]
    ChannelState { path: PathBuf, why: String },
}

fn no_catalog(data_dir: &Path, locked: &bool) -> String {
    if *locked {
        "no catalog: the data folder is locked and catalog.path is not set".into()
    } else {
        format!(
            "the data folder {} has no catalog and catalog.path is not set: import one with `vitrine catalog import`",
            data_dir.display()
        )
    }
}

impl CatalogError {
    /// The first line of the message, without the list of problems.
    pub fn summary(&self) -> String {
        match self {
            CatalogError::Invalid { path, problems } => format!(
                "catalog {} is invalid ({} problem{})",
                path.display(),
                problems.len(),
                if problems.len() == 1 { "" } else { "s" }
            ),
            e => e.to_string(),
        }
    }

    /// The offending rows, for bundles refused by validation.
    pub fn problems(&self) -> &[String] {
        match self {
            CatalogError::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }

    /// A copy to hand to another thread (I/O errors are not `Clone`: their kind and text are
    /// kept).
    pub fn clone_shallow(&self) -> CatalogError {
        use CatalogError as E;
        let io = |e: &std::io::Error| std::io::Error::new(e.kind(), e.to_string());
        match self {
            E::Read { path, source } => E::Read {
                path: path.clone(),
                source: io(source),
            },
            E::Write { path, source } => E::Write {
                path: path.clone(),
                source: io(source),
            },
            E::Invalid { path, problems } => E::Invalid {
                path: path.clone(),
                problems: problems.clone(),
            },
            E::EmbedderMismatch { path, why } => E::EmbedderMismatch {
                path: path.clone(),
                why: why.clone(),
            },
            E::Locked { path } => E::Locked { path: path.clone() },
            E::NoSuchVersion(v) => E::NoSuchVersion(v.clone()),
            E::BadVersionId(v) => E::BadVersionId(v.clone()),
            E::NoSuchItem(v) => E::NoSuchItem(v.clone()),
            E::NothingToRollBack => E::NothingToRollBack,
            E::NoSuchJob(v) => E::NoSuchJob(v.clone()),
            E::Busy { job } => E::Busy { job: job.clone() },
            E::UploadInProgress => E::UploadInProgress,
            E::UploadTooLarge { limit } => E::UploadTooLarge { limit: *limit },
            E::UploadStalled { waited } => E::UploadStalled { waited: *waited },
            E::UploadInterrupted(v) => E::UploadInterrupted(v.clone()),
            E::EmptyUpload => E::EmptyUpload,
            E::NoCatalog { data_dir, locked } => E::NoCatalog {
                data_dir: data_dir.clone(),
                locked: *locked,
            },
            E::NotStored(v) => E::NotStored(v.clone()),
            E::NoEmbedder => E::NoEmbedder,
            E::EmbedderStart(v) => E::EmbedderStart(v.clone()),
            E::Embedding { item, why } => E::Embedding {
                item: item.clone(),
                why: why.clone(),
            },
            E::StoredImage { item, path, why } => E::StoredImage {
                item: item.clone(),
                path: path.clone(),
                why: why.clone(),
            },
            E::Threads(v) => E::Threads(v.clone()),
            E::ChannelState { path, why } => E::ChannelState {
                path: path.clone(),
                why: why.clone(),
            },
        }
    }
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
    /// The stored version's id (e.g. `v0007`), or the bundle's label when not stored.
    pub version: String,
    /// What staff called it (the bundle manifest's `version`).
    pub label: String,
    /// The folder whose `images/` holds the product images.
    pub root: PathBuf,
    pub items: Vec<Item>,
    pub dim: usize,
    /// What made the vectors (`None`: a folder without a manifest).
    pub embedder: Option<EmbedderFingerprint>,
    groups: BTreeMap<String, GroupIndex>,
    by_id: HashMap<String, usize>,
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

/// What a catalog is, apart from its items and indexes.
#[derive(Debug, Clone)]
pub struct CatalogMeta {
    pub version: String,
    pub label: String,
    pub root: PathBuf,
    pub dim: usize,
    pub embedder: Option<EmbedderFingerprint>,
}

/// One change to a catalog's items.
#[derive(Debug, Clone)]
pub enum Change {
    /// Adds the item, or replaces the item with the same id.
    Put {
        item: Item,
        vector: Vec<f32>,
    },
    Remove {
        id: String,
    },
}

impl Catalog {
    /// A catalog with no items, version "none": what is searched until the first one is loaded.
    pub fn empty(root: PathBuf, dim: usize, params: &IndexParams) -> Self {
        Self::from_items("none".into(), root, vec![], vec![], dim, None, params)
    }

    /// Builds the indexes for items whose embeddings are already checked (unit length, `dim`).
    pub fn from_items(
        version: String,
        root: PathBuf,
        items: Vec<Item>,
        vectors: Vec<Vec<f32>>,
        dim: usize,
        embedder: Option<EmbedderFingerprint>,
        params: &IndexParams,
    ) -> Self {
        let meta = CatalogMeta {
            label: version.clone(),
            version,
            root,
            dim,
            embedder,
        };
        Self::build(meta, items, vectors, params, &|_, _| {})
    }

    /// Builds one graph per group, group after group, each insert spread over the calling
    /// thread's rayon pool. `progress` gets (vectors inserted, total).
    pub fn build(
        meta: CatalogMeta,
        items: Vec<Item>,
        vectors: Vec<Vec<f32>>,
        params: &IndexParams,
        progress: &dyn Fn(usize, usize),
    ) -> Self {
        let mut by_group: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, it) in items.iter().enumerate() {
            by_group.entry(it.group.clone()).or_default().push(i);
        }
        let total = items.len();
        let mut vectors: Vec<Option<Vec<f32>>> = vectors.into_iter().map(Some).collect();
        let mut done = 0;
        let mut groups = BTreeMap::new();
        for (g, members) in by_group {
            let vecs: Vec<Vec<f32>> = members
                .iter()
                .map(|&i| vectors[i].take().unwrap_or_default())
                .collect();
            let base = done;
            let index = GroupIndex::build_with_progress(members, &vecs, params, &|n| {
                progress(base + n, total)
            });
            done += vecs.len();
            groups.insert(g, index);
        }
        Self::from_groups(meta, items, groups)
    }

    /// Puts a catalog together from already built (or reloaded) groups.
    pub fn from_groups(
        meta: CatalogMeta,
        items: Vec<Item>,
        groups: BTreeMap<String, GroupIndex>,
    ) -> Self {
        let by_id = items
            .iter()
            .enumerate()
            .map(|(i, it)| (it.id.clone(), i))
            .collect();
        Self {
            version: meta.version,
            label: meta.label,
            root: meta.root,
            items,
            dim: meta.dim,
            embedder: meta.embedder,
            groups,
            by_id,
        }
    }

    pub fn meta(&self) -> CatalogMeta {
        CatalogMeta {
            version: self.version.clone(),
            label: self.label.clone(),
            root: self.root.clone(),
            dim: self.dim,
            embedder: self.embedder.clone(),
        }
    }

    /// Loads a catalog folder (`manifest.json` optional, `items.jsonl` with inline embeddings or
    /// `embeddings.npy`). `expect` is the running embedder's fingerprint; a mismatch is refused.
    pub fn load(
        dir: &Path,
        expect: Option<&EmbedderFingerprint>,
        params: &IndexParams,
    ) -> Result<Self, CatalogError> {
        let b = bundle::read_bundle(dir, expect, &bundle::ReadOptions::default())?;
        let Some(vectors) = b.vectors else {
            return Err(CatalogError::Invalid {
                path: dir.into(),
                problems: vec![
                    "the bundle has no embeddings; import it (`vitrine catalog import`) so the appliance computes them".into(),
                ],
            });
        };
        let meta = CatalogMeta {
            version: b.manifest.version.clone(),
            label: b.manifest.version.clone(),
            root: dir.into(),
            dim: b.dim,
            embedder: b.manifest.embedder,
        };
        Ok(Self::build(meta, b.items, vectors, params, &|_, _| {}))
    }

    /// A new catalog with `changes` applied: kept items keep their order, put items go to the
    /// end. Unchanged graphs are shared; a group whose overlay or dead points grew too large is
    /// rebuilt (`progress` gets (inserted, total) of those rebuilds).
    pub fn apply(
        &self,
        meta: CatalogMeta,
        changes: Vec<Change>,
        params: &IndexParams,
        progress: &dyn Fn(usize, usize),
    ) -> Self {
        let mut gone: HashSet<usize> = HashSet::new();
        let mut puts: Vec<(Item, Vec<f32>)> = Vec::new();
        for c in changes {
            let id = match &c {
                Change::Put { item, .. } => item.id.clone(),
                Change::Remove { id } => id.clone(),
            };
            if let Some(&i) = self.by_id.get(&id) {
                gone.insert(i);
            }
            puts.retain(|(it, _)| it.id != id);
            if let Change::Put { item, vector } = c {
                puts.push((item, vector));
            }
        }
        let mut map: Vec<Option<usize>> = vec![None; self.items.len()];
        let mut items = Vec::with_capacity(self.items.len() + puts.len());
        for (i, it) in self.items.iter().enumerate() {
            if !gone.contains(&i) {
                map[i] = Some(items.len());
                items.push(it.clone());
            }
        }
        let mut added: BTreeMap<String, Vec<(usize, Vec<f32>)>> = BTreeMap::new();
        for (it, v) in puts {
            added
                .entry(it.group.clone())
                .or_default()
                .push((items.len(), v));
            items.push(it);
        }
        let remap = |i: usize| map.get(i).copied().flatten();
        let names: BTreeSet<String> = self.groups.keys().chain(added.keys()).cloned().collect();
        let mut groups = BTreeMap::new();
        for g in names {
            let extra = added.remove(&g).unwrap_or_default();
            let mut index = match self.groups.get(&g) {
                Some(old) => old.remap(&remap, extra),
                None => GroupIndex::default().remap(&remap, extra),
            };
            if index.wants_rebuild() {
                let n = index.len();
                index = index.rebuild(params, &|d| progress(d, n));
            }
            if !index.is_empty() {
                groups.insert(g, index);
            }
        }
        Self::from_groups(meta, items, groups)
    }

    pub fn groups(&self) -> impl Iterator<Item = (&str, usize)> {
        self.groups.iter().map(|(g, i)| (g.as_str(), i.len()))
    }

    pub fn group_indexes(&self) -> &BTreeMap<String, GroupIndex> {
        &self.groups
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

    /// Position of the item with this id.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    /// The file of a product image named by a URL path relative to `images/`; `None` for
    /// anything that could leave the folder (`..`, absolute paths, links) or does not exist.
    pub fn image_file(&self, rel: &str) -> Option<PathBuf> {
        let rel = items::safe_relative(rel)?;
        let path = self.root.join("images").join(rel);
        let meta = std::fs::symlink_metadata(&path).ok()?;
        meta.file_type().is_file().then_some(path)
    }
}

pub type SharedCatalog = Arc<arc_swap::ArcSwap<Catalog>>;

/// Debug builds only: when `VITRINE_CATALOG_PAUSE_AT` names this stage, say so on stdout and
/// stop here, so a test can SIGKILL the process at a known point of an import, or (with
/// `VITRINE_CATALOG_RESUME_FILE`) let it go on once that file exists, after doing something
/// in between. Release builds compile this to nothing.
pub fn failpoint(stage: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("VITRINE_CATALOG_PAUSE_AT").is_ok_and(|s| s == stage) {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "vitrine catalog paused at {stage}");
        let _ = out.flush();
        drop(out);
        let resume = std::env::var_os("VITRINE_CATALOG_RESUME_FILE").map(PathBuf::from);
        while !resume.as_ref().is_some_and(|f| f.exists()) {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = stage;
}
