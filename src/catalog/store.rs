//! Catalog versions on disk, under the data folder:
//!
//! ```text
//! data/LOCK                     held (flock) by the one process that may write
//! data/ACTIVE                   {"active": "v0007", "history": ["v0005", "v0006"]}
//! data/versions/v0007/          version.json, items.jsonl, index/<g>.hnsw.{graph,data},
//!                               index/<g>.members, index/<g>.overlay.npy, images/
//! data/versions/.tmp-v0008/     a version being written (moved to trash/ at start-up)
//! data/versions/.trash-v0001/   a version being deleted (moved to trash/ at start-up)
//! data/work/                    uploads and unpacked bundles (moved to trash/ at start-up)
//! data/trash/                   leftovers of interrupted writes, deleted once the daemon serves
//! ```
//!
//! Crash safety comes from two atomic renames. A version is written under a temporary name,
//! flushed (`syncfs`, then the folder), and only then renamed into place, so `versions/` never
//! holds a half-written version. `ACTIVE` is replaced by write-temp, fsync, rename, fsync-folder,
//! so it always names either the old or the new version. A power cut at any point therefore
//! leaves the previous state or the next one, never a broken one; leftovers are swept at start.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::items::EmbedderFingerprint;
use super::persist::Graph;
use super::{Catalog, CatalogError, CatalogMeta, GroupIndex, IndexParams, Item, failpoint};

pub const VERSION_FORMAT: &str = "vitrine-version/1";

/// `ACTIVE`: the version in use and the ones active before it (oldest first), for rollback.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActivePointer {
    pub active: String,
    #[serde(default)]
    pub history: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupFiles {
    pub name: String,
    /// Basename of the HNSW dump under `index/`, absent for a group with no graph yet.
    pub graph: Option<String>,
    pub points: usize,
    /// Positions of the items kept outside the graph (their vectors: `<file>.overlay.npy`).
    #[serde(default)]
    pub overlay: Vec<usize>,
    /// Stem of this group's files under `index/`.
    pub file: String,
}

/// `version.json`: what a stored version is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionInfo {
    pub format: String,
    pub id: String,
    pub label: String,
    pub created: String,
    /// Where it came from: "upload spring.tar.gz", "put item fm-12", "seed catalog/demo", …
    pub source: String,
    #[serde(default)]
    pub parent: Option<String>,
    pub item_count: usize,
    pub embedder: EmbedderFingerprint,
    pub index: IndexParams,
    pub groups: Vec<GroupFiles>,
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// One line of `vitrine catalog list` / `GET /api/catalog/versions`.
#[derive(Debug, Clone, Serialize)]
pub struct VersionSummary {
    pub id: String,
    pub label: String,
    pub created: String,
    pub source: String,
    pub items: usize,
    pub active: bool,
}

pub struct Store {
    root: PathBuf,
    /// Held while this process may write; `None` for a read-only view.
    _lock: Option<std::fs::File>,
}

fn werr(path: &Path) -> impl FnOnce(std::io::Error) -> CatalogError + '_ {
    move |source| CatalogError::Write {
        path: path.into(),
        source,
    }
}

fn rerr(path: &Path) -> impl FnOnce(std::io::Error) -> CatalogError + '_ {
    move |source| CatalogError::Read {
        path: path.into(),
        source,
    }
}

/// fsyncs a folder so the names created or renamed in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), CatalogError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(werr(dir))
}

/// Flushes everything written to the filesystem holding `path`: one call instead of an fsync per
/// image, which on 100,000 images would take minutes.
fn sync_filesystem(path: &Path) -> Result<(), CatalogError> {
    let f = std::fs::File::open(path).map_err(werr(path))?;
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: syncfs only reads the descriptor, which `f` keeps open for the call.
        if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
            return Err(werr(path)(std::io::Error::last_os_error()));
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        drop(f);
        // SAFETY: sync(2) takes no arguments and cannot fail.
        unsafe { libc::sync() };
    }
    Ok(())
}

/// Writes `bytes` to `path` so that a crash leaves the old content or the new, never a mix.
pub fn write_durable(path: &Path, bytes: &[u8], stage: Option<&str>) -> Result<(), CatalogError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp).map_err(werr(&tmp))?;
    f.write_all(bytes).map_err(werr(&tmp))?;
    f.sync_all().map_err(werr(&tmp))?;
    drop(f);
    if let Some(s) = stage {
        failpoint(s);
    }
    std::fs::rename(&tmp, path).map_err(werr(path))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// The number of a canonical version id (`v0007`, `v12345`: `v`, then the number zero-padded to
/// four digits), `None` for anything else. Only canonical ids name versions: an id is joined to
/// `versions/`, so `./v0007` or an absolute path would reach the same folder under another name,
/// and pruning, which compares names, would delete a version still in use.
fn version_number(id: &str) -> Option<u64> {
    let digits = id.strip_prefix('v')?;
    if digits.len() < 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    (format!("{n:04}") == digits).then_some(n)
}

/// Whether `id` is a version id as the store writes them (see [`version_number`]).
pub fn is_version_id(id: &str) -> bool {
    version_number(id).is_some()
}

/// Refuses anything but a canonical version id, naming the expected form.
pub fn check_version_id(id: &str) -> Result<(), CatalogError> {
    if is_version_id(id) {
        Ok(())
    } else {
        Err(CatalogError::BadVersionId(id.chars().take(200).collect()))
    }
}

/// `path` with `.` and `..` resolved textually (`..` at the root stays at the root).
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Where each item's image comes from when a version is written.
pub enum ImageSource<'a> {
    /// Files of a bundle folder (item `image` relative to it). `owned`: the folder is our own
    /// staging copy, so files may be moved rather than linked or copied.
    Bundle { dir: &'a Path, owned: bool },
    /// Per item, the file to take (an older version's file, or an upload's).
    Files(Vec<PathBuf>),
}

impl Store {
    /// Opens (creating) a data folder. `write`: take the lock and sweep leftovers of interrupted
    /// writes; fails with a clear message when another process holds it.
    pub fn open(root: &Path, write: bool) -> Result<Self, CatalogError> {
        let versions = root.join("versions");
        if write {
            std::fs::create_dir_all(&versions).map_err(werr(&versions))?;
            std::fs::create_dir_all(root.join("work")).map_err(werr(root))?;
        }
        let lock = if write {
            let p = root.join("LOCK");
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&p)
                .map_err(werr(&p))?;
            match f.try_lock() {
                Ok(()) => Some(f),
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(CatalogError::Locked { path: root.into() });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(werr(&p)(e)),
            }
        } else {
            None
        };
        let store = Self {
            root: root.into(),
            _lock: lock,
        };
        if write {
            store.sweep()?;
            store.repair_active()?;
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn writable(&self) -> bool {
        self._lock.is_some()
    }

    fn versions_dir(&self) -> PathBuf {
        self.root.join("versions")
    }

    pub fn version_dir(&self, id: &str) -> PathBuf {
        self.versions_dir().join(id)
    }

    /// A scratch folder for uploads and unpacked bundles; emptied at every start.
    pub fn work_dir(&self) -> PathBuf {
        self.root.join("work")
    }

    fn trash_dir(&self) -> PathBuf {
        self.root.join("trash")
    }

    /// Moves what interrupted writes left (temporary and half-deleted versions, uploads) into
    /// `trash/`. Renames only: start-up must not wait while a 50,000-image folder is deleted;
    /// [`Self::empty_trash`] deletes them once the daemon is ready.
    fn sweep(&self) -> Result<(), CatalogError> {
        let trash = self.trash_dir();
        std::fs::create_dir_all(&trash).map_err(werr(&trash))?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = self.versions_dir();
        let mut moved = 0;
        for e in std::fs::read_dir(&dir).map_err(rerr(&dir))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") || name.starts_with(".trash-") {
                let to = trash.join(format!("{}-{stamp}", name.trim_start_matches('.')));
                std::fs::rename(e.path(), &to).map_err(werr(&e.path()))?;
                moved += 1;
            }
        }
        let work = self.work_dir();
        if std::fs::read_dir(&work)
            .map_err(rerr(&work))?
            .next()
            .is_some()
        {
            std::fs::rename(&work, trash.join(format!("work-{stamp}"))).map_err(werr(&work))?;
            std::fs::create_dir_all(&work).map_err(werr(&work))?;
            moved += 1;
        }
        if moved > 0 {
            tracing::info!(
                leftovers = moved,
                "moved the leftovers of interrupted catalog writes to trash/; deleting them in the background"
            );
        }
        let _ = std::fs::remove_file(self.root.join("ACTIVE.tmp"));
        Ok(())
    }

    /// Deletes what [`Self::sweep`] moved to `trash/`; returns how many entries went.
    pub fn empty_trash(&self) -> usize {
        let trash = self.trash_dir();
        let Ok(entries) = std::fs::read_dir(&trash) else {
            return 0;
        };
        let started = std::time::Instant::now();
        let mut n = 0;
        for e in entries.flatten() {
            let p = e.path();
            let r = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            match r {
                Ok(()) => n += 1,
                Err(err) => {
                    tracing::warn!(path = %p.display(), error = %err, "cannot delete a leftover of an interrupted catalog write")
                }
            }
        }
        if n > 0 {
            tracing::info!(
                leftovers = n,
                took_ms = started.elapsed().as_millis() as u64,
                "deleted the leftovers of interrupted catalog writes"
            );
        }
        n
    }

    /// `ACTIVE` with every id in canonical form (see [`Self::canonical_pointer`]).
    pub fn read_active(&self) -> Result<Option<ActivePointer>, CatalogError> {
        Ok(self
            .read_active_raw()?
            .map(|raw| self.canonical_pointer(&raw)))
    }

    /// Rewrites an `ACTIVE` that names versions by non-canonical ids (older builds accepted
    /// `./v0002` from the staff API and stored it as is).
    fn repair_active(&self) -> Result<(), CatalogError> {
        let Some(raw) = self.read_active_raw()? else {
            return Ok(());
        };
        let fixed = self.canonical_pointer(&raw);
        // With no usable active id, loading falls back to the history and rewrites the file.
        if fixed != raw && !fixed.active.is_empty() {
            tracing::warn!(was = ?raw, now = ?fixed, "ACTIVE named catalog versions by non-canonical ids; rewritten");
            self.write_active(&fixed)?;
        }
        Ok(())
    }

    /// The version folder a stored id reaches, as a canonical id: `v0002` itself, or `./v0002`,
    /// `v0002/`, `../versions/v0002` or an absolute path to it as older builds stored them.
    /// `None` for a path to anywhere else.
    fn resolve_stored_id(&self, id: &str) -> Option<String> {
        if is_version_id(id) {
            return Some(id.into());
        }
        let versions = self.versions_dir();
        let joined = versions.join(id);
        let named = |p: &Path, dir: &Path| {
            p.file_name()
                .and_then(|n| n.to_str())
                .filter(|n| is_version_id(n) && p.parent() == Some(dir))
                .map(String::from)
        };
        named(&lexical(&joined), &lexical(&versions)).or_else(|| {
            // Through symbolic links: compare where both really are.
            let real = std::fs::canonicalize(&joined).ok()?;
            named(&real, &std::fs::canonicalize(&versions).ok()?)
        })
    }

    /// `raw` with its ids canonical; ids that reach no version folder are dropped (an unknown
    /// active one leaves `active` empty, so loading falls back to the history).
    fn canonical_pointer(&self, raw: &ActivePointer) -> ActivePointer {
        let active = self.resolve_stored_id(&raw.active).unwrap_or_else(|| {
            if !raw.active.is_empty() {
                tracing::error!(active = %raw.active, "ACTIVE names no catalog version folder; ignoring it");
            }
            String::new()
        });
        let mut history: Vec<String> = Vec::new();
        for h in &raw.history {
            match self.resolve_stored_id(h) {
                Some(id) if id != active && !history.contains(&id) => history.push(id),
                Some(_) => {}
                None => {
                    tracing::warn!(version = %h, "dropping a rollback entry that names no catalog version folder")
                }
            }
        }
        ActivePointer { active, history }
    }

    fn read_active_raw(&self) -> Result<Option<ActivePointer>, CatalogError> {
        let p = self.root.join("ACTIVE");
        match std::fs::read(&p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(rerr(&p)(e)),
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| CatalogError::Invalid {
                    path: p,
                    problems: vec![e.to_string()],
                }),
        }
    }

    /// Version ids present on disk, oldest first.
    pub fn version_ids(&self) -> Result<Vec<String>, CatalogError> {
        let dir = self.versions_dir();
        let mut ids: Vec<(u64, String)> = match std::fs::read_dir(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(rerr(&dir)(e)),
            Ok(rd) => rd
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    version_number(&name).map(|n| (n, name))
                })
                .collect(),
        };
        ids.sort();
        Ok(ids.into_iter().map(|(_, id)| id).collect())
    }

    /// A stored version's `version.json`; `id` must be canonical.
    pub fn info(&self, id: &str) -> Result<VersionInfo, CatalogError> {
        check_version_id(id)?;
        let p = self.version_dir(id).join("version.json");
        let b = std::fs::read(&p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                CatalogError::NoSuchVersion(id.into())
            } else {
                rerr(&p)(e)
            }
        })?;
        let info: VersionInfo = serde_json::from_slice(&b).map_err(|e| CatalogError::Invalid {
            path: p.clone(),
            problems: vec![e.to_string()],
        })?;
        if info.id != id {
            return Err(CatalogError::Invalid {
                path: p,
                problems: vec![format!(
                    "it says it is version '{}' but lies in folder '{id}'",
                    info.id
                )],
            });
        }
        Ok(info)
    }

    pub fn list(&self) -> Result<Vec<VersionSummary>, CatalogError> {
        let active = self.read_active()?.map(|a| a.active);
        Ok(self
            .version_ids()?
            .into_iter()
            .filter_map(|id| match self.info(&id) {
                Ok(i) => Some(VersionSummary {
                    active: active.as_deref() == Some(i.id.as_str()),
                    id: i.id,
                    label: i.label,
                    created: i.created,
                    source: i.source,
                    items: i.item_count,
                }),
                Err(e) => {
                    tracing::warn!(version = %id, error = %e, "skipping an unreadable catalog version");
                    None
                }
            })
            .collect())
    }

    /// The id the next version gets: one more than any seen, temporary ones included.
    pub fn next_id(&self) -> Result<String, CatalogError> {
        let dir = self.versions_dir();
        let max = std::fs::read_dir(&dir)
            .map_err(rerr(&dir))?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let bare = name
                    .trim_start_matches(".tmp-")
                    .trim_start_matches(".trash-")
                    .to_string();
                version_number(&bare)
            })
            .max()
            .unwrap_or(0);
        Ok(format!("v{:04}", max + 1))
    }

    /// Writes `catalog` as version `info.id` (whose `groups` and `item_count` are filled in
    /// here) and returns the final info. The version appears in `versions/` complete or not at
    /// all.
    pub fn write_version(
        &self,
        catalog: &Catalog,
        mut info: VersionInfo,
        images: ImageSource<'_>,
    ) -> Result<VersionInfo, CatalogError> {
        let id = info.id.clone();
        let tmp = self.versions_dir().join(format!(".tmp-{id}"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(werr(&tmp))?;
        }
        let index_dir = tmp.join("index");
        std::fs::create_dir_all(&index_dir).map_err(werr(&index_dir))?;
        std::fs::create_dir_all(tmp.join("images")).map_err(werr(&tmp))?;

        // Images first: item paths are rewritten to live under images/.
        let mut items = catalog.items.clone();
        for (i, it) in items.iter_mut().enumerate() {
            let rel = it.image.trim_start_matches("./");
            let rel = rel.strip_prefix("images/").unwrap_or(rel).to_string();
            let src = match &images {
                ImageSource::Bundle { dir, .. } => dir.join(&it.image),
                ImageSource::Files(files) => files.get(i).cloned().unwrap_or_default(),
            };
            let dst = tmp.join("images").join(&rel);
            if !dst.exists() {
                if let Some(parent) = dst.parent() {
                    std::fs::create_dir_all(parent).map_err(werr(parent))?;
                }
                let moved = matches!(images, ImageSource::Bundle { owned: true, .. })
                    && std::fs::rename(&src, &dst).is_ok();
                if !moved && std::fs::hard_link(&src, &dst).is_err() {
                    std::fs::copy(&src, &dst).map_err(werr(&dst))?;
                }
            }
            it.image = format!("images/{rel}");
        }

        let mut body = Vec::with_capacity(items.len() * 200);
        for it in &items {
            serde_json::to_writer(&mut body, it)
                .map_err(|e| werr(&tmp.join("items.jsonl"))(e.into()))?;
            body.push(b'\n');
        }
        let p = tmp.join("items.jsonl");
        std::fs::write(&p, &body).map_err(werr(&p))?;

        info.groups = Vec::new();
        for (n, (name, g)) in catalog.group_indexes().iter().enumerate() {
            let file = format!("g{n}");
            let graph = match g.graph() {
                Some(graph) => Some(graph.link_or_dump(&index_dir, &file)?),
                None => None,
            };
            let members: Vec<u8> = g.members().iter().flat_map(|m| m.to_le_bytes()).collect();
            let p = index_dir.join(format!("{file}.members"));
            std::fs::write(&p, members).map_err(werr(&p))?;
            let overlay = g.overlay();
            if !overlay.is_empty() {
                let flat: Vec<f32> = overlay
                    .iter()
                    .flat_map(|(_, v)| v.iter().copied())
                    .collect();
                let p = index_dir.join(format!("{file}.overlay.npy"));
                let f = std::fs::File::create(&p).map_err(werr(&p))?;
                super::npy::write_f32_matrix(std::io::BufWriter::new(f), catalog.dim, &flat)
                    .map_err(werr(&p))?;
            }
            info.groups.push(GroupFiles {
                name: name.clone(),
                graph,
                points: g.members().len(),
                overlay: overlay.iter().map(|(i, _)| *i).collect(),
                file,
            });
        }
        info.item_count = items.len();
        info.format = VERSION_FORMAT.into();
        let p = tmp.join("version.json");
        let json = serde_json::to_vec_pretty(&info).map_err(|e| werr(&p)(e.into()))?;
        std::fs::write(&p, json).map_err(werr(&p))?;
        sync_filesystem(&tmp)?;
        for d in [&index_dir, &tmp.join("images"), &tmp] {
            sync_dir(d)?;
        }
        failpoint("version-written");
        let fin = self.version_dir(&id);
        std::fs::rename(&tmp, &fin).map_err(werr(&fin))?;
        sync_dir(&self.versions_dir())?;
        // The graphs now lie in the final folder; later versions link from there.
        for (gf, g) in info.groups.iter().zip(catalog.group_indexes().values()) {
            if let (Some(name), Some(graph)) = (&gf.graph, g.graph()) {
                graph.remember(&fin.join("index"), name);
            }
        }
        failpoint("version-renamed");
        Ok(info)
    }

    /// Loads a stored version from its dumps (no index is rebuilt).
    pub fn load(&self, id: &str) -> Result<Catalog, CatalogError> {
        let info = self.info(id)?;
        let dir = self.version_dir(id);
        let bad = |m: String| CatalogError::Invalid {
            path: dir.clone(),
            problems: vec![m],
        };
        if info.format != VERSION_FORMAT {
            return Err(bad(format!("unknown version format '{}'", info.format)));
        }
        let p = dir.join("items.jsonl");
        let text = std::fs::read_to_string(&p).map_err(rerr(&p))?;
        let items: Vec<Item> = text
            .par_lines()
            .filter(|l| !l.trim().is_empty())
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()
            .map_err(|e| bad(format!("items.jsonl: {e}")))?;
        if items.len() != info.item_count {
            return Err(bad(format!(
                "items.jsonl has {} items, version.json says {}",
                items.len(),
                info.item_count
            )));
        }
        let index_dir = dir.join("index");
        let dim = info.embedder.dim;
        let groups: Vec<(String, GroupIndex)> = info
            .groups
            .par_iter()
            .map(|gf| -> Result<(String, GroupIndex), CatalogError> {
                let graph = match &gf.graph {
                    Some(name) => Some(Arc::new(Graph::load(&index_dir, name, gf.points, dim)?)),
                    None => None,
                };
                let p = index_dir.join(format!("{}.members", gf.file));
                let raw = std::fs::read(&p).map_err(rerr(&p))?;
                let members: Vec<u32> = raw
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                let overlay = if gf.overlay.is_empty() {
                    Vec::new()
                } else {
                    let p = index_dir.join(format!("{}.overlay.npy", gf.file));
                    let f = std::fs::File::open(&p).map_err(rerr(&p))?;
                    let (rows, cols, data) =
                        super::npy::read_f32_matrix(std::io::BufReader::new(f))
                            .map_err(|e| bad(format!("{}: {e}", p.display())))?;
                    if rows != gf.overlay.len() || cols != dim {
                        return Err(bad(format!("{} has the wrong shape", p.display())));
                    }
                    gf.overlay
                        .iter()
                        .copied()
                        .zip(data.chunks_exact(dim).map(<[f32]>::to_vec))
                        .collect()
                };
                let g = GroupIndex::from_parts(graph, members, overlay, items.len())
                    .map_err(|m| bad(format!("group '{}': {m}", gf.name)))?;
                Ok((gf.name.clone(), g))
            })
            .collect::<Result<_, _>>()?;
        let meta = CatalogMeta {
            version: info.id.clone(),
            label: info.label.clone(),
            root: dir.clone(),
            dim,
            embedder: Some(info.embedder.clone()),
        };
        Ok(Catalog::from_groups(
            meta,
            items,
            groups.into_iter().collect::<BTreeMap<_, _>>(),
        ))
    }

    /// Makes `id` (canonical) the active version; the one it replaces goes on the rollback
    /// history.
    pub fn activate(&self, id: &str, keep_history: usize) -> Result<ActivePointer, CatalogError> {
        self.info(id)?;
        let mut ptr = self.read_active()?.unwrap_or_default();
        if ptr.active == id {
            return Ok(ptr);
        }
        if !ptr.active.is_empty() {
            let prev = std::mem::take(&mut ptr.active);
            ptr.history.retain(|h| h != &prev && h != id);
            ptr.history.push(prev);
        }
        ptr.history.retain(|h| h != id);
        let excess = ptr.history.len().saturating_sub(keep_history);
        ptr.history.drain(..excess);
        ptr.active = id.into();
        self.write_active(&ptr)?;
        Ok(ptr)
    }

    /// Goes back to the version active before the current one.
    pub fn rollback(&self) -> Result<ActivePointer, CatalogError> {
        let mut ptr = self.read_active()?.ok_or(CatalogError::NothingToRollBack)?;
        loop {
            let Some(prev) = ptr.history.pop() else {
                return Err(CatalogError::NothingToRollBack);
            };
            if self.info(&prev).is_ok() {
                ptr.active = prev;
                break;
            }
        }
        self.write_active(&ptr)?;
        Ok(ptr)
    }

    fn write_active(&self, ptr: &ActivePointer) -> Result<(), CatalogError> {
        for id in std::iter::once(&ptr.active).chain(&ptr.history) {
            check_version_id(id)?;
        }
        let json =
            serde_json::to_vec(ptr).map_err(|e| werr(&self.root.join("ACTIVE"))(e.into()))?;
        write_durable(
            &self.root.join("ACTIVE"),
            &json,
            Some("active-temp-written"),
        )
    }

    /// Deletes the oldest versions beyond `keep`, never the active one nor its history, nor
    /// `serving` (the version in memory, whatever `ACTIVE` says). All ids compared are
    /// canonical, so no other spelling of a version's name can get it deleted.
    pub fn prune(&self, keep: usize, serving: &str) -> Result<Vec<String>, CatalogError> {
        let ptr = self.read_active()?.unwrap_or_default();
        let ids = self.version_ids()?;
        let mut removed = Vec::new();
        let excess = ids.len().saturating_sub(keep);
        for id in ids.into_iter().take(excess) {
            if id == ptr.active || id == serving || ptr.history.contains(&id) {
                continue;
            }
            let from = self.version_dir(&id);
            let trash = self.versions_dir().join(format!(".trash-{id}"));
            // Renamed first so a crash mid-delete never leaves a version that looks whole.
            std::fs::rename(&from, &trash).map_err(werr(&from))?;
            sync_dir(&self.versions_dir())?;
            std::fs::remove_dir_all(&trash).map_err(werr(&trash))?;
            removed.push(id);
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::index::tests::random_unit_vectors;
    use crate::catalog::{Change, Item};

    fn items(n: usize, prefix: &str) -> Vec<Item> {
        (0..n)
            .map(|i| {
                serde_json::from_value(serde_json::json!({
                    "id": format!("{prefix}{i}"), "name": "Shirt",
                    "group": if i % 3 == 0 { "bottom" } else { "top" },
                    "price": 10.0, "image": "images/a.png"
                }))
                .expect("item")
            })
            .collect()
    }

    fn info(id: &str) -> VersionInfo {
        VersionInfo {
            format: String::new(),
            id: id.into(),
            label: format!("label {id}"),
            created: String::new(),
            source: "test".into(),
            parent: None,
            item_count: 0,
            embedder: EmbedderFingerprint {
                sha256: "s".into(),
                dim: 8,
                recipe: "cnn".into(),
            },
            index: IndexParams::default(),
            groups: vec![],
            warnings: vec![],
        }
    }

    #[test]
    fn only_canonical_version_ids_are_ids() {
        for ok in ["v0001", "v0042", "v9999", "v10000", "v123456"] {
            assert!(is_version_id(ok), "{ok}");
        }
        for bad in [
            "",
            "v",
            "v1",
            "v001",
            "v00001",
            "V0001",
            "v+001",
            "v-001",
            "./v0001",
            "v0001/",
            "../versions/v0001",
            "/data/versions/v0001",
            "v0001 ",
            " v0001",
            "v0x01",
            "v١٢٣٤",
        ] {
            assert!(!is_version_id(bad), "{bad:?}");
            assert!(matches!(
                check_version_id(bad),
                Err(CatalogError::BadVersionId(_))
            ));
        }
    }

    /// A store with versions v0001..=v000n of a small catalog.
    fn store_with_versions(data: &Path, n: usize) -> Store {
        let src = data.join("src");
        std::fs::create_dir_all(src.join("images")).expect("mkdir");
        image::RgbImage::new(2, 2)
            .save(src.join("images/a.png"))
            .expect("png");
        let store = Store::open(&data.join("data"), true).expect("open");
        for _ in 0..n {
            let id = store.next_id().expect("id");
            let meta = CatalogMeta {
                version: id.clone(),
                label: id.clone(),
                root: store.version_dir(&id),
                dim: 8,
                embedder: None,
            };
            let cat = Catalog::build(
                meta,
                items(10, "a"),
                random_unit_vectors(10, 8, 1),
                &IndexParams::default(),
                &|_, _| {},
            );
            let img = ImageSource::Bundle {
                dir: &src,
                owned: false,
            };
            store.write_version(&cat, info(&id), img).expect("write");
        }
        store
    }

    #[test]
    fn other_spellings_of_an_id_are_refused_and_never_get_a_served_version_pruned() {
        let tmp = tempfile::tempdir().expect("tmp");
        let store = store_with_versions(tmp.path(), 6);
        store.activate("v0001", 5).expect("activate");
        let abs = store.version_dir("v0002").display().to_string();
        for bad in ["./v0002", "v0002/", "../versions/v0002", abs.as_str()] {
            assert!(
                matches!(store.activate(bad, 5), Err(CatalogError::BadVersionId(_))),
                "{bad}"
            );
            assert!(matches!(
                store.info(bad),
                Err(CatalogError::BadVersionId(_))
            ));
        }
        // ACTIVE as an older build wrote it after `activate ./v0002`.
        let old = format!(
            r#"{{"active":"./v0002","history":["v0001","{abs}","/elsewhere/versions/v0003"]}}"#
        );
        std::fs::write(store.root().join("ACTIVE"), &old).expect("ACTIVE");
        let expect = ActivePointer {
            active: "v0002".into(),
            history: vec!["v0001".into()],
        };
        assert_eq!(store.read_active().expect("read"), Some(expect.clone()));
        let removed = store.prune(2, "").expect("prune");
        assert!(
            !removed.contains(&"v0002".to_string()) && !removed.contains(&"v0001".to_string()),
            "the active version and its rollback target survive: {removed:?}"
        );
        assert_eq!(removed, vec!["v0003".to_string(), "v0004".to_string()]);
        // Opening for writing rewrites ACTIVE in canonical form.
        drop(store);
        let store = Store::open(&tmp.path().join("data"), true).expect("reopen");
        let on_disk: ActivePointer =
            serde_json::from_slice(&std::fs::read(store.root().join("ACTIVE")).expect("read"))
                .expect("json");
        assert_eq!(on_disk, expect);
        // The version in memory is kept even when ACTIVE no longer names it.
        std::fs::write(store.root().join("ACTIVE"), r#"{"active":"v0001"}"#).expect("ACTIVE");
        assert_eq!(
            store.prune(1, "v0005").expect("prune"),
            vec!["v0002".to_string()]
        );
    }

    #[test]
    fn versions_round_trip_activate_rollback_and_prune() {
        let data = tempfile::tempdir().expect("tmp");
        let src = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(src.path().join("images")).expect("mkdir");
        image::RgbImage::new(2, 2)
            .save(src.path().join("images/a.png"))
            .expect("png");
        let store = Store::open(data.path(), true).expect("open");
        assert!(matches!(
            Store::open(data.path(), true),
            Err(CatalogError::Locked { .. })
        ));
        let vecs = random_unit_vectors(300, 8, 1);
        let meta = |id: &str| CatalogMeta {
            version: id.into(),
            label: id.into(),
            root: store.version_dir(id),
            dim: 8,
            embedder: Some(info("v0001").embedder),
        };
        let cat = Catalog::build(
            meta("v0001"),
            items(300, "a"),
            vecs.clone(),
            &IndexParams::default(),
            &|_, _| {},
        );
        let img = ImageSource::Bundle {
            dir: src.path(),
            owned: false,
        };
        store
            .write_version(&cat, info("v0001"), img)
            .expect("write");
        store.activate("v0001", 5).expect("activate");
        let back = store.load("v0001").expect("load");
        assert_eq!(back.items, cat.items);
        assert_eq!(
            back.search("top", &vecs[1], 5, 64),
            cat.search("top", &vecs[1], 5, 64),
            "a reloaded version answers like the built one"
        );

        // An edit: one item replaced, one removed, one added; graphs are linked, not rebuilt.
        let mut changed = cat.items[1].clone();
        changed.name = "Changed".into();
        let v_new = random_unit_vectors(1, 8, 99).remove(0);
        let edits = vec![
            Change::Put {
                item: changed,
                vector: vecs[2].clone(),
            },
            Change::Remove { id: "a4".into() },
            Change::Put {
                item: items(1, "new")[0].clone(),
                vector: v_new.clone(),
            },
        ];
        let next = store.next_id().expect("id");
        assert_eq!(next, "v0002");
        let edited = cat.apply(meta(&next), edits, &IndexParams::default(), &|_, _| {});
        assert_eq!(
            edited.items.len(),
            300,
            "one replaced, one removed, one added"
        );
        let files = edited
            .items
            .iter()
            .map(|_| src.path().join("images/a.png"))
            .collect();
        store
            .write_version(&edited, info(&next), ImageSource::Files(files))
            .expect("write 2");
        store.activate(&next, 5).expect("activate 2");
        let e2 = store.load(&next).expect("load 2");
        let hit = e2.search("bottom", &v_new, 1, 64);
        assert_eq!(e2.items[hit[0].item].id, "new0", "the added item is found");
        let top = e2.search("top", &vecs[1], 300, 300);
        assert!(
            top.iter().all(|h| e2.items[h.item].id != "a4"),
            "removed items never come back"
        );
        let a1 = top
            .iter()
            .find(|h| e2.items[h.item].id == "a1")
            .expect("a1");
        assert!(
            (a1.similarity - crate::catalog::index::dot(&vecs[2], &vecs[1])).abs() < 1e-4,
            "the replaced vector is used"
        );

        assert_eq!(store.rollback().expect("rollback").active, "v0001");
        assert!(matches!(
            store.rollback(),
            Err(CatalogError::NothingToRollBack)
        ));
        store.activate("v0002", 5).expect("again");
        for _ in 0..3 {
            let id = store.next_id().expect("id");
            store
                .write_version(
                    &edited,
                    info(&id),
                    ImageSource::Files(vec![src.path().join("images/a.png"); 300]),
                )
                .expect("write");
        }
        let removed = store.prune(2, "v0002").expect("prune");
        // v0001 is the rollback target and v0002 active: both survive; v0003 goes.
        assert_eq!(removed, vec!["v0003".to_string()]);
        drop(store);
        // Leftovers of an interrupted write are out of the way at the next open, and deleted
        // later: a large one must not hold up start-up.
        let leftover = data.path().join("versions/.tmp-v0009/images");
        std::fs::create_dir_all(&leftover).expect("mkdir");
        std::fs::write(leftover.join("x.jpg"), b"x").expect("write");
        std::fs::create_dir_all(data.path().join("work/j1")).expect("mkdir");
        let store = Store::open(data.path(), true).expect("reopen");
        assert!(!data.path().join("versions/.tmp-v0009").exists());
        assert!(
            std::fs::read_dir(store.work_dir())
                .expect("work")
                .next()
                .is_none(),
            "work/ is empty"
        );
        let trash = || {
            std::fs::read_dir(data.path().join("trash"))
                .expect("trash")
                .count()
        };
        assert_eq!(trash(), 2, "moved, not yet deleted");
        assert_eq!(store.empty_trash(), 2);
        assert_eq!(trash(), 0);
        assert_eq!(
            store.read_active().expect("a").expect("some").active,
            "v0002"
        );
    }
}
