//! The catalog's one writer: imports, single-item edits, activation and rollback, each run as a
//! [`Job`] whose progress staff can follow, and each ending in an atomic swap of the snapshot the
//! pipeline reads.
//!
//! Data enters as a bundle on disk (an upload, or a folder for the CLI) or as item edits, and
//! leaves as a stored version (see [`super::store`]) and, when activated, a new `Arc<Catalog>` in
//! the shared `ArcSwap`. Heavy work (parsing, embedding, graph building) runs on a dedicated
//! thread and a small rayon pool whose threads lower their own CPU priority, so on a 2-core box
//! the camera pipeline keeps its frame rate while a catalog is built. ONNX sessions for
//! images-only bundles live on that thread too, never in an HTTP handler. One write at a time:
//! the async [`CatalogService::writer`] lock is held from the request that starts a write to the
//! job's end.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sha2::Digest;

use super::bundle::{self, Bundle, ReadOptions, UnpackLimits};
use super::items::{EmbedderFingerprint, check_fields, check_vector, normalise};
use super::store::{ImageSource, Store, VersionInfo};
use super::{
    Catalog, CatalogError, CatalogMeta, Change, IndexParams, Item, SharedCatalog, failpoint,
};
use crate::config::model::EmbedderSpec;
use crate::vision::embedder::Embedder;
use crate::vision::fusion::Recipe;
use crate::vision::runtime::SessionOptions;

/// How to build the import's own embedder session (for bundles that carry images only).
#[derive(Debug, Clone)]
pub struct EmbedderSource {
    pub spec: EmbedderSpec,
    /// How an embedding and the photo's colour become the stored vector.
    pub recipe: Recipe,
    pub session: SessionOptions,
    pub library: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub data_dir: PathBuf,
    /// The catalog folder imported as the first version when the data folder has none.
    pub seed: Option<PathBuf>,
    pub params: IndexParams,
    /// The running embedder: every stored vector must come from exactly this model.
    pub fingerprint: EmbedderFingerprint,
    pub embedder: Option<EmbedderSource>,
    pub versions_kept: usize,
    pub upload_limit: u64,
    /// Bytes an upload may unpack to, in all.
    pub unpack_limit: u64,
    /// Threads that build indexes; 0: one per core.
    pub import_threads: usize,
    /// Nice value (0–19) of those threads.
    pub import_nice: i32,
}

impl ServiceConfig {
    pub fn from_settings(s: &crate::config::Settings) -> Self {
        let spec = &s.embedder.spec;
        Self {
            data_dir: s.catalog.data_dir.clone(),
            seed: Some(s.catalog.path.clone()).filter(|p| p.join("items.jsonl").is_file()),
            params: s.catalog.index,
            fingerprint: EmbedderFingerprint::running(spec, &s.similarity),
            embedder: Some(EmbedderSource {
                spec: spec.clone(),
                recipe: s.similarity,
                session: s.runtime.session.clone(),
                library: s.runtime.library.clone(),
            }),
            versions_kept: s.catalog.versions_kept,
            upload_limit: s.catalog.upload_limit,
            unpack_limit: s.catalog.unpack_limit,
            import_threads: s.catalog.import_threads,
            import_nice: s.catalog.import_nice,
        }
    }
}

/// A long operation's state, as `GET /api/catalog/jobs/{id}` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    pub id: String,
    pub kind: String,
    /// "running", "succeeded" or "failed".
    pub state: String,
    /// receiving, unpacking, validating, embedding, indexing, saving, activating, done.
    pub stage: String,
    pub done: u64,
    pub total: u64,
    pub started: String,
    pub finished: Option<String>,
    /// The version the job created.
    pub version: Option<String>,
    pub activated: bool,
    pub error: Option<String>,
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
}

pub struct Job {
    status: Mutex<JobStatus>,
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

impl Job {
    fn new(id: String, kind: &str) -> Self {
        Self {
            status: Mutex::new(JobStatus {
                id,
                kind: kind.into(),
                state: "running".into(),
                stage: "starting".into(),
                done: 0,
                total: 0,
                started: now_rfc3339(),
                finished: None,
                version: None,
                activated: false,
                error: None,
                problems: vec![],
                warnings: vec![],
            }),
        }
    }

    fn edit(&self, f: impl FnOnce(&mut JobStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub fn status(&self) -> JobStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn id(&self) -> String {
        self.status().id
    }

    pub fn stage(&self, stage: &str, total: u64) {
        self.edit(|s| {
            s.stage = stage.into();
            s.done = 0;
            s.total = total;
        });
    }

    pub fn progress(&self, done: u64) {
        self.edit(|s| s.done = done);
    }

    /// Marks the job failed before any catalog work started (e.g. an upload refused).
    pub fn fail(&self, e: &CatalogError) {
        self.edit(|s| {
            s.finished = Some(now_rfc3339());
            s.state = "failed".into();
            s.error = Some(e.summary());
            s.problems = e.problems().to_vec();
        });
    }

    fn finish(&self, result: &Result<VersionInfo, CatalogError>, activated: bool) {
        self.edit(|s| {
            s.finished = Some(now_rfc3339());
            match result {
                Ok(info) => {
                    s.state = "succeeded".into();
                    s.stage = "done".into();
                    s.version = Some(info.id.clone());
                    s.activated = activated;
                    s.warnings = info.warnings.clone();
                }
                Err(e) => {
                    s.state = "failed".into();
                    s.error = Some(e.summary());
                    s.problems = e.problems().to_vec();
                }
            }
        });
    }
}

/// What an import reads.
#[derive(Debug, Clone)]
pub enum ImportInput {
    /// A `.tar`/`.tar.gz` file, unpacked into the work folder (and deleted afterwards when
    /// `owned`).
    Archive { path: PathBuf, owned: bool },
    /// A bundle folder, read in place.
    Folder(PathBuf),
}

/// One requested item edit.
#[derive(Debug, Clone)]
pub enum Edit {
    /// Adds or replaces an item. Without `image_data`, the item keeps (or must name) an image
    /// already in the active version; without `embedding`, it is computed from the image.
    Put {
        item: Item,
        embedding: Option<Vec<f32>>,
        image_data: Option<Vec<u8>>,
    },
    Remove {
        id: String,
    },
}

/// Lowers the calling thread's CPU priority (Linux nice values are per thread).
pub fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    if nice > 0 {
        // SAFETY: plain syscalls on the calling thread's own id.
        unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice.min(19));
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

pub struct CatalogService {
    cfg: ServiceConfig,
    /// `None` when another process holds the data folder: this one only reads.
    store: Option<Store>,
    shared: SharedCatalog,
    jobs: Mutex<VecDeque<Arc<Job>>>,
    next_job: AtomicU64,
    /// Held from the request that starts a write until its job ends.
    pub writer: Arc<tokio::sync::Mutex<()>>,
    pool: OnceLock<Result<rayon::ThreadPool, String>>,
    embedder: Mutex<Option<Embedder>>,
    on_swap: Box<dyn Fn(&Catalog) + Send + Sync>,
}

/// Jobs remembered for `GET /api/catalog/jobs`.
const JOBS_KEPT: usize = 50;

impl CatalogService {
    /// Opens the data folder for writing; when another process holds it, falls back to a
    /// read-only view and says so in the log.
    pub fn open(
        cfg: ServiceConfig,
        shared: SharedCatalog,
        on_swap: Box<dyn Fn(&Catalog) + Send + Sync>,
    ) -> Result<Self, CatalogError> {
        let store = match Store::open(&cfg.data_dir, true) {
            Ok(s) => Some(s),
            Err(CatalogError::Locked { path }) => {
                tracing::warn!(data = %path.display(), "another vitrine holds the catalog data folder: serving read-only, the staff API cannot change the catalog");
                None
            }
            Err(e) => return Err(e),
        };
        Ok(Self {
            cfg,
            store,
            shared,
            jobs: Mutex::new(VecDeque::new()),
            next_job: AtomicU64::new(1),
            writer: Arc::new(tokio::sync::Mutex::new(())),
            pool: OnceLock::new(),
            embedder: Mutex::new(None),
            on_swap,
        })
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.cfg
    }

    pub fn shared(&self) -> &SharedCatalog {
        &self.shared
    }

    pub fn store(&self) -> Result<&Store, CatalogError> {
        self.store.as_ref().ok_or_else(|| CatalogError::Locked {
            path: self.cfg.data_dir.clone(),
        })
    }

    /// The rayon pool imports build on, created on first use.
    fn pool(&self) -> Result<&rayon::ThreadPool, CatalogError> {
        let nice = self.cfg.import_nice;
        self.pool
            .get_or_init(|| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(self.cfg.import_threads)
                    .thread_name(|i| format!("catalog-build-{i}"))
                    .start_handler(move |_| lower_priority(nice))
                    .build()
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| {
                CatalogError::Other(format!("cannot start the catalog build threads: {e}"))
            })
    }

    pub fn new_job(&self, kind: &str) -> Arc<Job> {
        let n = self.next_job.fetch_add(1, Ordering::Relaxed);
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let job = Arc::new(Job::new(format!("j{secs:x}-{n}"), kind));
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.push_back(job.clone());
        while jobs.len() > JOBS_KEPT {
            jobs.pop_front();
        }
        job
    }

    pub fn job(&self, id: &str) -> Option<Arc<Job>> {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|j| j.id() == id)
            .cloned()
    }

    pub fn jobs(&self) -> Vec<JobStatus> {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .rev()
            .map(|j| j.status())
            .collect()
    }

    fn swap(&self, catalog: Arc<Catalog>) {
        tracing::info!(version = %catalog.version, label = %catalog.label, items = catalog.items.len(), "catalog swapped in");
        (self.on_swap)(&catalog);
        self.shared.store(catalog);
    }

    /// The catalog to serve at start-up: the active version from its dump; the previous ones if
    /// it cannot be read; the seed folder imported as the first version when there is none.
    pub fn load_initial(&self) -> Result<Arc<Catalog>, CatalogError> {
        let Some(store) = &self.store else {
            return self.load_read_only();
        };
        if let Some(ptr) = store.read_active()? {
            let mut tried = Vec::new();
            // A version made for another embedder (the model was upgraded) is as unusable as a
            // damaged one: fall back to earlier versions, then to the seed.
            for id in std::iter::once(&ptr.active).chain(ptr.history.iter().rev()) {
                match store
                    .load(id)
                    .and_then(|c| self.check_fingerprint(&c).map(|()| c))
                {
                    Ok(c) => {
                        if !tried.is_empty() {
                            tracing::error!(version = %id, "the active catalog version could not be used; serving an earlier one");
                            store.activate(id, self.cfg.versions_kept)?;
                        }
                        return Ok(Arc::new(c));
                    }
                    Err(e) => {
                        tracing::error!(version = %id, error = %e, "cannot load catalog version");
                        tried.push(format!("{id}: {e}"));
                    }
                }
            }
            tracing::error!(
                ?tried,
                "no stored catalog version can be used; importing the seed catalog again"
            );
        }
        let Some(seed) = self.cfg.seed.clone() else {
            return Err(CatalogError::Other(format!(
                "the data folder {} has no catalog and catalog.path is not set: import one with `vitrine catalog import`",
                self.cfg.data_dir.display()
            )));
        };
        let job = self.new_job("seed");
        let info = self.run_import(
            &job,
            ImportInput::Folder(seed.clone()),
            true,
            None,
            None,
            None,
        )?;
        tracing::info!(version = %info.id, seed = %seed.display(), "seed catalog imported");
        Ok(self.shared.load_full())
    }

    fn load_read_only(&self) -> Result<Arc<Catalog>, CatalogError> {
        let ro = Store::open(&self.cfg.data_dir, false)?;
        if let Some(ptr) = ro.read_active()? {
            let c = ro.load(&ptr.active)?;
            self.check_fingerprint(&c)?;
            return Ok(Arc::new(c));
        }
        let seed = self.cfg.seed.as_deref().ok_or_else(|| {
            CatalogError::Other(
                "no catalog: the data folder is locked and catalog.path is not set".into(),
            )
        })?;
        Ok(Arc::new(Catalog::load(
            seed,
            Some(&self.cfg.fingerprint),
            &self.cfg.params,
        )?))
    }

    fn check_fingerprint(&self, c: &Catalog) -> Result<(), CatalogError> {
        let why = match &c.embedder {
            Some(made) => made.mismatch(&self.cfg.fingerprint),
            None => Some("no record of the embedder that made it".into()),
        };
        match why {
            None if c.dim == self.cfg.fingerprint.dim => Ok(()),
            why => Err(CatalogError::EmbedderMismatch {
                path: c.root.clone(),
                why: why.unwrap_or_else(|| format!("{}-d vectors", c.dim)),
            }),
        }
    }

    /// Imports a bundle as a new version (and activates it when asked). `validated` hears the
    /// outcome of unpacking and validation as soon as it is known, so an HTTP upload can answer
    /// 4xx for a bad bundle and 202 for a good one while the rest runs on. Runs on the calling
    /// thread; HTTP handlers call it from a dedicated thread.
    pub fn run_import(
        &self,
        job: &Job,
        input: ImportInput,
        activate: bool,
        label: Option<String>,
        source: Option<String>,
        validated: Option<tokio::sync::oneshot::Sender<Result<(), CatalogError>>>,
    ) -> Result<VersionInfo, CatalogError> {
        let mut validated = validated;
        let result = self.import_inner(job, &input, activate, label, source, &mut validated);
        if let (Ok(store), ImportInput::Archive { path, owned: true }) = (self.store(), &input) {
            let _ = std::fs::remove_file(path);
            let _ = std::fs::remove_dir_all(store.work_dir().join(job.id()));
        }
        job.finish(&result, activate);
        if let Err(e) = &result {
            tracing::warn!(job = %job.id(), error = %e.summary(), "catalog import failed; the active catalog is unchanged");
        }
        // Told last, so whoever hears of the failure finds the job finished and its files gone.
        if let (Some(tx), Err(e)) = (validated.take(), &result) {
            let _ = tx.send(Err(e.clone_shallow()));
        }
        result
    }

    fn import_inner(
        &self,
        job: &Job,
        input: &ImportInput,
        activate: bool,
        label: Option<String>,
        source: Option<String>,
        validated: &mut Option<tokio::sync::oneshot::Sender<Result<(), CatalogError>>>,
    ) -> Result<VersionInfo, CatalogError> {
        let store = self.store()?;
        let pool = self.pool()?;
        let (dir, owned, source) = match input {
            ImportInput::Folder(d) => (
                d.clone(),
                false,
                source.unwrap_or_else(|| format!("folder {}", d.display())),
            ),
            ImportInput::Archive { path, .. } => {
                job.stage("unpacking", 0);
                let into = store.work_dir().join(job.id());
                std::fs::create_dir_all(&into).map_err(|source| CatalogError::Write {
                    path: into.clone(),
                    source,
                })?;
                let limits = UnpackLimits::new(self.cfg.unpack_limit, self.cfg.fingerprint.dim);
                let root = bundle::unpack(path, &into, limits)?;
                failpoint("unpacked");
                (root, true, source.unwrap_or_else(|| "upload".into()))
            }
        };
        job.stage("validating", 0);
        let fp = &self.cfg.fingerprint;
        let peek = super::Manifest::load_optional(&dir).ok().flatten();
        let images_only = peek.as_ref().is_some_and(|m| m.embeddings == "none");
        let opts = ReadOptions {
            decode_images: images_only,
            require_manifest: matches!(input, ImportInput::Archive { .. }),
        };
        let bundle = pool.install(|| bundle::read_bundle(&dir, Some(fp), &opts))?;
        if bundle.vectors.is_none() && self.cfg.embedder.is_none() {
            return Err(CatalogError::Invalid {
                path: dir.clone(),
                problems: vec!["this bundle carries images only and no embedder is configured to compute its embeddings".into()],
            });
        }
        failpoint("validated");
        if let Some(tx) = validated.take() {
            let _ = tx.send(Ok(()));
        }
        let Bundle {
            manifest,
            items,
            vectors,
            mut warnings,
            ..
        } = bundle;
        let vectors = match vectors {
            Some(v) => v,
            None => self.embed_images(job, &dir, &items)?,
        };

        let id = store.next_id()?;
        let label = label.unwrap_or_else(|| manifest.version.clone());
        let meta = CatalogMeta {
            version: id.clone(),
            label: label.clone(),
            root: store.version_dir(&id),
            dim: fp.dim,
            embedder: Some(fp.clone()),
        };
        job.stage("indexing", items.len() as u64);
        let params = self.cfg.params;
        // Graphs HQ built into the bundle are loaded when they prove to be these items' own.
        let (catalog, prebuilt) = pool.install(|| {
            super::prebuilt::build_or_load(&dir, meta, items, vectors, &params, &|done, _| {
                job.progress(done as u64)
            })
        });
        warnings.extend(prebuilt.warning());
        failpoint("indexed");
        job.stage("saving", 0);
        let info = VersionInfo {
            format: String::new(),
            id: id.clone(),
            label,
            created: now_rfc3339(),
            source,
            parent: None,
            item_count: catalog.items.len(),
            embedder: fp.clone(),
            index: params,
            groups: vec![],
            warnings,
        };
        let info = store.write_version(&catalog, info, ImageSource::Bundle { dir: &dir, owned })?;
        if activate {
            job.stage("activating", 0);
            store.activate(&id, self.cfg.versions_kept)?;
            failpoint("activated");
            self.swap(Arc::new(catalog));
        }
        self.prune();
        Ok(info)
    }

    fn prune(&self) {
        if let Ok(store) = self.store() {
            let serving = self.shared.load().version.clone();
            match store.prune(self.cfg.versions_kept, &serving) {
                Ok(gone) if !gone.is_empty() => {
                    tracing::info!(?gone, "old catalog versions pruned")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "pruning old catalog versions failed"),
            }
        }
    }

    /// Embeds bundle images with the import's own session (built on first use, on this thread).
    fn embed_images(
        &self,
        job: &Job,
        dir: &Path,
        items: &[Item],
    ) -> Result<Vec<Vec<f32>>, CatalogError> {
        job.stage("embedding", items.len() as u64);
        let mut out = Vec::with_capacity(items.len());
        for (i, it) in items.iter().enumerate() {
            let img = load_photo(&dir.join(&it.image)).map_err(|e| CatalogError::Invalid {
                path: dir.into(),
                problems: vec![format!(
                    "item '{}': image '{}' cannot be decoded ({e})",
                    it.id, it.image
                )],
            })?;
            out.push(self.embed(&img, &it.id)?);
            job.progress(i as u64 + 1);
        }
        Ok(out)
    }

    fn embed(&self, img: &image::RgbImage, id: &str) -> Result<Vec<f32>, CatalogError> {
        let mut slot = self.embedder.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            let src = self.cfg.embedder.as_ref().ok_or_else(|| {
                CatalogError::Other("no embedder is configured to compute embeddings".into())
            })?;
            // One thread: the import must not take cores from the live pipeline's sessions.
            let mut session = src.session.clone();
            session.intra_threads = 1;
            let e = Embedder::build(&src.spec, &session, src.library.as_deref()).map_err(|e| {
                CatalogError::Other(format!("cannot start the import's embedder: {e}"))
            })?;
            *slot = Some(e);
        }
        let emb = slot
            .as_mut()
            .ok_or_else(|| CatalogError::Other("embedder unavailable".into()))?;
        let mut v = emb
            .embed_image(img)
            .map_err(|e| CatalogError::Other(format!("embedding item '{id}': {e}")))?;
        normalise(&mut v);
        let recipe = self
            .cfg
            .embedder
            .as_ref()
            .map(|s| s.recipe)
            .unwrap_or_default();
        Ok(recipe.fuse_photo(img, v))
    }

    /// Loads a stored version from disk, makes it active and swaps it in.
    pub fn activate(&self, id: &str) -> Result<VersionInfo, CatalogError> {
        let store = self.store()?;
        let info = store.info(id)?;
        let c = self.pool()?.install(|| store.load(id))?;
        self.check_fingerprint(&c)?;
        store.activate(id, self.cfg.versions_kept)?;
        self.swap(Arc::new(c));
        Ok(info)
    }

    /// Goes back to the version that was active before the current one.
    pub fn rollback(&self) -> Result<VersionInfo, CatalogError> {
        let store = self.store()?;
        let ptr = store
            .read_active()?
            .ok_or(CatalogError::NothingToRollBack)?;
        let target = ptr
            .history
            .iter()
            .rev()
            .find(|id| store.info(id).is_ok())
            .cloned()
            .ok_or(CatalogError::NothingToRollBack)?;
        let info = store.info(&target)?;
        let c = self.pool()?.install(|| store.load(&target))?;
        self.check_fingerprint(&c)?;
        store.rollback()?;
        self.swap(Arc::new(c));
        Ok(info)
    }

    /// Applies item edits to the active version as a new version, activated at once. Unchanged
    /// groups keep their graphs; edited items are searched exactly until their group is rebuilt.
    pub fn edit(
        &self,
        job: &Job,
        edits: Vec<Edit>,
        source: String,
    ) -> Result<VersionInfo, CatalogError> {
        let result = self.edit_inner(job, edits, source);
        job.finish(&result, result.is_ok());
        result
    }

    fn edit_inner(
        &self,
        job: &Job,
        edits: Vec<Edit>,
        source: String,
    ) -> Result<VersionInfo, CatalogError> {
        let store = self.store()?;
        let current = self.shared.load_full();
        if store.info(&current.version).is_err() {
            return Err(CatalogError::Other(format!(
                "the active catalog '{}' is not a stored version; import a bundle first",
                current.version
            )));
        }
        job.stage("validating", edits.len() as u64);
        let work = store.work_dir().join(job.id());
        std::fs::create_dir_all(&work).map_err(|source| CatalogError::Write {
            path: work.clone(),
            source,
        })?;
        let mut changes = Vec::new();
        let mut new_files: std::collections::HashMap<String, PathBuf> = Default::default();
        let mut problems = Vec::new();
        for (n, e) in edits.into_iter().enumerate() {
            match e {
                Edit::Remove { id } => {
                    if current.position(&id).is_none() {
                        return Err(CatalogError::NoSuchItem(id));
                    }
                    changes.push(Change::Remove { id });
                }
                Edit::Put {
                    mut item,
                    embedding,
                    image_data,
                } => {
                    let at = format!("item '{}'", item.id);
                    let mut img = None;
                    if let Some(bytes) = image_data {
                        let decoded = crate::capture::decode::decode_frame(&bytes)
                            .map(fit_for_embedding)
                            .map_err(|e| CatalogError::Invalid {
                                path: PathBuf::from(&item.id),
                                problems: vec![format!("{at}: the image cannot be decoded ({e})")],
                            })?;
                        let ext = match image::guess_format(&bytes) {
                            Ok(image::ImageFormat::Png) => "png",
                            _ => "jpg",
                        };
                        let digest = hex::encode(sha2::Sha256::digest(&bytes));
                        let name = format!("{}-{}.{ext}", sanitize(&item.id), &digest[..12]);
                        let p = work.join(&name);
                        std::fs::write(&p, &bytes).map_err(|source| CatalogError::Write {
                            path: p.clone(),
                            source,
                        })?;
                        item.image = format!("images/{name}");
                        new_files.insert(item.image.clone(), p);
                        img = Some(decoded);
                    } else if item.image.is_empty() {
                        match current.position(&item.id) {
                            Some(i) => item.image = current.items[i].image.clone(),
                            None => problems
                                .push(format!("{at}: a new item needs an image (image_base64)")),
                        }
                    } else if current
                        .image_file(item.image.trim_start_matches("images/"))
                        .is_none()
                    {
                        problems.push(format!(
                            "{at}: image '{}' is not in the active catalog; send the file as image_base64",
                            item.image
                        ));
                    }
                    problems.extend(
                        check_fields(&item)
                            .into_iter()
                            .map(|p| format!("{at}: {p}")),
                    );
                    let vector = match embedding {
                        Some(mut v) => {
                            let p = check_vector(&v, self.cfg.fingerprint.dim);
                            if p.is_empty() {
                                normalise(&mut v);
                            }
                            problems.extend(p.into_iter().map(|p| format!("{at}: {p}")));
                            v
                        }
                        None if problems.is_empty() => {
                            let img = match img {
                                Some(i) => i,
                                None => {
                                    load_photo(&current.root.join(&item.image)).map_err(|e| {
                                        CatalogError::Other(format!("{at}: reading its image: {e}"))
                                    })?
                                }
                            };
                            job.stage("embedding", 1);
                            self.embed(&img, &item.id)?
                        }
                        None => Vec::new(),
                    };
                    changes.push(Change::Put { item, vector });
                }
            }
            job.progress(n as u64 + 1);
        }
        if !problems.is_empty() {
            return Err(CatalogError::Invalid {
                path: PathBuf::from("request"),
                problems,
            });
        }
        let id = store.next_id()?;
        let meta = CatalogMeta {
            version: id.clone(),
            label: current.label.clone(),
            root: store.version_dir(&id),
            dim: current.dim,
            embedder: current.embedder.clone(),
        };
        job.stage("indexing", 0);
        let params = self.cfg.params;
        let next = self.pool()?.install(|| {
            current.apply(meta, changes, &params, &|d, t| {
                job.edit(|s| {
                    s.done = d as u64;
                    s.total = t as u64;
                })
            })
        });
        let files = next
            .items
            .iter()
            .map(|it| {
                new_files
                    .get(&it.image)
                    .cloned()
                    .unwrap_or_else(|| current.root.join(&it.image))
            })
            .collect();
        job.stage("saving", 0);
        let info = VersionInfo {
            format: String::new(),
            id: id.clone(),
            label: current.label.clone(),
            created: now_rfc3339(),
            source,
            parent: Some(current.version.clone()),
            item_count: next.items.len(),
            embedder: self.cfg.fingerprint.clone(),
            index: params,
            groups: vec![],
            warnings: vec![],
        };
        let info = store.write_version(&next, info, ImageSource::Files(files))?;
        let _ = std::fs::remove_dir_all(&work);
        job.stage("activating", 0);
        store.activate(&id, self.cfg.versions_kept)?;
        self.swap(Arc::new(next));
        self.prune();
        Ok(info)
    }
}

/// Product photos are scaled to this long side before embedding. The embedder sees a few
/// hundred pixels, and its crop buffer keeps the size of the largest image it was given: a
/// 10000×10000 photo would hold 300 MB for the life of the import's session.
const EMBED_MAX_SIDE: u32 = 2048;

/// Reads and decodes a product photo (strictly: a truncated one is an error) at embedding size.
fn load_photo(path: &Path) -> Result<image::RgbImage, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    crate::capture::decode::decode_frame(&bytes).map(fit_for_embedding)
}

/// Scales a photo down to [`EMBED_MAX_SIDE`] at once, so the full-size pixels are given back
/// before the embedder copies them. Smaller photos pass untouched, embedded exactly as the
/// reference does.
fn fit_for_embedding(img: image::RgbImage) -> image::RgbImage {
    let (w, h) = img.dimensions();
    let long = w.max(h);
    if long <= EMBED_MAX_SIDE {
        return img;
    }
    let scale = EMBED_MAX_SIDE as f64 / long as f64;
    let nw = ((w as f64 * scale).round() as u32).clamp(1, EMBED_MAX_SIDE);
    let nh = ((h as f64 * scale).round() as u32).clamp(1, EMBED_MAX_SIDE);
    let mut out = vec![0u8; nw as usize * nh as usize * 3];
    crate::vision::resize::PillowResizer::default().resize(img.as_raw(), w, h, &mut out, nw, nh);
    drop(img);
    image::RgbImage::from_raw(nw, nh, out).unwrap_or_default()
}

/// A file-name-safe form of an item id.
fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}
