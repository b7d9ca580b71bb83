//! Reading a channel: its URL, the credentials for it, and the two requests a box makes — the
//! conditional GET of `channel.json` and the resumable GET of a bundle — through `object_store`,
//! so S3 and S3-compatible stores, plain HTTP(S) origins (a CDN) and local folders (`file://`,
//! for tests) are one code path.
//!
//! Data enters as object bytes and leaves as a document in memory or a partial file in the data
//! folder that grows across attempts (HTTP Range from its length). Nothing here trusts what it
//! reads: signatures, sizes and digests are checked by the caller ([`super::subscribe`]).
//!
//! Errors carry a [`ErrorKind`] for `vitrine_channel_errors_total` and a message for the
//! technician. Messages never hold credentials: object_store signs S3 requests in headers, not
//! URLs, and a channel URL with a user name or password in it is refused at config time.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, GetOptions, GetRange, ObjectStore, RetryConfig};

use super::doc::{DOCUMENT, DOCUMENT_MAX, DocError, RefusalReason};
use super::metrics::ErrorKind;

/// Where a channel lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `s3://bucket/prefix`: an S3 or S3-compatible bucket (endpoint from the config or
    /// `AWS_ENDPOINT`).
    S3 { bucket: String, prefix: String },
    /// `https://host/prefix` (or `http://`): a read-only origin, e.g. a CDN in front of the bucket.
    Http { base: String },
    /// `file:///folder`: a local folder (tests, or a channel mounted from elsewhere).
    File { root: PathBuf },
}

/// A parsed channel URL. Its text (`Display`) holds no credentials and is what logs,
/// `/api/status` and version sources show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelUrl {
    pub location: Location,
    text: String,
}

impl std::fmt::Display for ChannelUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// `url` with any user name and password replaced, for error messages: a refused URL is echoed
/// to the journal, which must not receive a secret either.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.into();
    };
    let host_end = rest.find('/').unwrap_or(rest.len());
    match rest[..host_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.into(),
    }
}

/// Path segments of a prefix: no empty, `.` or `..` parts (an object name is never a path).
fn prefix_segments(path: &str, what: &str) -> Result<Vec<String>, String> {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(vec![]);
    }
    let parts: Vec<String> = trimmed.split('/').map(str::to_string).collect();
    if parts.iter().any(|p| p.is_empty() || p == "." || p == "..") {
        return Err(format!(
            "{what}: the path '{path}' has an empty, '.' or '..' part"
        ));
    }
    Ok(parts)
}

impl ChannelUrl {
    /// `s3://bucket/prefix`, `https://host[:port]/prefix`, `http://…` or `file:///folder`.
    pub fn parse(url: &str) -> Result<Self, String> {
        let what = format!("catalog.channel.url = \"{}\"", redact(url));
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(format!(
                "{what} is not a URL: use s3://bucket/prefix, https://host/prefix or file:///folder"
            ));
        };
        if rest.contains(['?', '#']) {
            return Err(format!(
                "{what}: a channel URL takes no query or fragment (credentials go in catalog.channel.credentials_file or the environment)"
            ));
        }
        match scheme.to_ascii_lowercase().as_str() {
            "s3" => {
                let (bucket, path) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.contains('@') {
                    return Err(format!(
                        "{what}: credentials do not belong in the URL; put them in catalog.channel.credentials_file or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
                    ));
                }
                let ok = (3..=63).contains(&bucket.len())
                    && bucket.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                    });
                if !ok {
                    return Err(format!(
                        "{what}: '{bucket}' is not a bucket name (3–63 lower-case letters, digits, '-' or '.')"
                    ));
                }
                let prefix = prefix_segments(path, &what)?.join("/");
                let text = if prefix.is_empty() {
                    format!("s3://{bucket}")
                } else {
                    format!("s3://{bucket}/{prefix}")
                };
                Ok(Self {
                    location: Location::S3 {
                        bucket: bucket.into(),
                        prefix,
                    },
                    text,
                })
            }
            s @ ("http" | "https") => {
                let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
                if host.contains('@') {
                    return Err(format!(
                        "{what}: a user name or password does not belong in the URL (it would show in logs and /api/status); serve the channel without one, or from a bucket with catalog.channel.credentials_file"
                    ));
                }
                if host.is_empty() {
                    return Err(format!("{what} names no host"));
                }
                let path = prefix_segments(path, &what)?.join("/");
                let text = if path.is_empty() {
                    format!("{s}://{host}")
                } else {
                    format!("{s}://{host}/{path}")
                };
                Ok(Self {
                    location: Location::Http { base: text.clone() },
                    text,
                })
            }
            "file" => {
                if !rest.starts_with('/') {
                    return Err(format!(
                        "{what}: a file URL needs an absolute folder, file:///srv/channel"
                    ));
                }
                let root = PathBuf::from(format!("/{}", prefix_segments(rest, &what)?.join("/")));
                Ok(Self {
                    text: format!("file://{}", root.display()),
                    location: Location::File { root },
                })
            }
            other => Err(format!(
                "{what}: scheme '{other}' is not supported; use s3:// (S3 or an S3-compatible store), https:// (an origin or CDN) or file://"
            )),
        }
    }

    pub fn is_s3(&self) -> bool {
        matches!(self.location, Location::S3 { .. })
    }
}

/// S3 keys. `Debug` shows only which are present: they must never reach a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials(<access key>, <secret>{})",
            if self.session_token.is_some() {
                ", <session token>"
            } else {
                ""
            }
        )
    }
}

impl Credentials {
    /// Reads AWS-style keys: the `~/.aws/credentials` INI form (`aws_access_key_id = …`, any
    /// `[section]` lines ignored) or environment-file lines (`AWS_ACCESS_KEY_ID=…`, as a systemd
    /// `EnvironmentFile=` holds them). Errors name the missing key, never a value.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (mut id, mut secret, mut token) = (None, None, None);
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with(['#', ';', '[']) {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                return Err(
                    "a line is neither `key = value` nor a [section] (the file should hold aws_access_key_id and aws_secret_access_key)".into(),
                );
            };
            let k = k.trim().trim_start_matches("export ").trim();
            let v = v.trim().trim_matches('"').to_string();
            match k.to_ascii_lowercase().as_str() {
                "aws_access_key_id" | "access_key_id" => id = Some(v),
                "aws_secret_access_key" | "secret_access_key" => secret = Some(v),
                "aws_session_token" | "session_token" => token = Some(v),
                _ => {}
            }
        }
        match (id, secret) {
            (Some(a), Some(s)) if !a.is_empty() && !s.is_empty() => Ok(Self {
                access_key_id: a,
                secret_access_key: s,
                session_token: token.filter(|t| !t.is_empty()),
            }),
            _ => Err("it must set both aws_access_key_id and aws_secret_access_key".into()),
        }
    }
}

/// How to reach an S3 channel besides its URL.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// An S3-compatible endpoint (`http://minio:9000`); `None`: `AWS_ENDPOINT` or AWS itself.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// `None`: `AWS_*` from the environment, or unsigned requests (a public bucket) without them.
    pub credentials: Option<Credentials>,
}

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
    store: Arc<dyn ObjectStore>,
    /// The channel's prefix inside its bucket ("" outside S3: the origin URL or folder has it).
    prefix: String,
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
    pub fn build(url: &ChannelUrl, s3: &S3Options, timeout: Duration) -> Result<Self, FetchError> {
        let fail = |e: object_store::Error| FetchError::io(format!("channel {url}: {e}"));
        let (store, prefix, local): (Arc<dyn ObjectStore>, _, _) = match &url.location {
            Location::S3 { bucket, prefix } => {
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_retry(retry_config())
                    .with_client_options(client_options(timeout));
                if let Some(ep) = &s3.endpoint {
                    b = b
                        .with_endpoint(ep)
                        .with_allow_http(ep.starts_with("http://"));
                }
                if let Some(r) = &s3.region {
                    b = b.with_region(r);
                }
                match &s3.credentials {
                    Some(c) => {
                        b = b
                            .with_access_key_id(&c.access_key_id)
                            .with_secret_access_key(&c.secret_access_key);
                        if let Some(t) = &c.session_token {
                            b = b.with_token(t);
                        }
                    }
                    // Without keys object_store would ask the cloud's instance metadata service,
                    // which a shop's box does not have: a public bucket takes unsigned requests.
                    None if std::env::var_os("AWS_ACCESS_KEY_ID").is_none_or(|v| v.is_empty()) => {
                        b = b.with_skip_signature(true);
                    }
                    None => {}
                }
                (Arc::new(b.build().map_err(fail)?), prefix.clone(), false)
            }
            Location::Http { base } => {
                let store = object_store::http::HttpBuilder::new()
                    .with_url(base)
                    .with_retry(retry_config())
                    .with_client_options(client_options(timeout).with_allow_http(true))
                    .build()
                    .map_err(fail)?;
                (Arc::new(store), String::new(), false)
            }
            Location::File { root } => {
                let store =
                    object_store::local::LocalFileSystem::new_with_prefix(root).map_err(fail)?;
                (Arc::new(store), String::new(), true)
            }
        };
        Ok(Self {
            store,
            prefix,
            local,
        })
    }

    fn object(&self, name: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(name)
        } else {
            ObjectPath::from(format!("{}/{name}", self.prefix))
        }
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
        let r = match self.store.get_opts(&self.object(DOCUMENT), opts).await {
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
        let r = self
            .store
            .get_opts(&self.object(object), opts)
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

    #[test]
    fn urls_parse_into_locations_without_credentials() {
        let u = ChannelUrl::parse("s3://fleet-eu/stores/paris/").unwrap();
        assert_eq!(
            u.location,
            Location::S3 {
                bucket: "fleet-eu".into(),
                prefix: "stores/paris".into()
            }
        );
        assert_eq!(u.to_string(), "s3://fleet-eu/stores/paris");
        let u = ChannelUrl::parse("https://cdn.example.com:8443/eu").unwrap();
        assert_eq!(
            u.location,
            Location::Http {
                base: "https://cdn.example.com:8443/eu".into()
            }
        );
        let u = ChannelUrl::parse("file:///srv/channel/").unwrap();
        assert_eq!(
            u.location,
            Location::File {
                root: "/srv/channel".into()
            }
        );
    }

    #[test]
    fn bad_urls_say_what_to_write_instead() {
        for (url, says) in [
            ("https://hq:secret@cdn.example.com/eu", "password"),
            ("s3://key:secret@bucket/x", "credentials"),
            ("https://cdn.example.com/eu?token=abc", "no query"),
            ("ftp://host/x", "not supported"),
            ("s3://Bad_Bucket/x", "bucket name"),
            ("s3://bucket/a/../b", "'..'"),
            ("file://relative/x", "absolute"),
            ("cdn.example.com/eu", "not a URL"),
        ] {
            let e = ChannelUrl::parse(url).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
            // The refusal quotes the URL, but never the secret in it.
            assert!(!e.contains("secret"), "{e}");
        }
    }

    #[test]
    fn credentials_read_ini_and_env_forms_and_never_print() {
        let ini =
            "[default]\naws_access_key_id = AKIDEXAMPLE\naws_secret_access_key = wJalrXUtnFEMI\n";
        let c = Credentials::parse(ini).unwrap();
        assert_eq!(c.access_key_id, "AKIDEXAMPLE");
        assert_eq!(c.secret_access_key, "wJalrXUtnFEMI");
        let env = "# fleet keys\nAWS_ACCESS_KEY_ID=AKIDEXAMPLE\nexport AWS_SECRET_ACCESS_KEY=\"wJalrXUtnFEMI\"\nAWS_SESSION_TOKEN=FwoGZXIvYXdz\n";
        let c2 = Credentials::parse(env).unwrap();
        assert_eq!(c2.secret_access_key, "wJalrXUtnFEMI");
        assert_eq!(c2.session_token.as_deref(), Some("FwoGZXIvYXdz"));
        let shown = format!("{c2:?}");
        assert!(!shown.contains("AKID") && !shown.contains("wJal") && !shown.contains("FwoG"));
        let e = Credentials::parse("aws_access_key_id = AKIDEXAMPLE\n").unwrap_err();
        assert!(e.contains("aws_secret_access_key"), "{e}");
        assert!(!e.contains("AKID"), "{e}");
    }

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
        let url = ChannelUrl::parse(&format!("file://{}", root.display())).unwrap();
        let f = Fetcher::build(&url, &S3Options::default(), Duration::from_secs(5)).unwrap();
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
