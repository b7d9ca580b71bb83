//! Reading a channel: the two requests a box makes — the conditional GET of `channel.json` and
//! the resumable GET of a bundle — through the channel's store ([`super::store`]), so S3 and
//! S3-compatible stores, plain HTTP(S) origins (a CDN) and local folders (`file://`, for tests)
//! are one code path.
//!
//! Data enters as object bytes and leaves as a document in memory or a partial file in the data
//! folder that grows across attempts (HTTP Range from its length). Nothing here trusts what it
//! reads: signatures, sizes and digests are checked by the caller ([`super::subscribe`]).
//!
//! Errors carry a [`ErrorKind`] for `vitrine_channel_errors_total` and a message for the
//! technician. Messages never hold credentials: object_store signs S3 requests in headers, not
//! URLs, and a channel URL with a user name, password or query in it is refused at config time
//! ([`super::url`]).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, GetOptions, GetRange, RetryConfig};

use super::doc::{DOCUMENT, DOCUMENT_MAX, DocError, RefusalReason};
use super::metrics::ErrorKind;
use super::store::{ChannelStore, StoreConfig};
use super::url::Kind;

pub use super::url::ChannelUrl;

/// A failed request, with its kind for the metric.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct FetchError {
    pub kind: ErrorKind,
    pub message: String,
}

impl FetchError {
    pub fn io(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Io,
            message: message.into(),
        }
    }

    fn from_store(e: &object_store::Error, what: &str, local: bool) -> Self {
        Self {
            kind: classify(e, local),
            message: format!("{what}: {e}"),
        }
    }
}

/// Sorts an object_store error into the metric's kinds: transport problems by the HTTP client's
/// own classification, answers by status, and anything from a local folder as `io`.
fn classify(e: &object_store::Error, local: bool) -> ErrorKind {
    use object_store::Error as E;
    if local {
        return ErrorKind::Io;
    }
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(h) = err.downcast_ref::<object_store::client::HttpError>() {
            return match h.kind() {
                object_store::client::HttpErrorKind::Timeout => ErrorKind::Timeout,
                _ => ErrorKind::Unreachable,
            };
        }
        current = err.source();
    }
    match e {
        E::NotFound { .. }
        | E::PermissionDenied { .. }
        | E::Unauthenticated { .. }
        | E::Precondition { .. } => ErrorKind::HttpStatus,
        // The retry layer's error type is private; its text names the status.
        other if other.to_string().contains("Server returned") => ErrorKind::HttpStatus,
        _ => ErrorKind::Unreachable,
    }
}

/// What a conditional fetch of the document found.
#[derive(Debug)]
pub enum Document {
    /// Same ETag as last time (a 304, or a store that ignores `If-None-Match` and answered the
    /// same ETag): nothing to do.
    Unchanged,
    Changed {
        bytes: Vec<u8>,
        etag: Option<String>,
    },
}

/// How a download ended.
#[derive(Debug)]
pub enum DownloadError {
    /// Try again at the next poll, from where the partial file ends.
    Fetch(FetchError),
    /// The object is not the size the document says: the partial file is useless.
    Refused(DocError),
    /// The daemon is shutting down.
    Stopped,
}

/// Reads one channel. Built once per channel; cheap to share.
#[derive(Debug, Clone)]
pub struct Fetcher {
    channel: ChannelStore,
    local: bool,
}

/// Retries inside one request stay short: the poller's own schedule is the real retry, and a
/// request that hangs for minutes would only delay what the status says.
fn retry_config() -> RetryConfig {
    RetryConfig {
        max_retries: 2,
        retry_timeout: Duration::from_secs(10),
        ..Default::default()
    }
}

/// `timeout` bounds connecting and each read, not the whole transfer: a large bundle over a slow
/// line takes as long as it takes, a stalled one is cut.
fn client_options(timeout: Duration) -> ClientOptions {
    ClientOptions::new()
        .with_connect_timeout(timeout.min(Duration::from_secs(10)))
        .with_read_timeout(timeout)
        .with_timeout_disabled()
}

impl Fetcher {
    pub fn build(
        url: &ChannelUrl,
        cfg: &StoreConfig,
        timeout: Duration,
    ) -> Result<Self, FetchError> {
        let mut cfg = StoreConfig {
            retry: retry_config(),
            client: client_options(timeout),
            ..cfg.clone()
        };
        // Without keys object_store would ask the cloud's instance metadata service, which a
        // shop's box does not have: a public bucket takes unsigned requests.
        let env_keys = std::env::var_os("AWS_ACCESS_KEY_ID").is_some_and(|v| !v.is_empty());
        if url.is_s3() && !cfg.has_key_pair() && !(cfg.use_env && env_keys) {
            cfg.options
                .push(("aws_skip_signature".into(), "true".into()));
        }
        let channel = url.open(&cfg).map_err(|e| FetchError::io(e.to_string()))?;
        Ok(Self {
            local: url.kind() == Kind::Folder,
            channel,
        })
    }

    /// An object under the channel; names come from a verified document, so a bad one is a bug
    /// in the publisher, reported like a failed read.
    fn object(&self, name: &str) -> Result<ObjectPath, FetchError> {
        self.channel
            .object(name)
            .map_err(|e| FetchError::io(e.to_string()))
    }

    /// GETs `channel.json` unless its ETag is still `etag`. Reads at most [`DOCUMENT_MAX`] + 1
    /// bytes (the parser refuses anything longer). `fetched` hears every byte read.
    pub async fn document(
        &self,
        etag: Option<&str>,
        fetched: &dyn Fn(u64),
    ) -> Result<Document, FetchError> {
        let opts = GetOptions {
            if_none_match: etag.map(str::to_string),
            ..Default::default()
        };
        let r = match self
            .channel
            .store
            .get_opts(&self.object(DOCUMENT)?, opts)
            .await
        {
            Ok(r) => r,
            Err(object_store::Error::NotModified { .. }) => return Ok(Document::Unchanged),
            Err(e) => return Err(FetchError::from_store(&e, DOCUMENT, self.local)),
        };
        let new_etag = r.meta.e_tag.clone();
        // s3s-fs (and some S3-compatible stores) ignore If-None-Match and answer 200.
        if new_etag.is_some() && new_etag.as_deref() == etag {
            return Ok(Document::Unchanged);
        }
        let mut stream = r.into_stream();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| FetchError::from_store(&e, DOCUMENT, self.local))?;
            fetched(chunk.len() as u64);
            bytes.extend_from_slice(&chunk);
            if bytes.len() as u64 > DOCUMENT_MAX {
                break;
            }
        }
        Ok(Document::Changed {
            bytes,
            etag: new_etag,
        })
    }

    /// Downloads `object` into `part`, continuing from the partial file's length (an HTTP Range
    /// request), until it holds `size` bytes. `progress(bytes_in_file)` hears each chunk;
    /// `fetched(n)` each chunk's length.
    pub async fn download(
        &self,
        object: &str,
        size: u64,
        part: &Path,
        progress: &mut dyn FnMut(u64),
        fetched: &dyn Fn(u64),
    ) -> Result<(), DownloadError> {
        let io = |e: std::io::Error| {
            DownloadError::Fetch(FetchError::io(format!("{}: {e}", part.display())))
        };
        let mut have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
        if have > size {
            std::fs::remove_file(part).map_err(io)?;
            have = 0;
        }
        if have == size {
            return Ok(());
        }
        let opts = GetOptions {
            range: (have > 0).then_some(GetRange::Offset(have)),
            ..Default::default()
        };
        let path = self.object(object).map_err(DownloadError::Fetch)?;
        let r = self
            .channel
            .store
            .get_opts(&path, opts)
            .await
            .map_err(|e| {
                let err = FetchError::from_store(&e, object, self.local);
                // A range the server cannot serve (the object shrank, or changed under the same
                // name) would fail the same way every time: start afresh next time.
                if have > 0 && err.kind == ErrorKind::HttpStatus {
                    let _ = std::fs::remove_file(part);
                }
                DownloadError::Fetch(err)
            })?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(part)
            .map_err(io)?;
        let mut stream = r.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    let _ = file.flush();
                    return Err(DownloadError::Fetch(FetchError::from_store(
                        &e, object, self.local,
                    )));
                }
            };
            fetched(chunk.len() as u64);
            if have + chunk.len() as u64 > size {
                drop(file);
                let _ = std::fs::remove_file(part);
                return Err(DownloadError::Refused(DocError::new(
                    RefusalReason::Size,
                    format!(
                        "the bundle {object} is larger than the {size} bytes its channel document says"
                    ),
                )));
            }
            file.write_all(&chunk).map_err(io)?;
            have += chunk.len() as u64;
            progress(have);
        }
        file.flush().map_err(io)?;
        if have < size {
            drop(file);
            let _ = std::fs::remove_file(part);
            return Err(DownloadError::Refused(DocError::new(
                RefusalReason::Size,
                format!(
                    "the bundle {object} ended after {have} bytes; its channel document says {size}"
                ),
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::channel::url::Side;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_local_channel_answers_unchanged_for_the_same_etag_and_resumes_downloads() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("channel");
        std::fs::create_dir_all(root.join("bundles")).unwrap();
        std::fs::write(root.join(DOCUMENT), b"{}").unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(root.join("bundles/b.tar.gz"), &data).unwrap();
        let url = ChannelUrl::new(&format!("file://{}", root.display()), Side::Subscribe).unwrap();
        let f = Fetcher::build(&url, &StoreConfig::default(), Duration::from_secs(5)).unwrap();
        let rt = rt();
        let Document::Changed { bytes, etag } = rt.block_on(f.document(None, &|_| {})).unwrap()
        else {
            panic!("first fetch must read the document");
        };
        assert_eq!(bytes, b"{}");
        assert!(matches!(
            rt.block_on(f.document(etag.as_deref(), &|_| {})).unwrap(),
            Document::Unchanged
        ));

        // A partial file from an earlier attempt: only the rest is read.
        let part = dir.path().join("b.part");
        std::fs::write(&part, &data[..70_000]).unwrap();
        let fetched = std::sync::atomic::AtomicU64::new(0);
        let count = |n| {
            fetched.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        };
        rt.block_on(f.download(
            "bundles/b.tar.gz",
            data.len() as u64,
            &part,
            &mut |_| {},
            &count,
        ))
        .unwrap();
        assert_eq!(std::fs::read(&part).unwrap(), data);
        assert_eq!(fetched.into_inner(), 130_000);

        // The document says more than the object holds: refused, partial file gone.
        std::fs::remove_file(&part).unwrap();
        let e = rt
            .block_on(f.download(
                "bundles/b.tar.gz",
                data.len() as u64 + 10,
                &part,
                &mut |_| {},
                &|_| {},
            ))
            .unwrap_err();
        assert!(
            matches!(&e, DownloadError::Refused(d) if d.reason == RefusalReason::Size),
            "{e:?}"
        );
        assert!(!part.exists());
    }
}
