//! Prebuilt indexes: the per-group HNSW dumps a box would build, built once at HQ
//! (`vitrine catalog publish --with-index`) and shipped inside the bundle, so a thousand boxes do
//! not each spend half a minute of CPU per 100,000 items on the same graphs.
//!
//! In the bundle they sit under `index/`, in the format a stored version keeps them
//! ([`super::persist`], [`GroupFiles`]): `g<N>.hnsw.graph` + `g<N>.hnsw.data` (the hnsw_rs dump),
//! `g<N>.members` (item positions, u32 little-endian), and `listing.json` saying what was built:
//! groups, point counts, a SHA-256 of each group's item ids, the embedder and the parameters.
//!
//! A box uses them only when they are provably this bundle's and as good as its own:
//! - the listing names this embedder, vector size, item count, and the box's own `M` and
//!   `ef_construction` (`ef_search` only affects queries, so it may differ);
//! - each group lists exactly the bundle's items of that group, in bundle order (members and the
//!   ids' digest);
//! - each dump is walked field by field before hnsw_rs reads it: hnsw_rs trusts its files, and a
//!   count in a hostile dump would make it allocate without bound, read out of bounds, or exit the
//!   process. Every count, id and link must be in range;
//! - the vectors in each dump are the bundle's vectors, bit for bit;
//! - 64 sampled queries find at least 90 % of what exact search finds (recall@10).
//!
//! Anything else, and the box builds the indexes as it always did, logging why and adding the
//! reason to the import's warnings. The dumps are native-endian with 8-byte `usize`s: x86-64 and
//! aarch64 boxes read each other's.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{BufReader, Read};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::items::{EmbedderFingerprint, MANIFEST_MAX};
use super::persist::Graph;
use super::store::GroupFiles;
use super::{Catalog, CatalogError, CatalogMeta, GroupIndex, IndexParams, Item};

/// The folder of a bundle holding its prebuilt indexes.
pub const INDEX_DIR: &str = "index";
/// The listing inside [`INDEX_DIR`].
pub const LISTING: &str = "listing.json";
pub const FORMAT: &str = "vitrine-prebuilt-index/1";

/// Queries in the recall spot-check, and the recall@10 they must reach.
pub const SPOT_QUERIES: usize = 64;
pub const SPOT_RECALL: f64 = 0.9;

/// `index/listing.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Listing {
    pub format: String,
    pub item_count: usize,
    pub dim: usize,
    pub embedder: EmbedderFingerprint,
    pub params: IndexParams,
    pub groups: Vec<PrebuiltGroup>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrebuiltGroup {
    #[serde(flatten)]
    pub files: GroupFiles,
    /// [`ids_digest`] of the group's items in member order.
    pub ids_sha256: String,
}

/// SHA-256 over the ids of `members` (positions into `items`), one id and a newline each.
pub fn ids_digest(items: &[Item], members: &[u32]) -> String {
    let mut h = Sha256::new();
    for &m in members {
        if let Some(it) = items.get(m as usize) {
            h.update(it.id.as_bytes());
        }
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// Each group's item positions in bundle order: what a box's own build puts in each graph.
fn expected_members(items: &[Item]) -> BTreeMap<String, Vec<u32>> {
    let mut by_group: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (i, it) in items.iter().enumerate() {
        by_group.entry(it.group.clone()).or_default().push(i as u32);
    }
    by_group
}

/// Builds the indexes a box with `params` would build for these items and writes them with their
/// listing under `dir/index/` (replacing what was there). HQ's side.
pub fn write(
    dir: &Path,
    items: Vec<Item>,
    vectors: Vec<Vec<f32>>,
    embedder: &EmbedderFingerprint,
    params: &IndexParams,
    progress: &dyn Fn(usize, usize),
) -> Result<Listing, CatalogError> {
    let index_dir = dir.join(INDEX_DIR);
    let werr = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CatalogError::Write { path, source }
    };
    if index_dir.exists() {
        std::fs::remove_dir_all(&index_dir).map_err(werr(&index_dir))?;
    }
    std::fs::create_dir_all(&index_dir).map_err(werr(&index_dir))?;
    let meta = CatalogMeta {
        version: "prebuilt".into(),
        label: "prebuilt".into(),
        root: dir.into(),
        dim: embedder.dim,
        embedder: Some(embedder.clone()),
    };
    // The box's own build, so the graphs are the ones it would have made.
    let catalog = Catalog::build(meta, items, vectors, params, progress);
    let mut groups = Vec::new();
    for (n, (name, g)) in catalog.group_indexes().iter().enumerate() {
        let file = format!("g{n}");
        let graph = match g.graph() {
            Some(graph) => Some(graph.dump(&index_dir, &file)?),
            None => None,
        };
        let members: Vec<u8> = g.members().iter().flat_map(|m| m.to_le_bytes()).collect();
        let p = index_dir.join(format!("{file}.members"));
        std::fs::write(&p, members).map_err(werr(&p))?;
        groups.push(PrebuiltGroup {
            ids_sha256: ids_digest(&catalog.items, g.members()),
            files: GroupFiles {
                name: name.clone(),
                graph,
                points: g.members().len(),
                overlay: vec![],
                file,
            },
        });
    }
    let listing = Listing {
        format: FORMAT.into(),
        item_count: catalog.items.len(),
        dim: embedder.dim,
        embedder: embedder.clone(),
        params: *params,
        groups,
    };
    let p = index_dir.join(LISTING);
    let json = serde_json::to_vec_pretty(&listing).map_err(|e| CatalogError::Write {
        path: p.clone(),
        source: std::io::Error::other(e),
    })?;
    std::fs::write(&p, json).map_err(werr(&p))?;
    Ok(listing)
}

/// The most a prebuilt-index member of an archive may unpack to, for a bundle declaring `rows`
/// items of `dim` values; `None` when `rel` is not one. Generous for any valid `M` (up to 256, so
/// a box whose `M` differs still unpacks the bundle and rebuilds); the archive's total limit
/// applies on top.
pub fn member_bound(rel: &Path, rows: u64, dim: u64) -> Option<u64> {
    let in_index = rel.parent()?.file_name()? == INDEX_DIR && rel.components().count() <= 3;
    if !in_index {
        return None;
    }
    let name = rel.file_name()?.to_str()?;
    let bound = if name == LISTING {
        MANIFEST_MAX.saturating_add(rows.saturating_mul(512))
    } else if name.ends_with(".members") {
        rows.saturating_mul(4)
    } else if name.ends_with(".hnsw.data") {
        // Header, then per point: magic, id, length, the vector.
        rows.saturating_mul(20 + 4 * dim).saturating_add(64)
    } else if name.ends_with(".hnsw.graph") {
        // Per point: magic, ids, 16 neighbour counts, and at most 3·M links of 17 bytes (2·M on
        // layer 0, the upper layers' M links only on the few points that reach them).
        rows.saturating_mul(145 + 17 * 3 * 256).saturating_add(4096)
    } else {
        return None;
    };
    Some(bound)
}

/// What became of a bundle's prebuilt indexes at import.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The bundle has none: built as always.
    Absent,
    /// Loaded instead of built.
    Loaded { recall: f64 },
    /// Present but not used, and why: built as always.
    Rebuilt { why: String },
}

impl Outcome {
    /// A line for the import's warnings when the bundle's indexes were refused.
    pub fn warning(&self) -> Option<String> {
        match self {
            Outcome::Rebuilt { why } => Some(format!(
                "the bundle's prebuilt indexes were not used ({why}); they were built here instead"
            )),
            _ => None,
        }
    }
}

/// The import's index step: the bundle's prebuilt indexes when they pass every check, else the
/// graphs built here as always. Runs on the caller's rayon pool; `progress` as [`Catalog::build`].
pub fn build_or_load(
    dir: &Path,
    meta: CatalogMeta,
    items: Vec<Item>,
    vectors: Vec<Vec<f32>>,
    params: &IndexParams,
    progress: &dyn Fn(usize, usize),
) -> (Catalog, Outcome) {
    if !dir.join(INDEX_DIR).join(LISTING).is_file() {
        return (
            Catalog::build(meta, items, vectors, params, progress),
            Outcome::Absent,
        );
    }
    match load(dir, &meta, &items, &vectors, params) {
        Ok((groups, recall)) => {
            tracing::info!(
                groups = groups.len(),
                items = items.len(),
                recall_at_10 = recall,
                "catalog indexes loaded from the bundle's prebuilt dumps"
            );
            progress(items.len(), items.len());
            (
                Catalog::from_groups(meta, items, groups),
                Outcome::Loaded { recall },
            )
        }
        Err(why) => {
            tracing::warn!(%why, "the bundle's prebuilt indexes cannot be used; building them here");
            (
                Catalog::build(meta, items, vectors, params, progress),
                Outcome::Rebuilt { why },
            )
        }
    }
}

/// Reads and checks the bundle's prebuilt groups; `Err` says why they cannot be used.
fn load(
    dir: &Path,
    meta: &CatalogMeta,
    items: &[Item],
    vectors: &[Vec<f32>],
    params: &IndexParams,
) -> Result<(BTreeMap<String, GroupIndex>, f64), String> {
    let index_dir = dir.join(INDEX_DIR);
    let listing = read_listing(&index_dir, items.len() as u64)?;
    check_listing(&listing, meta, items.len(), params)?;
    let expected = expected_members(items);
    let listed: BTreeSet<&str> = listing
        .groups
        .iter()
        .map(|g| g.files.name.as_str())
        .collect();
    let wanted: BTreeSet<&str> = expected.keys().map(String::as_str).collect();
    if listed != wanted || listed.len() != listing.groups.len() {
        return Err(format!(
            "the listing's groups {listed:?} are not the bundle's {wanted:?}"
        ));
    }
    let groups: Vec<(String, GroupIndex)> = listing
        .groups
        .par_iter()
        .map(|g| {
            let members = &expected[&g.files.name];
            load_group(&index_dir, g, members, items, vectors, meta.dim, params)
                .map(|gi| (g.files.name.clone(), gi))
                .map_err(|why| format!("group '{}': {why}", g.files.name))
        })
        .collect::<Result<_, _>>()?;
    let groups: BTreeMap<String, GroupIndex> = groups.into_iter().collect();
    let recall = catch_unwind(AssertUnwindSafe(|| {
        spot_recall(&groups, &expected, items, vectors, params.ef_search)
    }))
    .map_err(|_| "searching them failed".to_string())?;
    if recall < SPOT_RECALL {
        return Err(format!(
            "recall@10 on {SPOT_QUERIES} sampled queries is {recall:.3}, below {SPOT_RECALL}"
        ));
    }
    Ok((groups, recall))
}

fn read_listing(index_dir: &Path, rows: u64) -> Result<Listing, String> {
    let p = index_dir.join(LISTING);
    let max = member_bound(Path::new("index/listing.json"), rows, 0).unwrap_or(MANIFEST_MAX);
    let f = std::fs::File::open(&p).map_err(|e| format!("cannot read {LISTING}: {e}"))?;
    let mut bytes = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {LISTING}: {e}"))?;
    if bytes.len() as u64 > max {
        return Err(format!("{LISTING} is larger than {max} bytes"));
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("{LISTING} is not a listing: {e}"))
}

fn check_listing(
    l: &Listing,
    meta: &CatalogMeta,
    items: usize,
    params: &IndexParams,
) -> Result<(), String> {
    if l.format != FORMAT {
        return Err(format!("format '{}' is not '{FORMAT}'", l.format));
    }
    if meta.embedder.as_ref() != Some(&l.embedder) || l.dim != meta.dim {
        return Err(format!(
            "they were built for embedder {} ({}-d), not this box's",
            l.embedder.sha256, l.dim
        ));
    }
    if l.item_count != items {
        return Err(format!(
            "they index {} items, the bundle has {items}",
            l.item_count
        ));
    }
    let (p, q) = (&l.params, params);
    if (p.max_connections, p.ef_construction) != (q.max_connections, q.ef_construction) {
        return Err(format!(
            "they were built with M = {}, ef_construction = {}; this box builds with M = {}, ef_construction = {} (catalog.index)",
            p.max_connections, p.ef_construction, q.max_connections, q.ef_construction
        ));
    }
    Ok(())
}

/// A file stem the listing may name: no path, nothing hidden.
fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn load_group(
    index_dir: &Path,
    g: &PrebuiltGroup,
    members: &[u32],
    items: &[Item],
    vectors: &[Vec<f32>],
    dim: usize,
    params: &IndexParams,
) -> Result<GroupIndex, String> {
    let f = &g.files;
    let Some(graph_name) = f.graph.as_deref() else {
        return Err("no graph".into());
    };
    if !plain_name(&f.file) || !plain_name(graph_name) {
        return Err(format!(
            "file names '{}', '{graph_name}' are not plain",
            f.file
        ));
    }
    if !f.overlay.is_empty() {
        return Err("a prebuilt group has no overlay".into());
    }
    if f.points != members.len() {
        return Err(format!(
            "{} points listed, the bundle has {} items in it",
            f.points,
            members.len()
        ));
    }
    let p = index_dir.join(format!("{}.members", f.file));
    let len = std::fs::metadata(&p)
        .map_err(|e| format!("{}: {e}", p.display()))?
        .len();
    if len != members.len() as u64 * 4 {
        return Err(format!(
            "{}.members has {len} bytes, not {}",
            f.file,
            members.len() * 4
        ));
    }
    let raw = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    let listed: Vec<u32> = raw
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if listed != members {
        return Err("its members are not the bundle's items of that group, in bundle order".into());
    }
    if ids_digest(items, members) != g.ids_sha256 {
        return Err("the digest of its item ids does not match the bundle's".into());
    }
    check_dump(
        index_dir,
        graph_name,
        members.len(),
        dim,
        params.max_connections,
    )?;
    let graph =
        Graph::load(index_dir, graph_name, members.len(), dim).map_err(|e| e.to_string())?;
    let held = graph.vectors();
    if let Some(j) = (0..members.len()).find(|&j| held[j] != vectors[members[j] as usize]) {
        return Err(format!(
            "the dump's vector for item '{}' is not the bundle's",
            items[members[j] as usize].id
        ));
    }
    GroupIndex::from_parts(Some(Arc::new(graph)), listed, vec![], items.len())
}

/// Recall@10 of `groups` against exact search over the bundle's vectors, on [`SPOT_QUERIES`]
/// noisy copies of items drawn with a fixed seed (reproducible from the item count).
fn spot_recall(
    groups: &BTreeMap<String, GroupIndex>,
    expected: &BTreeMap<String, Vec<u32>>,
    items: &[Item],
    vectors: &[Vec<f32>],
    ef: usize,
) -> f64 {
    use super::synth::{Rng, perturbed};
    if items.is_empty() {
        return 1.0;
    }
    let mut rng = Rng::new(0x5107_C4EC ^ items.len() as u64);
    let queries: Vec<(usize, Vec<f32>)> = (0..SPOT_QUERIES)
        .map(|_| {
            let i = rng.below(items.len());
            (i, perturbed(&vectors[i], 0.75, &mut rng))
        })
        .collect();
    let (found, total) = queries
        .par_iter()
        .map(|(i, q)| {
            let g = &items[*i].group;
            let members = &expected[g];
            let k = 10.min(members.len());
            let mut exact: Vec<(f32, usize)> = members
                .iter()
                .map(|&m| (super::index::dot(&vectors[m as usize], q), m as usize))
                .collect();
            exact.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let truth: HashSet<usize> = exact.iter().take(k).map(|e| e.1).collect();
            let hits = groups[g].search(q, k, ef);
            let n = hits.iter().filter(|h| truth.contains(&h.item)).count();
            (n, k)
        })
        .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    found as f64 / total.max(1) as f64
}

/// Walks an hnsw_rs dump (`<name>.hnsw.graph` and `.hnsw.data`, Full mode, f32, `DistDot`)
/// checking every count, id and link against what this group must hold, before hnsw_rs reads
/// it (see the module's header for why).
pub fn check_dump(
    dir: &Path,
    name: &str,
    points: usize,
    dim: usize,
    max_connections: usize,
) -> Result<(), String> {
    let open = |ext: &str| -> Result<Dump, String> {
        let p: PathBuf = dir.join(format!("{name}.{ext}"));
        let f = std::fs::File::open(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(Dump {
            r: BufReader::with_capacity(1 << 16, f),
            what: format!("{name}.{ext}"),
        })
    };
    let mut graph = open("hnsw.graph")?;
    let mut data = open("hnsw.data")?;
    let layers = check_description(&mut graph, points, dim, max_connections)?;
    if data.u32()? != MAGIC_DATA || data.usize()? != dim {
        return Err(data.bad("header is not this group's"));
    }
    let mut counts = vec![0usize; layers];
    // The highest rank each layer's links name; checked once every layer's size is known.
    let mut max_ref: Vec<Option<u32>> = vec![None; layers];
    let mut seen = vec![false; points];
    let mut loaded = 0usize;
    let link_max = 2 * max_connections;
    for (l, count) in counts.iter_mut().enumerate() {
        if graph.u32()? != MAGIC_LAYER {
            return Err(graph.bad("a layer's magic is wrong"));
        }
        let n = graph.usize()?;
        if n > points - loaded {
            return Err(graph.bad("its layers hold more points than the group"));
        }
        *count = n;
        loaded += n;
        for r in 0..n {
            if graph.u32()? != MAGIC_POINT {
                return Err(graph.bad("a point's magic is wrong"));
            }
            let id = graph.usize()?;
            if id >= points || std::mem::replace(&mut seen[id], true) {
                return Err(graph.bad("a point id is out of range or repeated"));
            }
            if graph.u8()? as usize != l || graph.i32()? as i64 != r as i64 {
                return Err(graph.bad("a point's place is not where it lies"));
            }
            for _ in 0..NB_LAYER_MAX {
                let links = graph.usize()?;
                if links > link_max {
                    return Err(graph.bad("a point has more links than M allows"));
                }
                for _ in 0..links {
                    let (d, layer, rank) = (graph.usize()?, graph.u8()? as usize, graph.i32()?);
                    let _distance = graph.f32()?;
                    if d >= points || layer >= layers || rank < 0 {
                        return Err(graph.bad("a link points outside the graph"));
                    }
                    let m = &mut max_ref[layer];
                    *m = Some(m.map_or(rank as u32, |x| x.max(rank as u32)));
                }
            }
            if data.u32()? != MAGIC_DATA || data.u64()? != id as u64 {
                return Err(data.bad("a vector is not the point's"));
            }
            if data.u64()? != dim as u64 * 4 {
                return Err(data.bad("a vector has the wrong length"));
            }
            data.skip(dim as u64 * 4)?;
        }
    }
    if loaded != points {
        return Err(graph.bad("not every point is in the graph"));
    }
    if (0..layers).any(|l| max_ref[l].is_some_and(|r| r as usize >= counts[l])) {
        return Err(graph.bad("a link points past the end of its layer"));
    }
    let (entry, layer, rank) = (graph.usize()?, graph.u8()? as usize, graph.i32()?);
    if entry >= points || layer >= layers || rank < 0 || rank as usize >= counts[layer] {
        return Err(graph.bad("the entry point is outside the graph"));
    }
    Ok(())
}

// hnsw_rs 0.3.5's dump format (hnswio.rs); pinned with `=` in Cargo.toml.
const MAGIC_DESCR_4: u32 = 0x002a_6779;
const MAGIC_LAYER: u32 = 0x000a_676f;
const MAGIC_POINT: u32 = 0x000a_678f;
const MAGIC_DATA: u32 = 0xa67f_0000;
const NB_LAYER_MAX: usize = 16;

/// The graph file's description; returns how many layers the point indexation declares.
fn check_description(
    g: &mut Dump,
    points: usize,
    dim: usize,
    max_connections: usize,
) -> Result<usize, String> {
    if g.u32()? != MAGIC_DESCR_4 || g.u8()? != 1 {
        return Err(g.bad("not a full hnsw_rs dump of this version"));
    }
    if g.u8()? != max_connections as u8 {
        return Err(g.bad("its M is not this box's"));
    }
    let scale = g.f64()?;
    if !(scale.is_finite() && scale > 0.0) || g.u8()? as usize != NB_LAYER_MAX {
        return Err(g.bad("its level parameters are invalid"));
    }
    let _ef = g.usize()?;
    if g.usize()? != points || g.usize()? != dim {
        return Err(g.bad("its point count or vector size is not this group's"));
    }
    for want in [std::any::type_name::<hnsw_rs::prelude::DistDot>(), "f32"] {
        let n = g.usize()?;
        if n != want.len() {
            return Err(g.bad("its distance or data type is not this box's"));
        }
        let mut s = vec![0u8; n];
        g.fill(&mut s)?;
        if s != want.as_bytes() {
            return Err(g.bad("its distance or data type is not this box's"));
        }
    }
    let layers = g.u8()? as usize;
    if layers == 0 || layers > NB_LAYER_MAX {
        return Err(g.bad("its layer count is invalid"));
    }
    Ok(layers)
}

/// A dump file read field by field.
struct Dump {
    r: BufReader<std::fs::File>,
    what: String,
}

impl Dump {
    fn bad(&self, why: &str) -> String {
        format!("{}: {why}", self.what)
    }
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), String> {
        self.r
            .read_exact(buf)
            .map_err(|_| self.bad("it ends too early"))
    }
    fn u8(&mut self) -> Result<u8, String> {
        let mut b = [0u8; 1];
        self.fill(&mut b)?;
        Ok(b[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        let mut b = [0u8; 4];
        self.fill(&mut b)?;
        Ok(u32::from_ne_bytes(b))
    }
    fn i32(&mut self) -> Result<i32, String> {
        let mut b = [0u8; 4];
        self.fill(&mut b)?;
        Ok(i32::from_ne_bytes(b))
    }
    fn f32(&mut self) -> Result<f32, String> {
        let mut b = [0u8; 4];
        self.fill(&mut b)?;
        Ok(f32::from_ne_bytes(b))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let mut b = [0u8; 8];
        self.fill(&mut b)?;
        Ok(u64::from_ne_bytes(b))
    }
    fn f64(&mut self) -> Result<f64, String> {
        let mut b = [0u8; 8];
        self.fill(&mut b)?;
        Ok(f64::from_ne_bytes(b))
    }
    fn usize(&mut self) -> Result<usize, String> {
        Ok(self.u64()? as usize)
    }
    fn skip(&mut self, n: u64) -> Result<(), String> {
        let copied = std::io::copy(&mut (&mut self.r).take(n), &mut std::io::sink())
            .map_err(|_| self.bad("it cannot be read"))?;
        if copied != n {
            return Err(self.bad("it ends too early"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::bundle::{ReadOptions, read_bundle};
    use crate::catalog::synth::{self, Embeddings};

    fn fp() -> EmbedderFingerprint {
        EmbedderFingerprint {
            sha256: "synthetic".into(),
            dim: 16,
            recipe: crate::vision::fusion::CNN_ONLY.into(),
        }
    }

    /// A bundle folder of `n` items with its prebuilt indexes; returns its items and vectors.
    fn bundle_with_index(dir: &Path, n: usize, seed: u64) -> (Vec<Item>, Vec<Vec<f32>>) {
        synth::write_bundle(dir, "p", n, 4, &fp(), Embeddings::Npy, "v1", seed).unwrap();
        let b = read_bundle(dir, Some(&fp()), &ReadOptions::default()).unwrap();
        let (items, vectors) = (b.items, b.vectors.unwrap());
        write(
            dir,
            items.clone(),
            vectors.clone(),
            &fp(),
            &IndexParams::default(),
            &|_, _| {},
        )
        .unwrap();
        (items, vectors)
    }

    fn meta(dir: &Path) -> CatalogMeta {
        CatalogMeta {
            version: "v0001".into(),
            label: "v1".into(),
            root: dir.into(),
            dim: 16,
            embedder: Some(fp()),
        }
    }

    fn outcome(dir: &Path, items: &[Item], vectors: &[Vec<f32>], params: &IndexParams) -> Outcome {
        let (c, o) = build_or_load(
            dir,
            meta(dir),
            items.to_vec(),
            vectors.to_vec(),
            params,
            &|_, _| {},
        );
        // Whatever happened, the catalog serves every item.
        assert_eq!(c.groups().map(|(_, n)| n).sum::<usize>(), items.len());
        o
    }

    fn rebuilt_because(o: Outcome) -> String {
        match o {
            Outcome::Rebuilt { why } => why,
            other => panic!("expected a rebuild, got {other:?}"),
        }
    }

    #[test]
    fn matching_prebuilt_indexes_are_loaded_and_search_like_a_fresh_build() {
        let dir = tempfile::tempdir().unwrap();
        let (items, vectors) = bundle_with_index(dir.path(), 1500, 5);
        let (c, o) = build_or_load(
            dir.path(),
            meta(dir.path()),
            items.clone(),
            vectors.clone(),
            &IndexParams::default(),
            &|_, _| {},
        );
        let Outcome::Loaded { recall } = o else {
            panic!("not loaded: {o:?}");
        };
        assert!(recall >= SPOT_RECALL, "{recall}");
        assert!(o_warning_is_none(&Outcome::Loaded { recall }));
        // An item finds itself first in its group.
        let i = 777;
        let hits = c.search(&items[i].group, &vectors[i], 5, 64);
        assert_eq!(hits[0].item, i);
        // Without a listing, the bundle is simply built.
        std::fs::remove_file(dir.path().join("index/listing.json")).unwrap();
        assert_eq!(
            outcome(dir.path(), &items, &vectors, &IndexParams::default()),
            Outcome::Absent
        );
    }

    fn o_warning_is_none(o: &Outcome) -> bool {
        o.warning().is_none()
    }

    #[test]
    fn another_m_or_embedder_is_rebuilt_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let (items, vectors) = bundle_with_index(dir.path(), 300, 6);
        let other = IndexParams {
            max_connections: 24,
            ..Default::default()
        };
        let why = rebuilt_because(outcome(dir.path(), &items, &vectors, &other));
        assert!(why.contains("M = 16") && why.contains("M = 24"), "{why}");
        // ef_search is a query setting: a box with another one still loads them.
        let searchy = IndexParams {
            ef_search: 256,
            ..Default::default()
        };
        assert!(matches!(
            outcome(dir.path(), &items, &vectors, &searchy),
            Outcome::Loaded { .. }
        ));
        let p = dir.path().join("index/listing.json");
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, text.replace("\"synthetic\"", "\"another-model\"")).unwrap();
        let o = outcome(dir.path(), &items, &vectors, &IndexParams::default());
        assert!(o.warning().unwrap().contains("another-model"), "{o:?}");
    }

    fn edit_listing(dir: &Path, f: impl FnOnce(&mut Listing)) {
        let p = dir.join("index/listing.json");
        let mut l: Listing = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        f(&mut l);
        std::fs::write(&p, serde_json::to_vec(&l).unwrap()).unwrap();
    }

    #[test]
    fn a_listing_that_lies_about_its_items_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let (items, vectors) = bundle_with_index(dir.path(), 400, 7);
        let params = IndexParams::default();
        let original = std::fs::read(dir.path().join("index/listing.json")).unwrap();
        let restore = || std::fs::write(dir.path().join("index/listing.json"), &original).unwrap();

        edit_listing(dir.path(), |l| l.groups[0].ids_sha256 = "0".repeat(64));
        let why = rebuilt_because(outcome(dir.path(), &items, &vectors, &params));
        assert!(why.contains("digest"), "{why}");
        restore();

        edit_listing(dir.path(), |l| l.groups[1].files.points += 1);
        let why = rebuilt_because(outcome(dir.path(), &items, &vectors, &params));
        assert!(why.contains("points listed"), "{why}");
        restore();

        // Two groups' files swapped: counts differ, or the members do.
        edit_listing(dir.path(), |l| {
            let (a, b) = (
                l.groups[0].files.file.clone(),
                l.groups[1].files.file.clone(),
            );
            l.groups[0].files.file = b;
            l.groups[1].files.file = a;
        });
        rebuilt_because(outcome(dir.path(), &items, &vectors, &params));
        restore();

        edit_listing(dir.path(), |l| {
            l.groups[0].files.file = "../../etc/passwd".into()
        });
        let why = rebuilt_because(outcome(dir.path(), &items, &vectors, &params));
        assert!(why.contains("not plain"), "{why}");
        restore();

        edit_listing(dir.path(), |l| {
            l.groups.pop();
        });
        let why = rebuilt_because(outcome(dir.path(), &items, &vectors, &params));
        assert!(why.contains("groups"), "{why}");
        restore();
        assert!(matches!(
            outcome(dir.path(), &items, &vectors, &params),
            Outcome::Loaded { .. }
        ));
    }

    #[test]
    fn graphs_of_other_vectors_with_the_right_counts_are_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let (items, vectors) = bundle_with_index(dir.path(), 400, 8);
        // Same items, other vectors: every count and id matches, the data does not.
        let other = tempfile::tempdir().unwrap();
        let moved: Vec<Vec<f32>> = vectors
            .iter()
            .map(|v| v.iter().rev().copied().collect())
            .collect();
        write(
            other.path(),
            items.clone(),
            moved,
            &fp(),
            &IndexParams::default(),
            &|_, _| {},
        )
        .unwrap();
        for e in std::fs::read_dir(other.path().join("index"))
            .unwrap()
            .flatten()
        {
            if e.file_name().to_string_lossy().contains(".hnsw.") {
                std::fs::copy(e.path(), dir.path().join("index").join(e.file_name())).unwrap();
            }
        }
        let why = rebuilt_because(outcome(
            dir.path(),
            &items,
            &vectors,
            &IndexParams::default(),
        ));
        assert!(why.contains("vector for item"), "{why}");
    }

    /// Offset of a field in a fresh dump's graph file: the description's fixed part, the names.
    fn first_layer_count_offset() -> usize {
        let dist = std::any::type_name::<hnsw_rs::prelude::DistDot>().len();
        (4 + 1 + 1 + 8 + 1 + 8 + 8 + 8) + (8 + dist) + (8 + 3) + 1 + 4
    }

    #[test]
    fn hostile_dumps_are_refused_before_hnsw_rs_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let (items, vectors) = bundle_with_index(dir.path(), 300, 9);
        let params = IndexParams::default();
        let graph = dir.path().join("index/g0.hnsw.graph");
        let data = dir.path().join("index/g0.hnsw.data");
        let (g0, d0) = (
            std::fs::read(&graph).unwrap(),
            std::fs::read(&data).unwrap(),
        );

        // A layer claiming 2^62 points: hnsw_rs would try to allocate them.
        let mut g = g0.clone();
        let at = first_layer_count_offset();
        g[at..at + 8].copy_from_slice(&(1u64 << 62).to_ne_bytes());
        std::fs::write(&graph, &g).unwrap();
        let why = rebuilt_because(outcome(dir.path(), &items, &vectors, &params));
        assert!(why.contains("more points"), "{why}");
        std::fs::write(&graph, &g0).unwrap();

        // A vector claiming 2^40 bytes: hnsw_rs would allocate, then read past it.
        let mut d = d0.clone();
        d[24..32].copy_from_slice(&(1u64 << 40).to_ne_bytes());
        std::fs::write(&data, &d).unwrap();
        let why = rebuilt_because(outcome(dir.path(), &items, &vectors, &params));
        assert!(why.contains("wrong length"), "{why}");

        // Cut short: hnsw_rs would exit the process.
        std::fs::write(&data, &d0[..d0.len() / 2]).unwrap();
        let why = rebuilt_because(outcome(dir.path(), &items, &vectors, &params));
        assert!(why.contains("ends too early"), "{why}");
        std::fs::write(&data, &d0).unwrap();

        // Every single-byte change in the graph's first kilobytes is refused or harmless.
        for at in (0..g0.len().min(1024)).step_by(7) {
            let mut g = g0.clone();
            g[at] ^= 0x5a;
            std::fs::write(&graph, &g).unwrap();
            let _ = outcome(dir.path(), &items, &vectors, &params);
        }
        std::fs::write(&graph, &g0).unwrap();
        assert!(matches!(
            outcome(dir.path(), &items, &vectors, &params),
            Outcome::Loaded { .. }
        ));
    }

    #[test]
    fn unpack_bounds_cover_the_index_members_by_item_count() {
        let b = |p: &str| member_bound(Path::new(p), 100_000, 256);
        assert_eq!(b("index/g0.members"), Some(400_000));
        assert!(b("index/g0.hnsw.data").unwrap() >= 100_000 * 256 * 4);
        assert!(b("wrapper/index/g3.hnsw.graph").is_some());
        assert!(b("index/listing.json").is_some());
        assert_eq!(b("images/index/a.jpg"), None);
        assert_eq!(b("index/photo.jpg"), None);
        assert_eq!(b("a/b/index/g0.members"), None);
        // A real dump fits its bound.
        let dir = tempfile::tempdir().unwrap();
        let (items, _) = bundle_with_index(dir.path(), 500, 10);
        for e in std::fs::read_dir(dir.path().join("index"))
            .unwrap()
            .flatten()
        {
            let rel = Path::new("index").join(e.file_name());
            let bound = member_bound(&rel, items.len() as u64, 16).unwrap();
            let len = e.metadata().unwrap().len();
            assert!(len <= bound, "{}: {len} > {bound}", rel.display());
        }
    }
}
