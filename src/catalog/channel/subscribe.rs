//! The box's side of a catalog channel: a poller stage on its own thread that reads the channel
//! document, decides whether this box should take what it offers, downloads and verifies the
//! bundle, and imports it through the catalog's one writer.
//!
//! Data enters as `channel.json` (every poll, conditionally: an unchanged channel costs one small
//! request) and a bundle object (once per new offer, resumed across failures and restarts), and
//! leaves as a new active catalog version (the service's atomic swap), the `channel` section of
//! `/api/status` ([`ChannelMonitor::view`]) and the `vitrine_channel_*` metrics.
//!
//! Order of the checks, each refusal logged, counted and shown while the live catalog keeps
//! serving: the document's signature ([`ChannelDocument::parse_verified`]); its sequence against
//! the highest this box accepted (persisted before acting on it, so a restart cannot be replayed
//! into a rollback); revocation; the pin; the roll-out bucket; the embedder fingerprint (before
//! downloading anything); then the bundle's size, SHA-256 and signature before anything is
//! unpacked; then the import's own validation.
//!
//! The stage never blocks anyone: it runs on its own thread with a single-threaded async runtime
//! for its requests and a lowered CPU priority, writes only its own files in the data folder, and
//! the HTTP side reads its state through one short-held mutex.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::doc::{ChannelDocument, DocError, RefusalReason, rollout_bucket};
use super::fetch::{Document, DownloadError, FetchError, Fetcher};
use super::metrics::{ChannelMetrics, ErrorKind};
use super::state::{
    ChannelView, Dirs, LastError, Offer, Persisted, Phase, Refusal, Rollout, Taken, rfc3339,
    unix_now,
};
use crate::catalog::import::{CatalogService, ImportInput, ImportRequest, lower_priority};
use crate::catalog::job::JobKind;
use crate::catalog::store::VersionInfo;
use crate::catalog::{CatalogError, EmbedderFingerprint};
use crate::config::{ChannelSettings, Settings};
use crate::shutdown::Stop;

/// How often a waiting poller looks at the shutdown flag.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// How often the document is read without `If-None-Match`. An origin's ETag may be weak: nginx
/// makes it from the modification second and the size, so two documents of the same length
/// published within one second look alike and the second would wait for the next publish.
const FULL_READ_EVERY: Duration = Duration::from_secs(3600);

/// The channel's state as the HTTP side reads it: the status view and the metric families.
pub struct ChannelMonitor {
    view: Mutex<ChannelView>,
    /// Unix time since which the box is behind, mirrored from the persisted state so a scrape
    /// computes `vitrine_channel_behind_seconds` at its own moment.
    behind_since: Mutex<Option<f64>>,
    pub metrics: ChannelMetrics,
}

impl ChannelMonitor {
    fn new(view: ChannelView) -> Self {
        Self {
            view: Mutex::new(view),
            behind_since: Mutex::new(None),
            metrics: ChannelMetrics::new(),
        }
    }

    fn edit(&self, f: impl FnOnce(&mut ChannelView)) {
        f(&mut self.view.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Brings `vitrine_channel_behind_seconds` to this moment; `/metrics` calls it before each
    /// scrape.
    pub fn refresh_behind(&self) -> f64 {
        let since = *self.behind_since.lock().unwrap_or_else(|p| p.into_inner());
        let behind = since.map_or(0.0, |s| (unix_now() - s).max(0.0));
        self.metrics.behind.set(behind);
        behind
    }

    fn set_behind(&self, since: Option<f64>) {
        *self.behind_since.lock().unwrap_or_else(|p| p.into_inner()) = since;
        self.refresh_behind();
    }

    /// `/api/status`'s `channel` section, as of now.
    pub fn view(&self) -> ChannelView {
        let behind = self.refresh_behind();
        let mut v = self.view.lock().unwrap_or_else(|p| p.into_inner()).clone();
        v.behind_s = behind;
        v.fetched_bytes = self.metrics.fetched_bytes.get();
        v
    }

    fn fetched(&self, n: u64) {
        self.metrics.fetched_bytes.inc_by(n);
    }
}

/// The stage as configured, before it runs.
pub struct Subscriber {
    cfg: ChannelSettings,
    box_id: String,
    dirs: Dirs,
    monitor: Arc<ChannelMonitor>,
}

impl Subscriber {
    /// `None` without `[catalog.channel]`.
    pub fn build(settings: &Settings) -> Option<Self> {
        let cfg = settings.catalog.channel.clone()?;
        let box_id = settings.appliance.id.clone();
        let view = ChannelView {
            url: cfg.url.to_string(),
            state: Phase::Starting,
            pin: cfg.pin.clone(),
            poll_interval_s: cfg.poll_interval.as_secs(),
            last_check: None,
            last_success: None,
            offered: None,
            active: None,
            taken: None,
            highest_sequence: None,
            download_bytes: 0,
            download_size: 0,
            fetched_bytes: 0,
            behind_s: 0.0,
            last_refusal: None,
            last_error: None,
            rollout: Rollout {
                bucket: rollout_bucket(&box_id),
                box_id: box_id.clone(),
                percent: None,
                selected: None,
            },
            job: None,
            message: "waiting for the catalog to load before the first poll".into(),
        };
        Some(Self {
            dirs: Dirs::new(&settings.catalog.data_dir),
            cfg,
            box_id,
            monitor: Arc::new(ChannelMonitor::new(view)),
        })
    }

    pub fn monitor(&self) -> Arc<ChannelMonitor> {
        self.monitor.clone()
    }

    /// Starts the poller thread. Call once the first catalog is loaded: an import swapped in
    /// before would be overwritten by the start-up load. `stop` ends it (within 100 ms, or at the
    /// end of an import in progress).
    pub fn start(
        self,
        service: Arc<CatalogService>,
        stop: Stop,
    ) -> Option<std::thread::JoinHandle<()>> {
        let monitor = self.monitor.clone();
        if !service.store().is_ok_and(|s| s.writable()) {
            monitor.edit(|v| {
                v.state = Phase::Disabled;
                v.message = "another process holds the catalog data folder: this one cannot import what the channel offers".into();
            });
            tracing::warn!("catalog channel disabled: the data folder is held by another process");
            return None;
        }
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "catalog channel: cannot start its runtime");
                return None;
            }
        };
        let running = service.config().fingerprint.clone();
        let poller = Poller {
            bucket: rollout_bucket(&self.box_id),
            cfg: self.cfg,
            dirs: self.dirs,
            monitor: self.monitor,
            service,
            stop,
            rt,
            running,
            fetcher: None,
            state: None,
            etag: None,
            full_read: None,
            pending: None,
            settled: (Phase::Checking, String::new()),
        };
        match std::thread::Builder::new()
            .name("catalog-channel".into())
            .spawn(move || poller.run())
        {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::error!(error = %e, "catalog channel: cannot start its thread");
                monitor.edit(|v| {
                    v.state = Phase::Error;
                    v.message = format!("the channel's thread could not start: {e}");
                });
                None
            }
        }
    }
}

/// The channel's one call into the catalog's writer: imports and activates the verified archive
/// as a staff upload is, recorded as an import job.
fn import_bundle(
    service: &CatalogService,
    archive: PathBuf,
    source: String,
    on_job: impl FnOnce(String),
) -> Result<VersionInfo, CatalogError> {
    // The service waits for a staff write that is running, and imports on a thread of its own
    // at the import's CPU priority.
    let job = service.new_job(JobKind::Import);
    on_job(job.id());
    service.import_as(
        &job,
        ImportRequest {
            input: ImportInput::Archive {
                path: archive,
                owned: true,
            },
            activate: true,
            label: None,
            source: Some(source),
        },
    )
}

struct Poller {
    cfg: ChannelSettings,
    bucket: u8,
    dirs: Dirs,
    monitor: Arc<ChannelMonitor>,
    service: Arc<CatalogService>,
    stop: Stop,
    rt: tokio::runtime::Runtime,
    running: EmbedderFingerprint,
    /// Built on first use (a `file://` channel's folder must exist), rebuilt after a failure.
    fetcher: Option<Fetcher>,
    /// `None` until read from disk (a damaged file is retried every poll, never ignored).
    state: Option<Persisted>,
    /// The ETag of the document last evaluated.
    etag: Option<String>,
    /// When the document was last read in full, and the SHA-256 of what was read.
    full_read: Option<(std::time::Instant, [u8; 32])>,
    /// An accepted offer not yet imported (a download or import failed): retried at each poll
    /// even while the document is unchanged.
    pending: Option<ChannelDocument>,
    /// The outcome of the last evaluation, shown again after a transient error clears.
    settled: (Phase, String),
}

impl Poller {
    fn stopped(&self) -> bool {
        self.stop.is_set()
    }

    fn run(mut self) {
        // Background work: downloads, hashing and imports yield the CPU to the camera pipeline.
        lower_priority(self.service.config().import_nice);
        tracing::info!(channel = %self.cfg.url, box_id = %self.monitor.view().rollout.box_id, bucket = self.bucket, "catalog channel: polling");
        // A fleet restarted at once (a power cut across a region) does not poll in step.
        let first = self
            .cfg
            .poll_interval
            .mul_f64(rand::random_range(0.0..=self.cfg.jitter));
        if !self.sleep(first) {
            return;
        }
        loop {
            self.poll();
            let factor = 1.0 + rand::random_range(-self.cfg.jitter..=self.cfg.jitter);
            if !self.sleep(self.cfg.poll_interval.mul_f64(factor)) {
                return;
            }
        }
    }

    /// Sleeps `d`; false when the daemon stops meanwhile.
    fn sleep(&self, d: Duration) -> bool {
        let until = std::time::Instant::now() + d;
        while std::time::Instant::now() < until {
            if self.stopped() {
                return false;
            }
            std::thread::sleep(STOP_CHECK.min(until - std::time::Instant::now()));
        }
        !self.stopped()
    }

    /// Runs `fut` on the poller's runtime; `None` when the daemon stops first.
    fn block<F: std::future::Future>(&self, fut: F) -> Option<F::Output> {
        let stop = self.stop.clone();
        self.rt.block_on(async move {
            tokio::select! {
                out = fut => Some(out),
                _ = async {
                    while !stop.is_set() {
                        tokio::time::sleep(STOP_CHECK).await;
                    }
                } => None,
            }
        })
    }

    fn settle(&mut self, phase: Phase, message: String) {
        self.settled = (phase, message.clone());
        self.monitor.edit(|v| {
            v.state = phase;
            v.message = message;
        });
    }

    fn error(&mut self, e: FetchError) {
        tracing::warn!(kind = e.kind.as_str(), error = %e.message, "catalog channel: {}; retrying at the next poll, the live catalog keeps serving", e.kind.as_str());
        self.monitor.metrics.error(e.kind);
        self.monitor.metrics.up.set(0);
        if e.kind != ErrorKind::Io {
            self.fetcher = None;
        }
        self.monitor.edit(|v| {
            v.state = Phase::Error;
            v.message = format!("{}; retrying at the next poll", e.message);
            v.last_error = Some(LastError {
                kind: e.kind,
                message: e.message,
                at: rfc3339(unix_now()),
            });
        });
    }

    fn refuse(&mut self, e: DocError, sequence: Option<u64>) {
        tracing::warn!(reason = e.reason.as_str(), sequence, error = %e.message, "catalog channel: offer refused; the live catalog keeps serving");
        self.monitor.metrics.refused(e.reason);
        self.monitor.edit(|v| {
            v.last_refusal = Some(Refusal {
                reason: e.reason,
                message: e.message.clone(),
                at: rfc3339(unix_now()),
                sequence,
            })
        });
        self.settle(
            Phase::Refused,
            format!("refused ({}): {}", e.reason.as_str(), e.message),
        );
    }

    /// Writes the persisted state; a box that cannot remember its sequence must not act on it.
    fn save(&mut self) -> bool {
        let Some(s) = &self.state else { return false };
        let behind = s.behind_since;
        let (taken, highest) = (s.taken.clone(), s.highest_sequence);
        match self.dirs.save(s) {
            Ok(()) => {
                self.monitor.set_behind(behind);
                self.monitor.edit(|v| {
                    v.taken = taken;
                    v.highest_sequence = highest;
                });
                true
            }
            Err(e) => {
                // Read the document again next time: acting on it must wait for the record.
                self.etag = None;
                self.full_read = None;
                self.error(FetchError::io(format!(
                    "cannot record the channel state: {e}"
                )));
                false
            }
        }
    }

    fn poll(&mut self) {
        let now = unix_now();
        self.monitor.metrics.last_check.set(now);
        self.monitor.edit(|v| v.last_check = Some(rfc3339(now)));
        if self.state.is_none() {
            match self.dirs.load(&self.cfg.url.to_string()) {
                Ok(s) => {
                    self.monitor.set_behind(s.behind_since);
                    let (taken, highest) = (s.taken.clone(), s.highest_sequence);
                    self.monitor.edit(|v| {
                        v.taken = taken;
                        v.highest_sequence = highest;
                    });
                    self.state = Some(s);
                }
                Err(e) => return self.error(FetchError::io(e.to_string())),
            }
        }
        let fetcher = match &self.fetcher {
            Some(f) => f.clone(),
            None => match Fetcher::build(&self.cfg.url, &self.cfg.store, self.cfg.timeout) {
                Ok(f) => {
                    self.fetcher = Some(f.clone());
                    f
                }
                Err(e) => return self.error(e),
            },
        };
        let monitor = self.monitor.clone();
        let fetched = move |n| monitor.fetched(n);
        let etag = match self.full_read {
            Some((at, _)) if at.elapsed() < FULL_READ_EVERY => self.etag.as_deref(),
            _ => None,
        };
        let got = self.block(fetcher.document(etag, &fetched));
        match got {
            None => {}
            Some(Err(e)) => self.error(e),
            Some(Ok(doc)) => {
                let now = unix_now();
                self.monitor.metrics.up.set(1);
                self.monitor.metrics.last_success.set(now);
                self.monitor.edit(|v| v.last_success = Some(rfc3339(now)));
                let doc = match doc {
                    Document::Changed { bytes, etag } => {
                        use sha2::Digest;
                        let digest: [u8; 32] = sha2::Sha256::digest(&bytes).into();
                        let same = self.full_read.is_some_and(|(_, d)| d == digest);
                        self.full_read = Some((std::time::Instant::now(), digest));
                        self.etag = etag;
                        (!same).then_some(bytes)
                    }
                    Document::Unchanged => None,
                };
                match (doc, self.pending.clone()) {
                    (Some(bytes), _) => {
                        self.pending = None;
                        self.evaluate(&fetcher, &bytes);
                    }
                    (None, Some(doc)) => self.take(&fetcher, doc),
                    (None, None) => {
                        let (phase, message) = self.settled.clone();
                        self.settle(phase, message);
                    }
                }
            }
        }
        let active = self.service.shared().load().label.clone();
        let offered = self
            .monitor
            .view()
            .offered
            .map(|o| o.version)
            .unwrap_or_default();
        self.monitor.metrics.set_info(&offered, &active);
    }

    /// Checks a newly read document's signature and sequence, and records the sequence before
    /// anything acts on it.
    fn evaluate(&mut self, fetcher: &Fetcher, bytes: &[u8]) {
        let doc = match ChannelDocument::parse_verified(bytes, &self.cfg.keys) {
            Ok(d) => d,
            Err(e) => return self.refuse(e, None),
        };
        let selected = self.bucket < doc.rollout_percent;
        self.monitor.edit(|v| {
            v.offered = Some(Offer {
                version: doc.version.clone(),
                sequence: doc.sequence,
                size: doc.size,
                sha256: doc.sha256.clone(),
                rollout_percent: doc.rollout_percent,
                created: doc.created.clone(),
            });
            v.rollout.percent = Some(doc.rollout_percent);
            v.rollout.selected = Some(selected);
        });
        let Some(state) = self.state.as_mut() else {
            return;
        };
        if let Some(highest) = state.highest_sequence
            && doc.sequence < highest
        {
            let e = DocError::new(
                RefusalReason::SequenceBackwards,
                format!(
                    "the channel document's sequence {} is below {highest}, the highest this box accepted: an old document replayed, or the channel rolled back; publish a new one",
                    doc.sequence
                ),
            );
            return self.refuse(e, Some(doc.sequence));
        }
        state.highest_sequence = Some(doc.sequence);
        if self.save() {
            self.decide(fetcher, doc, selected);
        }
    }

    /// Whether this box takes a genuine, current offer: not when revoked, pinned elsewhere, rolled
    /// out to other boxes, already running, or made for another embedder.
    fn decide(&mut self, fetcher: &Fetcher, doc: ChannelDocument, selected: bool) {
        if doc.revoked.contains(&doc.version) {
            self.not_behind();
            let e = DocError::new(
                RefusalReason::Revoked,
                format!(
                    "version '{}' (sequence {}) is listed as revoked by its own channel document",
                    doc.version, doc.sequence
                ),
            );
            return self.refuse(e, Some(doc.sequence));
        }
        if let Some(pin) = self.cfg.pin.clone().filter(|p| *p != doc.version) {
            self.not_behind();
            let m = format!(
                "pinned to version '{pin}' (catalog.channel.pin); the channel offers '{}': not taken",
                doc.version
            );
            tracing::info!("catalog channel: {m}");
            return self.settle(Phase::Pinned, m);
        }
        if !selected {
            self.not_behind();
            let m = format!(
                "version '{}' is rolled out to {} % of boxes; this box's bucket is {}: not taken yet",
                doc.version, doc.rollout_percent, self.bucket
            );
            return self.settle(Phase::NotSelected, m);
        }
        let state = self.state.as_ref();
        let taken = state.and_then(|s| s.taken.as_ref()).map(|t| &t.sha256);
        if taken == Some(&doc.sha256) {
            self.not_behind();
            self.dirs.drop_other_downloads(None);
            let m = format!("serving version '{}' as the channel offers", doc.version);
            return self.settle(Phase::UpToDate, m);
        }
        let waiting_for = state.and_then(|s| s.behind_sha256.clone());
        if let Some(id) = self.active_from(&doc) {
            // Imported and activated, but the daemon stopped before recording it.
            return self.record_taken(&doc, id);
        }
        if waiting_for.as_deref() != Some(doc.sha256.as_str())
            && let Some(s) = self.state.as_mut()
        {
            s.behind_since = Some(unix_now());
            s.behind_sha256 = Some(doc.sha256.clone());
            if !self.save() {
                return;
            }
        }
        if let Some(why) = doc
            .embedder
            .as_ref()
            .and_then(|e| e.mismatch(&self.running))
        {
            let e = DocError::new(
                RefusalReason::Fingerprint,
                format!(
                    "version '{}' was made for another embedder: {why}; HQ must publish a bundle for this box's model",
                    doc.version
                ),
            );
            return self.refuse(e, Some(doc.sequence));
        }
        self.pending = Some(doc.clone());
        self.take(fetcher, doc);
    }

    /// The offer is not for this box (or not now): it is not behind.
    fn not_behind(&mut self) {
        if let Some(s) = self.state.as_mut()
            && s.behind_since.is_some()
        {
            s.behind_since = None;
            s.behind_sha256 = None;
            self.save();
        }
    }

    /// Remembers that `doc` became stored version `id` and is active.
    fn record_taken(&mut self, doc: &ChannelDocument, id: String) {
        self.pending = None;
        if let Some(s) = self.state.as_mut() {
            s.taken = Some(Taken {
                sequence: doc.sequence,
                sha256: doc.sha256.clone(),
                version: doc.version.clone(),
                version_id: id.clone(),
            });
            s.behind_since = None;
            s.behind_sha256 = None;
        }
        self.save();
        self.dirs.drop_other_downloads(None);
        self.settle(
            Phase::UpToDate,
            format!(
                "took version '{}' (sequence {}) as {id}",
                doc.version, doc.sequence
            ),
        );
    }

    fn source(&self, doc: &ChannelDocument) -> String {
        format!("channel {} #{}", self.cfg.url, doc.sequence)
    }

    /// The active version's id when it is the one this document offers (its recorded source
    /// names this channel and sequence).
    fn active_from(&self, doc: &ChannelDocument) -> Option<String> {
        let id = self.service.shared().load().version.clone();
        let info = self.service.store().ok()?.info(&id).ok()?;
        (info.source == self.source(doc)).then_some(id)
    }

    /// Downloads, verifies and imports an accepted offer. Transient failures keep it pending for
    /// the next poll; refusals drop it until the document changes.
    fn take(&mut self, fetcher: &Fetcher, doc: ChannelDocument) {
        let part = self.dirs.part(&doc.sha256);
        self.dirs.drop_other_downloads(Some(&doc.sha256));
        if let Err(e) = std::fs::create_dir_all(self.dirs.downloads()) {
            return self.error(FetchError::io(format!(
                "{}: {e}",
                self.dirs.downloads().display()
            )));
        }
        let resumed_from = std::fs::metadata(&part).map_or(0, |m| m.len());
        self.monitor.edit(|v| {
            v.state = Phase::Downloading;
            v.download_bytes = resumed_from;
            v.download_size = doc.size;
            v.message = format!(
                "downloading version '{}' ({} bytes{})",
                doc.version,
                doc.size,
                if resumed_from > 0 {
                    format!(", resuming at {resumed_from}")
                } else {
                    String::new()
                }
            );
        });
        let (monitor, fetched_to) = (self.monitor.clone(), self.monitor.clone());
        let mut progress = move |n: u64| monitor.edit(|v| v.download_bytes = n);
        let fetched = move |n| fetched_to.fetched(n);
        let got =
            self.block(fetcher.download(&doc.bundle, doc.size, &part, &mut progress, &fetched));
        match got {
            None | Some(Err(DownloadError::Stopped)) => return,
            Some(Err(DownloadError::Fetch(e))) => return self.error(e),
            Some(Err(DownloadError::Refused(e))) => {
                self.pending = None;
                return self.refuse(e, Some(doc.sequence));
            }
            Some(Ok(())) => {}
        }
        self.monitor.edit(|v| v.state = Phase::Verifying);
        if let Err(e) = verify(&part, &doc, &self.cfg.keys) {
            let _ = std::fs::remove_file(&part);
            // A resumed file mixes two transfers; a power cut may have left garbage at its end.
            // Its failure says nothing about the bundle: fetch it once more in one piece.
            if resumed_from > 0 && matches!(e.reason, RefusalReason::Digest) {
                return self.error(FetchError::io(format!(
                    "the resumed download of version '{}' did not verify ({}); downloading it afresh",
                    doc.version, e.message
                )));
            }
            self.pending = None;
            return self.refuse(e, Some(doc.sequence));
        }
        self.import(doc, part);
    }

    fn import(&mut self, doc: ChannelDocument, archive: PathBuf) {
        self.monitor.edit(|v| {
            v.state = Phase::Importing;
            v.message = format!(
                "importing version '{}' (after any catalog change already running)",
                doc.version
            );
        });
        let source = self.source(&doc);
        let monitor = self.monitor.clone();
        let result = import_bundle(&self.service, archive, source, |job| {
            monitor.edit(|v| v.job = Some(job))
        });
        match result {
            Ok(info) => {
                tracing::info!(version = %doc.version, sequence = doc.sequence, stored = %info.id, "catalog channel: new version active");
                self.record_taken(&doc, info.id);
            }
            Err(e) => {
                let reason = match &e {
                    CatalogError::Invalid { .. } => Some(RefusalReason::Invalid),
                    CatalogError::EmbedderMismatch { .. } => Some(RefusalReason::Fingerprint),
                    _ => None,
                };
                let mut message = e.summary();
                if let Some(first) = e.problems().first() {
                    message.push_str(": ");
                    message.push_str(first);
                }
                match reason {
                    Some(r) => {
                        self.pending = None;
                        self.refuse(DocError::new(r, message), Some(doc.sequence));
                    }
                    None => self.error(FetchError::io(format!("importing: {message}"))),
                }
            }
        }
    }
}

/// Size, SHA-256 and signature of a downloaded bundle, before anything is unpacked.
pub fn verify(
    path: &std::path::Path,
    doc: &ChannelDocument,
    keys: &super::doc::TrustedKeys,
) -> Result<(), DocError> {
    use sha2::Digest;
    use std::io::Read;
    let open = || {
        std::fs::File::open(path).map_err(|e| {
            DocError::new(
                RefusalReason::Size,
                format!("cannot read the download: {e}"),
            )
        })
    };
    let len = open()?.metadata().map(|m| m.len()).unwrap_or(0);
    if len != doc.size {
        return Err(DocError::new(
            RefusalReason::Size,
            format!(
                "the bundle is {len} bytes; its channel document says {}",
                doc.size
            ),
        ));
    }
    let mut hasher = sha2::Sha256::new();
    let mut f = std::io::BufReader::new(open()?);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| {
            DocError::new(
                RefusalReason::Size,
                format!("cannot read the download: {e}"),
            )
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let got = hex::encode(hasher.finalize());
    if !got.eq_ignore_ascii_case(&doc.sha256) {
        return Err(DocError::new(
            RefusalReason::Digest,
            format!(
                "the bundle's SHA-256 is {got}; its channel document says {}: damaged in storage or in transit",
                doc.sha256
            ),
        ));
    }
    keys.verify_reader(
        &format!("bundle {}", doc.bundle),
        std::io::BufReader::new(open()?),
        &doc.bundle_signature,
    )
}
