//! The catalog's one writer, [`CatalogService`]: imports, single-item edits, activation and
//! rollback, each ending in an atomic swap of the snapshot the pipeline reads.
//!
//! Data enters as a bundle (an HTTP upload's body, an archive or folder on disk) or as item
//! edits, and leaves as a stored version (see [`super::store`]) and, when activated, a new
//! `Arc<Catalog>` in the shared `ArcSwap`. Long writes are recorded as [`Job`]s staff can follow.
//!
//! One write at a time: every write takes the private writer lock, from the moment it starts
//! (for an upload: once its body is in) to its end, so callers never see the lock. Writes run on
//! a thread of their own whose CPU priority is lowered (`catalog.import_nice`), and build
//! indexes on a small rayon pool whose threads lower theirs too, so on a 2-core box the camera
//! pipeline keeps its frame rate while a catalog is built. ONNX sessions for images-only bundles
//! live on those threads, never in an HTTP handler.
//!
//! Two ways in. Blocking calls ([`CatalogService::import`], [`CatalogService::activate`],
//! [`CatalogService::rollback`]) wait for the writer as long as it takes: the CLI, the catalog
//! channel's subscriber and the benchmark call them from a thread of their own. The staff API's
//! async calls (`*_async`, [`CatalogService::begin_upload`]) wait a bounded time and answer
//! [`CatalogError::Busy`] instead, and never block the async runtime.
//!
//! The sequences themselves live in the child modules: `steps` (a bundle becomes a version),
//! `edit` (item edits become a version), `upload` (an upload's body becomes a bundle on disk and
//! the caller hears validation's verdict).

mod edit;
mod steps;
mod upload;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;

use super::items::EmbedderFingerprint;
use super::job::Jobs;
pub use super::job::{Job, JobError, JobKind, JobState, JobStatus, Stage};
use super::store::{ActivePointer, Store, VersionInfo, VersionSummary};
use super::{Catalog, CatalogError, IndexParams, Item, SharedCatalog};
use crate::config::model::EmbedderSpec;
use crate::vision::embedder::Embedder;
use crate::vision::fusion::Recipe;
use crate::vision::runtime::SessionOptions;
pub use upload::{Upload, UploadRequest, next_chunk};

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
    /// Nice value (0–19) of those threads and of the writer thread.
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

/// What an import reads.
#[derive(Debug, Clone)]
pub enum ImportInput {
    /// A `.tar`/`.tar.gz` file, unpacked into the work folder (and deleted afterwards when
    /// `owned`).
    Archive { path: PathBuf, owned: bool },
    /// A bundle folder, read in place.
    Folder(PathBuf),
}

/// One bundle to import.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    pub input: ImportInput,
    /// Make the new version live as soon as it is stored.
    pub activate: bool,
    /// Overrides the manifest's version label.
    pub label: Option<String>,
    /// Where the bundle came from, kept in the version's record (`GET /api/catalog/versions`
    /// shows it), e.g. "channel hq/main #42"; `None`: "upload" for an archive, "folder PATH"
    /// for a folder.
    pub source: Option<String>,
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

/// A write that made a version, and the job that recorded it.
#[derive(Debug, Clone)]
pub struct Written {
    pub info: VersionInfo,
    pub job: String,
}

/// The stored versions and the active pointer, read together.
#[derive(Debug, Clone)]
pub struct Versions {
    pub list: Vec<VersionSummary>,
    pub active: Option<ActivePointer>,
}

/// Lowers the calling thread's CPU priority to `nice` (Linux nice values are per thread, and an
/// unprivileged thread cannot raise its own again: call this only on threads the catalog owns).
/// Never raises it: in a daemon started at nice 10, imports stay at 10 rather than going to 7
/// (as root, setpriority would raise them above the pipeline).
pub fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    if nice > 0 {
        // SAFETY: plain syscalls on the calling thread's own id.
        unsafe {
            let tid = libc::gettid() as libc::id_t;
            let current = libc::getpriority(libc::PRIO_PROCESS, tid);
            libc::setpriority(libc::PRIO_PROCESS, tid, nice.min(19).max(current));
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// How long a staff write waits for a running one (another edit, an activation) before it is
/// answered "busy": edits are quick, imports are not.
const WRITER_WAIT: Duration = Duration::from_secs(30);

pub struct CatalogService {
    cfg: ServiceConfig,
    /// `None` when another process holds the data folder: this one only reads.
    store: Option<Store>,
    shared: SharedCatalog,
    jobs: Jobs,
    /// One write at a time (see the module comment). tokio's mutex, because the staff API waits
    /// for it in async handlers with a timeout, and its guard moves to the writer thread.
    writer: Arc<tokio::sync::Mutex<()>>,
    /// One upload received at a time, apart from the writer so that activation and rollback
    /// never wait behind a slow client.
    receiving: Arc<tokio::sync::Mutex<()>>,
    pool: OnceLock<Result<rayon::ThreadPool, String>>,
    embedder: Mutex<Option<Embedder>>,
    on_swap: Box<dyn Fn(&Catalog) + Send + Sync>,
}

/// Opening and reading.
impl CatalogService {
    /// Opens the data folder for writing; when another process holds it, falls back to a
    /// read-only view and says so in the log. `on_swap` hears of every catalog swapped in, the
    /// first one ([`Self::load_initial`]) included.
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
            jobs: Jobs::default(),
            writer: Arc::default(),
            receiving: Arc::default(),
            pool: OnceLock::new(),
            embedder: Mutex::new(None),
            on_swap,
        })
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.cfg
    }

    /// The snapshot the pipeline searches; a write swaps a new one in.
    pub fn shared(&self) -> &SharedCatalog {
        &self.shared
    }

    /// `Err(Locked)` when another process holds the data folder and this one only reads.
    pub fn writable(&self) -> Result<(), CatalogError> {
        self.store().map(drop)
    }

    pub fn versions(&self) -> Result<Versions, CatalogError> {
        let store = self.store()?;
        Ok(Versions {
            list: store.list()?,
            active: store.read_active()?,
        })
    }

    /// The remembered jobs, newest first.
    pub fn jobs(&self) -> Vec<JobStatus> {
        self.jobs.statuses()
    }

    pub fn job(&self, id: &str) -> Result<JobStatus, CatalogError> {
        self.jobs.status(id)
    }

    /// Records a job to hand to [`Self::import_as`], for a caller that follows its progress.
    pub fn new_job(&self, kind: JobKind) -> Arc<Job> {
        self.jobs.start(kind)
    }

    /// The data folder, for reading and housekeeping (the daemon empties its trash once it
    /// serves). Writes go through the methods below, which hold the writer; `Err(Locked)` when
    /// this process only reads.
    pub fn store(&self) -> Result<&Store, CatalogError> {
        self.store.as_ref().ok_or_else(|| CatalogError::Locked {
            path: self.cfg.data_dir.clone(),
        })
    }
}

/// Blocking writes: each waits for the writer as long as it takes and runs on a writer thread.
/// Call them from a thread of your own (or `spawn_blocking`), never from async code.
impl CatalogService {
    /// Imports a bundle as a new version (and activates it when asked), recorded as an import
    /// job like a staff upload's.
    pub fn import(&self, req: ImportRequest) -> Result<VersionInfo, CatalogError> {
        let job = self.new_job(JobKind::Import);
        self.import_as(&job, req)
    }

    /// [`Self::import`] recorded as `job` (from [`Self::new_job`]), which the caller follows.
    pub fn import_as(&self, job: &Job, req: ImportRequest) -> Result<VersionInfo, CatalogError> {
        self.write_blocking(|me| me.run_import(job, req, None))?
    }

    /// Loads a stored version from disk, makes it active and swaps it in.
    pub fn activate(&self, id: &str) -> Result<VersionInfo, CatalogError> {
        self.write_blocking(|me| me.activate_now(id))?
    }

    /// Goes back to the version that was active before the current one.
    pub fn rollback(&self) -> Result<VersionInfo, CatalogError> {
        self.write_blocking(|me| me.rollback_now())?
    }

    /// Waits for the writer, then runs `f` on a scoped writer thread. A thread of its own
    /// because lowering the priority cannot be undone: the caller's thread (a tokio blocking
    /// thread, say) keeps its own.
    fn write_blocking<T: Send>(
        &self,
        f: impl FnOnce(&Self) -> T + Send,
    ) -> Result<T, CatalogError> {
        // `futures`' executor, not tokio's `blocking_lock`: that one panics when a caller on a
        // runtime thread gets it wrong, this one only blocks that thread.
        let _writer = futures::executor::block_on(self.writer.lock());
        let nice = self.cfg.import_nice;
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("catalog-write".into())
                .spawn_scoped(scope, || {
                    lower_priority(nice);
                    f(self)
                })
                .map_err(|e| CatalogError::Threads(format!("cannot start a catalog thread: {e}")))?
                .join()
                .map_err(|_| CatalogError::Threads("the catalog thread panicked".into()))
        })
    }
}

/// Async writes for the staff API: each waits at most [`WRITER_WAIT`] for a running write and
/// answers [`CatalogError::Busy`] past it; the work runs on a writer thread.
impl CatalogService {
    pub async fn activate_async(self: &Arc<Self>, id: String) -> Result<VersionInfo, CatalogError> {
        // Before anything else: `./v0002` or a path would reach a version under another name.
        super::store::check_version_id(&id)?;
        self.write_async(move |me| me.activate_now(&id)).await?
    }

    pub async fn rollback_async(self: &Arc<Self>) -> Result<VersionInfo, CatalogError> {
        self.write_async(|me| me.rollback_now()).await?
    }

    /// Applies one item edit as a new version, activated at once.
    pub async fn edit_async(self: &Arc<Self>, edit: Edit) -> Result<Written, JobError> {
        let source = match &edit {
            Edit::Put { item, .. } => format!("put item {}", item.id),
            Edit::Remove { id } => {
                // Said at once, even while another write runs.
                if self.shared.load().position(id).is_none() {
                    return Err(CatalogError::NoSuchItem(id.clone()).into());
                }
                format!("remove item {id}")
            }
        };
        let guard = self.writer_within(WRITER_WAIT).await?;
        let job = self.new_job(JobKind::Edit);
        let id = job.id();
        let result = self
            .on_writer_thread(guard, move |me| me.edit(&job, vec![edit], source))
            .await?;
        match result {
            Ok(info) => Ok(Written { info, job: id }),
            Err(error) => Err(JobError {
                error,
                job: Some(id),
            }),
        }
    }

    async fn write_async<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&CatalogService) -> T + Send + 'static,
    ) -> Result<T, CatalogError> {
        let guard = self.writer_within(WRITER_WAIT).await?;
        self.on_writer_thread(guard, f).await
    }

    /// Runs `f` on a writer thread of its own holding `writer`, and waits for its answer
    /// without blocking the async runtime. The writer is let go before the answer is sent, so
    /// a client that acts on it at once does not find the catalog busy.
    async fn on_writer_thread<T: Send + 'static>(
        self: &Arc<Self>,
        writer: OwnedMutexGuard<()>,
        f: impl FnOnce(&CatalogService) -> T + Send + 'static,
    ) -> Result<T, CatalogError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let me = self.clone();
        self.spawn_writer(writer, move |writer| {
            let out = f(&me);
            drop(writer);
            let _ = tx.send(out);
        })?;
        rx.await
            .map_err(|_| CatalogError::Threads("the catalog thread ended without an answer".into()))
    }

    /// Starts `f` on a lower-priority thread, handing it the writer's guard to let go of.
    fn spawn_writer(
        &self,
        writer: OwnedMutexGuard<()>,
        f: impl FnOnce(OwnedMutexGuard<()>) + Send + 'static,
    ) -> Result<(), CatalogError> {
        let nice = self.cfg.import_nice;
        std::thread::Builder::new()
            .name("catalog-write".into())
            .spawn(move || {
                lower_priority(nice);
                f(writer)
            })
            .map(drop)
            .map_err(|e| CatalogError::Threads(format!("cannot start a catalog thread: {e}")))
    }

    /// The writer, waiting at most `wait` (zero: only when free now).
    async fn writer_within(&self, wait: Duration) -> Result<OwnedMutexGuard<()>, CatalogError> {
        let lock = self.writer.clone();
        if wait.is_zero() {
            lock.try_lock_owned().map_err(|_| self.busy())
        } else {
            tokio::time::timeout(wait, lock.lock_owned())
                .await
                .map_err(|_| self.busy())
        }
    }

    /// "Busy", naming the job that holds the writer.
    fn busy(&self) -> CatalogError {
        CatalogError::Busy {
            job: self.jobs.running_write(),
        }
    }
}

/// Start-up, activation and rollback.
impl CatalogService {
    /// Loads the catalog to serve at start-up and swaps it in (`on_swap` hears of it like of any
    /// later one): the active version from its dump; the previous ones if it cannot be read; the
    /// seed folder imported as the first version when there is none. Runs on the calling
    /// thread at its priority: nothing is served yet that an import could slow down.
    pub fn load_initial(&self) -> Result<Arc<Catalog>, CatalogError> {
        let Some(store) = &self.store else {
            let c = Arc::new(self.load_read_only()?);
            self.swap(c.clone());
            return Ok(c);
        };
        // The staff API is up already: a write it starts waits for this one.
        let _writer = futures::executor::block_on(self.writer.lock());
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
                        let c = Arc::new(c);
                        self.swap(c.clone());
                        return Ok(c);
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
            return Err(CatalogError::NoCatalog {
                data_dir: self.cfg.data_dir.clone(),
                locked: false,
            });
        };
        let job = self.new_job(JobKind::Seed);
        let req = ImportRequest {
            input: ImportInput::Folder(seed.clone()),
            activate: true,
            label: None,
            source: None,
        };
        let info = self.run_import(&job, req, None)?;
        tracing::info!(version = %info.id, seed = %seed.display(), "seed catalog imported");
        Ok(self.shared.load_full())
    }

    fn load_read_only(&self) -> Result<Catalog, CatalogError> {
        let ro = Store::open(&self.cfg.data_dir, false)?;
        if let Some(ptr) = ro.read_active()? {
            let c = ro.load(&ptr.active)?;
            self.check_fingerprint(&c)?;
            return Ok(c);
        }
        let seed = self
            .cfg
            .seed
            .as_deref()
            .ok_or_else(|| CatalogError::NoCatalog {
                data_dir: self.cfg.data_dir.clone(),
                locked: true,
            })?;
        Catalog::load(seed, Some(&self.cfg.fingerprint), &self.cfg.params)
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

    /// [`Self::activate`] with the writer held.
    fn activate_now(&self, id: &str) -> Result<VersionInfo, CatalogError> {
        let store = self.store()?;
        let info = store.info(id)?;
        let c = self.pool()?.install(|| store.load(id))?;
        self.check_fingerprint(&c)?;
        store.activate(id, self.cfg.versions_kept)?;
        self.swap(Arc::new(c));
        Ok(info)
    }

    /// [`Self::rollback`] with the writer held.
    fn rollback_now(&self) -> Result<VersionInfo, CatalogError> {
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

    fn swap(&self, catalog: Arc<Catalog>) {
        tracing::info!(version = %catalog.version, label = %catalog.label, items = catalog.items.len(), "catalog swapped in");
        (self.on_swap)(&catalog);
        self.shared.store(catalog);
    }

    /// Old versions beyond `versions_kept` go; a failure only costs disk space.
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
                CatalogError::Threads(format!("cannot start the catalog build threads: {e}"))
            })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::catalog::synth::{self, Embeddings};

    const DIM: usize = 8;

    fn fingerprint() -> EmbedderFingerprint {
        EmbedderFingerprint {
            sha256: "synthetic".into(),
            dim: DIM,
            recipe: crate::vision::fusion::CNN_ONLY.into(),
        }
    }

    fn bundle(dir: &Path, prefix: &str, n: usize) -> PathBuf {
        let b = dir.join(prefix);
        synth::write_bundle(
            &b,
            prefix,
            n,
            2,
            &fingerprint(),
            Embeddings::Inline,
            prefix,
            7,
        )
        .expect("bundle");
        b
    }

    /// A service over `dir/data` whose `on_swap` notes each version swapped in.
    fn service(
        dir: &Path,
        seed: Option<PathBuf>,
        nice: i32,
    ) -> (CatalogService, Arc<Mutex<Vec<String>>>) {
        let params = IndexParams::default();
        let cfg = ServiceConfig {
            data_dir: dir.join("data"),
            seed,
            params,
            fingerprint: fingerprint(),
            embedder: None,
            versions_kept: 3,
            upload_limit: 1 << 30,
            unpack_limit: 1 << 30,
            import_threads: 1,
            import_nice: nice,
        };
        let empty = Catalog::empty(dir.into(), DIM, &params);
        let shared = Arc::new(arc_swap::ArcSwap::from_pointee(empty));
        let heard = Arc::new(Mutex::new(Vec::new()));
        let on_swap = {
            let heard = heard.clone();
            Box::new(move |c: &Catalog| heard.lock().expect("heard").push(c.version.clone()))
        };
        (
            CatalogService::open(cfg, shared, on_swap).expect("open"),
            heard,
        )
    }

    fn heard(h: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
        h.lock().expect("heard").clone()
    }

    #[test]
    fn the_first_catalog_is_swapped_in_like_every_later_one() {
        let tmp = tempfile::tempdir().expect("tmp");
        let seed = bundle(tmp.path(), "seed", 12);
        let (svc, swaps) = service(tmp.path(), Some(seed.clone()), 0);
        let first = svc.load_initial().expect("seed imported");
        assert_eq!(first.items.len(), 12);
        assert!(Arc::ptr_eq(&first, &svc.shared().load_full()), "served");
        assert_eq!(heard(&swaps), vec![first.version.clone()]);
        assert_eq!(svc.jobs()[0].kind, JobKind::Seed);
        drop(svc);
        // A restart reloads the stored version, and says so through on_swap as well.
        let (svc, swaps) = service(tmp.path(), Some(seed), 0);
        let again = svc.load_initial().expect("reloaded");
        assert_eq!(again.version, first.version);
        assert!(Arc::ptr_eq(&again, &svc.shared().load_full()), "served");
        assert_eq!(heard(&swaps), vec![first.version.clone()]);
        assert!(svc.jobs().is_empty(), "nothing imported");
    }

    #[test]
    fn a_blocking_import_is_recorded_as_a_job_like_an_upload() {
        let tmp = tempfile::tempdir().expect("tmp");
        let seed = bundle(tmp.path(), "seed", 12);
        let (svc, swaps) = service(tmp.path(), Some(seed), 0);
        let first = svc.load_initial().expect("seed").version.clone();
        let next = bundle(tmp.path(), "next", 9);
        let req = |activate| ImportRequest {
            input: ImportInput::Folder(next.clone()),
            activate,
            label: Some("spring".into()),
            source: Some("channel hq/main #3".into()),
        };
        let info = svc.import(req(false)).expect("imported");
        assert_eq!(
            (info.label.as_str(), info.source.as_str(), info.item_count),
            ("spring", "channel hq/main #3", 9)
        );
        assert_eq!(svc.shared().load().version, first, "stored, not activated");
        let live = svc.import(req(true)).expect("imported and activated");
        assert_eq!(svc.shared().load().version, live.id);
        assert_eq!(heard(&swaps), vec![first, live.id.clone()]);
        let job = &svc.jobs()[0];
        assert_eq!(
            (
                job.kind,
                job.state,
                job.stage,
                job.version.as_deref(),
                job.activated
            ),
            (
                JobKind::Import,
                JobState::Succeeded,
                Stage::Done,
                Some(live.id.as_str()),
                true
            )
        );
        // A refused bundle fails its job and leaves the catalog as it was.
        std::fs::write(next.join("items.jsonl"), "{not json\n").expect("break");
        let err = svc.import(req(true)).expect_err("refused");
        assert!(matches!(err, CatalogError::Invalid { .. }), "{err}");
        assert_eq!(svc.jobs()[0].state, JobState::Failed);
        assert_eq!(svc.shared().load().version, live.id);
    }

    #[test]
    fn a_blocking_write_waits_for_the_writer_on_a_lower_priority_thread_of_its_own() {
        let tmp = tempfile::tempdir().expect("tmp");
        let seed = bundle(tmp.path(), "seed", 6);
        let (svc, _) = service(tmp.path(), Some(seed.clone()), 7);
        svc.load_initial().expect("seed");
        let svc = Arc::new(svc);
        let held = svc.writer.clone().try_lock_owned().expect("free");
        let importer = {
            let svc = svc.clone();
            std::thread::spawn(move || {
                svc.import(ImportRequest {
                    input: ImportInput::Folder(seed),
                    activate: true,
                    label: None,
                    source: None,
                })
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        assert!(!importer.is_finished(), "the import waited for the writer");
        drop(held);
        importer
            .join()
            .expect("join")
            .expect("imported once the writer was free");

        #[cfg(target_os = "linux")]
        {
            // SAFETY: getpriority on the calling thread's own id.
            let nice =
                || unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
            let before = nice();
            let inside = svc.write_blocking(|_| nice()).expect("ran");
            assert_eq!(
                inside,
                before.max(7),
                "the writer thread runs at import_nice"
            );
            assert_eq!(nice(), before, "the caller's thread keeps its priority");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn staff_writes_are_told_busy_naming_the_running_job() {
        let tmp = tempfile::tempdir().expect("tmp");
        let seed = bundle(tmp.path(), "seed", 6);
        let (svc, _) = service(tmp.path(), Some(seed), 0);
        let svc = Arc::new(svc);
        let loaded = svc.clone();
        tokio::task::spawn_blocking(move || loaded.load_initial())
            .await
            .expect("join")
            .expect("seed");
        let held = svc.writer.clone().try_lock_owned().expect("free");
        let edit = svc.new_job(JobKind::Edit);
        edit.stage(Stage::Indexing, 0);
        // Paused time: the 30 s wait passes as soon as nothing else can run.
        let err = svc.rollback_async().await.expect_err("busy");
        assert!(
            matches!(&err, CatalogError::Busy { job: Some((id, Stage::Indexing)) } if *id == edit.id()),
            "{err}"
        );
        assert!(matches!(
            svc.begin_upload(Some(10)),
            Err(CatalogError::Busy { .. })
        ));
        let gone = Edit::Remove {
            id: "no-such-item".into(),
        };
        let err = svc.edit_async(gone).await.expect_err("no such item");
        assert!(
            matches!(
                &err,
                JobError {
                    error: CatalogError::NoSuchItem(_),
                    job: None
                }
            ),
            "said at once, busy or not: {err:?}"
        );
        drop(held);
        let first = svc.begin_upload(Some(10)).expect("free again");
        assert!(matches!(
            svc.begin_upload(Some(10)),
            Err(CatalogError::UploadInProgress)
        ));
        assert!(matches!(
            svc.begin_upload(Some(2 << 30)),
            Err(CatalogError::UploadTooLarge { limit }) if limit == 1 << 30
        ));
        drop(first);
    }
}
