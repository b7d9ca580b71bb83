//! An upload's way in: may it start ([`CatalogService::begin_upload`]), its body streamed to
//! the work folder under the size limit, then the writer, the import thread, and the answer as
//! soon as the bundle is validated ([`CatalogService::import_upload`]). The body is any stream
//! of byte chunks, so nothing here knows about HTTP; the staff API drains what it refuses.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::sync::OwnedMutexGuard;

use super::{CatalogService, ImportInput, ImportRequest, WRITER_WAIT};
use crate::catalog::CatalogError;
use crate::catalog::job::{Job, JobError, JobKind, JobStatus, Stage};

/// How an upload is to be imported.
#[derive(Debug, Clone)]
pub struct UploadRequest {
    /// Make the new version live as soon as it is stored.
    pub activate: bool,
    /// Overrides the manifest's version label.
    pub label: Option<String>,
    /// An upload that sends nothing for this long is abandoned (`catalog.receive_timeout_s`).
    pub stall: Duration,
}

/// An upload the service agreed to receive: its job, its file, and the one receiving slot.
pub struct Upload {
    job: Arc<Job>,
    path: PathBuf,
    receiving: OwnedMutexGuard<()>,
}

impl CatalogService {
    /// Whether an upload of `declared` bytes (when the client said) may be sent now. Refused
    /// when over the limit, while any catalog change runs (an import takes minutes: better said
    /// before the client sends its bundle), while another upload is being received, or when
    /// this process only reads the catalog. The writer itself is taken only once the body is
    /// in, so a slow client never holds it.
    pub fn begin_upload(&self, declared: Option<u64>) -> Result<Upload, CatalogError> {
        let limit = self.cfg.upload_limit;
        if declared.is_some_and(|n| n > limit) {
            return Err(CatalogError::UploadTooLarge { limit });
        }
        let receiving = match (
            self.receiving.clone().try_lock_owned(),
            self.writer.try_lock(),
        ) {
            (Ok(g), Ok(_)) => g,
            (_, Err(_)) => return Err(self.busy()),
            (Err(_), _) => return Err(CatalogError::UploadInProgress),
        };
        let store = self.store()?;
        let job = self.new_job(JobKind::Import);
        job.stage(Stage::Receiving, declared.unwrap_or(0));
        let path = store.work_dir().join(format!("{}.upload", job.id()));
        Ok(Upload {
            job,
            path,
            receiving,
        })
    }

    /// Receives the upload's `body` and imports it on a writer thread; answers with the job
    /// once the bundle passed validation (the import runs on), or with why it was refused (the
    /// job named when its report says more). On [`CatalogError::UploadTooLarge`] the rest of
    /// `body` is left unread.
    pub async fn import_upload<S, B, E>(
        self: &Arc<Self>,
        upload: Upload,
        body: &mut S,
        req: UploadRequest,
    ) -> Result<JobStatus, JobError>
    where
        S: Stream<Item = Result<B, E>> + Unpin,
        B: AsRef<[u8]>,
        E: std::fmt::Display,
    {
        let Upload {
            job,
            path,
            receiving,
        } = upload;
        let limit = self.cfg.upload_limit;
        let received = receive(body, &path, limit, req.stall, |n| job.progress(n)).await;
        drop(receiving);
        let n = match received {
            Ok(0) => return Err(abandon(&job, &path, CatalogError::EmptyUpload).await),
            Ok(n) => n,
            Err(e) => return Err(abandon(&job, &path, e).await),
        };
        // Received in full: only now does the upload need the catalog's writer.
        let writer = match self.writer_within(WRITER_WAIT).await {
            Ok(g) => g,
            Err(e) => return Err(abandon(&job, &path, e).await),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let import = ImportRequest {
            input: ImportInput::Archive { path, owned: true },
            activate: req.activate,
            label: req.label,
            source: Some(format!("upload of {n} bytes")),
        };
        let (me, job2) = (self.clone(), job.clone());
        self.spawn_writer(writer, move |_writer| {
            let _ = me.run_import(&job2, import, Some(tx));
        })?;
        let id = job.id();
        match rx.await {
            Ok(Ok(())) => Ok(job.status()),
            Ok(Err(error)) => {
                // The import thread lets go of the writer right after telling us; wait for it so
                // a client that fixes its bundle and retries at once is not told "busy".
                let _ = tokio::time::timeout(Duration::from_secs(10), self.writer.lock()).await;
                Err(JobError {
                    error,
                    job: Some(id),
                })
            }
            Err(_) => Err(CatalogError::Threads(format!(
                "import job {id} ended before validating: {:?}",
                job.status().error
            ))
            .into()),
        }
    }
}

/// Ends an upload refused while it was received: its file goes, its job fails with `e`.
async fn abandon(job: &Job, path: &Path, e: CatalogError) -> JobError {
    let _ = tokio::fs::remove_file(path).await;
    job.fail(&e);
    e.into()
}

/// The next chunk of a body, or [`CatalogError::UploadStalled`] when none comes within `wait`.
pub async fn next_chunk<S, B, E>(stream: &mut S, wait: Duration) -> Result<Option<B>, CatalogError>
where
    S: Stream<Item = Result<B, E>> + Unpin,
    E: std::fmt::Display,
{
    match tokio::time::timeout(wait, stream.next()).await {
        Err(_) => Err(CatalogError::UploadStalled { waited: wait }),
        Ok(None) => Ok(None),
        Ok(Some(chunk)) => chunk
            .map(Some)
            .map_err(|e| CatalogError::UploadInterrupted(e.to_string())),
    }
}

/// Streams a body to `path`, refusing it past `limit` bytes or when it stalls for `wait`;
/// returns its size.
async fn receive<S, B, E>(
    stream: &mut S,
    path: &Path,
    limit: u64,
    wait: Duration,
    progress: impl Fn(u64),
) -> Result<u64, CatalogError>
where
    S: Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
    E: std::fmt::Display,
{
    let werr = |source| CatalogError::Write {
        path: path.into(),
        source,
    };
    let mut file = tokio::fs::File::create(path).await.map_err(werr)?;
    let mut n: u64 = 0;
    while let Some(chunk) = next_chunk(stream, wait).await? {
        let chunk = chunk.as_ref();
        n += chunk.len() as u64;
        if n > limit {
            return Err(CatalogError::UploadTooLarge { limit });
        }
        file.write_all(chunk).await.map_err(werr)?;
        progress(n);
    }
    file.flush().await.map_err(werr)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(n: usize, size: usize) -> impl Stream<Item = Result<Vec<u8>, String>> + Unpin {
        futures::stream::iter((0..n).map(move |_| Ok(vec![0u8; size])))
    }

    #[tokio::test]
    async fn a_chunked_upload_is_cut_off_at_the_limit() {
        // No declared length to refuse it up front: the limit holds while streaming, and the
        // rest is left for the caller to drain.
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("up");
        let mut body = chunks(10, 1000);
        let r = receive(&mut body, &p, 4500, Duration::from_secs(5), |_| {}).await;
        assert!(
            matches!(r, Err(CatalogError::UploadTooLarge { limit: 4500 })),
            "{r:?}"
        );
        assert_eq!(body.count().await, 5, "the rest is unread");
        let mut body = chunks(4, 1000);
        let n = receive(&mut body, &p, 4500, Duration::from_secs(5), |_| {})
            .await
            .expect("under the limit");
        assert_eq!(
            (n, std::fs::metadata(&p).expect("file").len()),
            (4000, 4000)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_upload_is_abandoned_and_a_broken_one_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("up");
        let mut silent = futures::stream::pending::<Result<Vec<u8>, String>>();
        let r = receive(&mut silent, &p, 4500, Duration::from_secs(3), |_| {}).await;
        assert!(
            matches!(r, Err(CatalogError::UploadStalled { waited }) if waited.as_secs() == 3),
            "{r:?}"
        );
        let mut broken = futures::stream::iter(vec![Ok(vec![1u8; 10]), Err("reset".to_string())]);
        let r = receive(&mut broken, &p, 4500, Duration::from_secs(3), |_| {}).await;
        assert!(
            matches!(&r, Err(CatalogError::UploadInterrupted(why)) if why == "reset"),
            "{r:?}"
        );
    }
}
