//! Where a channel lives: one URL becomes an [`ObjectStore`] rooted at the channel's prefix.
//! The publisher writes through it and the subscriber reads through it, so both sides agree on
//! what a URL means.
//!
//! | URL | store | writable |
//! | --- | --- | --- |
//! | `s3://bucket/prefix` (also S3-compatible stores: `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`) | S3 | yes |
//! | `gs://bucket/prefix` | Google Cloud Storage | yes |
//! | `az://container/prefix` (account: `AZURE_STORAGE_ACCOUNT_NAME`) | Azure Blob Storage | yes |
//! | `file:///abs/folder`, or a plain path | a local folder | yes |
//! | `https://host/prefix`, `http://host/prefix` | a plain HTTP origin or CDN | no |
//!
//! Credentials never come from the URL (a URL with a user, password or query string is refused)
//! and never from the command line: they come from the environment (`AWS_*`, `GOOGLE_*`,
//! `AZURE_*`, as `object_store`'s builders read them) and, optionally, from a credentials file of
//! `NAME=value` lines with the same names (systemd's `EnvironmentFile=` format), whose values
//! take precedence. Nothing here logs or displays a value read from either.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ClientOptions, ObjectStore, RetryConfig};

/// What kind of storage a channel URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    S3,
    Gcs,
    Azure,
    Local,
    /// A plain HTTP(S) origin: boxes read from it, nothing can publish to it.
    Http,
}

impl Kind {
    pub fn writable(self) -> bool {
        self != Kind::Http
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("channel URL '{url}': {why}")]
    BadUrl { url: String, why: String },
    #[error(
        "{url} is an HTTP origin, which is read-only: publish to the bucket or folder behind it (s3://…, gs://…, az://…, file://…) and let the origin serve that"
    )]
    ReadOnly { url: String },
    #[error("credentials file {path}: {why}")]
    Credentials { path: PathBuf, why: String },
    #[error("channel {url}: {why}")]
    Open { url: String, why: String },
}

/// How a store is configured besides its URL.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Read `AWS_*` / `GOOGLE_*` / `AZURE_*` from the environment (the builders' `from_env`).
    pub use_env: bool,
    /// Lower-case `object_store` config keys and values (`aws_access_key_id`, `aws_endpoint`,
    /// …), applied after the environment. Values are secrets: never logged.
    pub options: Vec<(String, String)>,
    pub retry: RetryConfig,
}

impl Default for StoreConfig {
    /// The environment, and a few quick retries: a person at HQ waits for the answer.
    fn default() -> Self {
        Self {
            use_env: true,
            options: Vec::new(),
            retry: RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(60),
                ..Default::default()
            },
        }
    }
}

impl StoreConfig {
    /// The environment plus a credentials file (`NAME=value` lines, `#` comments, optional
    /// quotes, names as the environment variables: `AWS_ACCESS_KEY_ID=…`).
    pub fn with_credentials_file(mut self, path: &FsPath) -> Result<Self, StoreError> {
        let bad = |why: String| StoreError::Credentials {
            path: path.into(),
            why,
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        warn_if_readable_by_others(path);
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            // Only the name is ever shown: the value is a secret.
            let Some((name, value)) = line.split_once('=') else {
                return Err(bad(format!(
                    "line {} is not NAME=value (e.g. AWS_ACCESS_KEY_ID=…)",
                    n + 1
                )));
            };
            let name = name.trim();
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(value);
            if !["AWS_", "GOOGLE_", "AZURE_"]
                .iter()
                .any(|p| name.starts_with(p))
            {
                return Err(bad(format!(
                    "line {}: '{name}' is not an AWS_*, GOOGLE_* or AZURE_* setting",
                    n + 1
                )));
            }
            self.options
                .push((name.to_ascii_lowercase(), value.to_string()));
        }
        Ok(self)
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &FsPath) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path)
        && m.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(file = %path.display(), "the credentials file can be read by other users; chmod 600 it");
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_: &FsPath) {}

/// A parsed channel URL, before any store is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub kind: Kind,
    /// `s3://bucket`, `https://host:port`, or the local folder.
    pub root: String,
    /// The channel's prefix inside the bucket or origin ("" for its top).
    pub prefix: String,
    /// The URL as given.
    pub url: String,
}

impl Location {
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let bad = |why: &str| StoreError::BadUrl {
            url: redact(url),
            why: why.into(),
        };
        let Some((scheme, rest)) = url.split_once("://") else {
            if url.trim().is_empty() {
                return Err(bad("it is empty"));
            }
            return Ok(Self::local(url, FsPath::new(url)));
        };
        let kind = match scheme.to_ascii_lowercase().as_str() {
            "s3" | "s3a" => Kind::S3,
            "gs" => Kind::Gcs,
            "az" | "azure" | "abfs" | "abfss" | "adl" => Kind::Azure,
            "http" | "https" => Kind::Http,
            "file" => {
                let path = rest.strip_prefix("localhost").unwrap_or(rest);
                if !path.starts_with('/') {
                    return Err(bad(
                        "a file URL names an absolute folder: file:///srv/channel (or give the plain path)",
                    ));
                }
                return Ok(Self::local(url, FsPath::new(path)));
            }
            _ => {
                return Err(bad(
                    "use s3://bucket/prefix, gs://bucket/prefix, az://container/prefix, file:///folder, a folder path, or https://host/prefix",
                ));
            }
        };
        if rest.contains(['?', '#']) {
            return Err(bad(
                "a channel URL carries no query or fragment; credentials belong in the environment or a credentials file",
            ));
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.contains('@') {
            return Err(bad(
                "a channel URL carries no user or password; credentials belong in the environment or a credentials file",
            ));
        }
        if authority.is_empty() {
            return Err(bad(match kind {
                Kind::Http => "no host",
                _ => "no bucket (s3://bucket/prefix)",
            }));
        }
        let prefix = path.trim_matches('/').to_string();
        if !prefix.is_empty() {
            Path::parse(&prefix).map_err(|e| bad(&format!("the prefix '{prefix}': {e}")))?;
        }
        Ok(Self {
            kind,
            root: format!("{}://{authority}", scheme.to_ascii_lowercase()),
            prefix,
            url: url.into(),
        })
    }

    fn local(url: &str, path: &FsPath) -> Self {
        Self {
            kind: Kind::Local,
            root: path.display().to_string(),
            prefix: String::new(),
            url: url.into(),
        }
    }

    /// Opens the store. For writing, an HTTP origin is refused and a local folder is created.
    pub fn open(&self, cfg: &StoreConfig, write: bool) -> Result<ChannelStore, StoreError> {
        if write && !self.kind.writable() {
            return Err(StoreError::ReadOnly {
                url: self.url.clone(),
            });
        }
        let open_err = |why: String| StoreError::Open {
            url: self.url.clone(),
            why,
        };
        let store: Arc<dyn ObjectStore> = match self.kind {
            Kind::Local => {
                let dir = PathBuf::from(&self.root);
                if write {
                    std::fs::create_dir_all(&dir)
                        .map_err(|e| open_err(format!("cannot create the folder: {e}")))?;
                } else if !dir.is_dir() {
                    return Err(open_err("the folder does not exist".into()));
                }
                Arc::new(
                    object_store::local::LocalFileSystem::new_with_prefix(&dir)
                        .map_err(|e| open_err(e.to_string()))?,
                )
            }
            Kind::S3 => self.build_s3(cfg).map_err(open_err)?,
            Kind::Gcs => self.build_gcs(cfg).map_err(open_err)?,
            Kind::Azure => self.build_azure(cfg).map_err(open_err)?,
            Kind::Http => self.build_http(cfg).map_err(open_err)?,
        };
        let store: Arc<dyn ObjectStore> = if self.prefix.is_empty() {
            store
        } else {
            let prefix = Path::parse(&self.prefix).map_err(|e| open_err(e.to_string()))?;
            Arc::new(PrefixStore::new(store, prefix))
        };
        Ok(ChannelStore {
            store,
            location: self.clone(),
        })
    }

    fn build_s3(&self, cfg: &StoreConfig) -> Result<Arc<dyn ObjectStore>, String> {
        use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
        let mut b = if cfg.use_env {
            AmazonS3Builder::from_env()
        } else {
            AmazonS3Builder::new()
        };
        for (k, v) in settings_for(&cfg.options, "aws_") {
            let key: AmazonS3ConfigKey = k.parse().map_err(|_| unknown_key(k, "S3"))?;
            b = b.with_config(key, v);
        }
        let b = b.with_url(&self.root).with_retry(cfg.retry.clone());
        Ok(Arc::new(b.build().map_err(|e| e.to_string())?))
    }

    fn build_gcs(&self, cfg: &StoreConfig) -> Result<Arc<dyn ObjectStore>, String> {
        use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
        let mut b = if cfg.use_env {
            GoogleCloudStorageBuilder::from_env()
        } else {
            GoogleCloudStorageBuilder::new()
        };
        for (k, v) in settings_for(&cfg.options, "google_") {
            let key: GoogleConfigKey = k.parse().map_err(|_| unknown_key(k, "GCS"))?;
            b = b.with_config(key, v);
        }
        let b = b.with_url(&self.root).with_retry(cfg.retry.clone());
        Ok(Arc::new(b.build().map_err(|e| e.to_string())?))
    }

    fn build_azure(&self, cfg: &StoreConfig) -> Result<Arc<dyn ObjectStore>, String> {
        use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
        let mut b = if cfg.use_env {
            MicrosoftAzureBuilder::from_env()
        } else {
            MicrosoftAzureBuilder::new()
        };
        for (k, v) in settings_for(&cfg.options, "azure_") {
            let key: AzureConfigKey = k.parse().map_err(|_| unknown_key(k, "Azure"))?;
            b = b.with_config(key, v);
        }
        let b = b.with_url(&self.root).with_retry(cfg.retry.clone());
        Ok(Arc::new(b.build().map_err(|e| e.to_string())?))
    }

    fn build_http(&self, cfg: &StoreConfig) -> Result<Arc<dyn ObjectStore>, String> {
        // The URL says http:// on purpose (a LAN origin, the tests' nginx); https needs nothing.
        let plain = self.root.starts_with("http://");
        let b = object_store::http::HttpBuilder::new()
            .with_url(&self.root)
            .with_client_options(ClientOptions::new().with_allow_http(plain))
            .with_retry(cfg.retry.clone());
        Ok(Arc::new(b.build().map_err(|e| e.to_string())?))
    }
}

/// A URL as it may be shown: a user, password or query (which could hold a token) replaced by
/// `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.into();
    };
    let (rest, query) = match rest.find(['?', '#']) {
        Some(i) => (&rest[..i], "?***"),
        None => (rest, ""),
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => authority.to_string(),
    };
    let slash = if rest.contains('/') { "/" } else { "" };
    format!("{scheme}://{authority}{slash}{path}{query}")
}

/// The settings of `options` meant for a store whose keys start with `prefix` (a credentials
/// file may hold several stores' settings).
fn settings_for<'a>(
    options: &'a [(String, String)],
    prefix: &'a str,
) -> impl Iterator<Item = &'a (String, String)> {
    options.iter().filter(move |(k, _)| k.starts_with(prefix))
}

fn unknown_key(key: &str, store: &str) -> String {
    format!(
        "'{}' is not a setting of the {store} store",
        key.to_ascii_uppercase()
    )
}

/// An opened channel: object names (`channel.json`, `bundles/…`) are relative to its prefix.
#[derive(Debug, Clone)]
pub struct ChannelStore {
    pub store: Arc<dyn ObjectStore>,
    pub location: Location,
}

impl ChannelStore {
    /// The store path of an object name relative to the channel.
    pub fn object(&self, name: &str) -> Result<Path, StoreError> {
        Path::parse(name).map_err(|e| StoreError::BadUrl {
            url: self.location.url.clone(),
            why: format!("object name '{name}': {e}"),
        })
    }

    /// The channel's URL, for messages.
    pub fn url(&self) -> &str {
        &self.location.url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_store_and_prefix() {
        let l = Location::parse("s3://fleet/chains/spring/").unwrap();
        assert_eq!(
            (l.kind, l.root.as_str(), l.prefix.as_str()),
            (Kind::S3, "s3://fleet", "chains/spring")
        );
        let l = Location::parse("https://cdn.example.com/channel").unwrap();
        assert_eq!((l.kind, l.prefix.as_str()), (Kind::Http, "channel"));
        assert!(!l.kind.writable());
        let l = Location::parse("gs://b").unwrap();
        assert_eq!((l.kind, l.prefix.as_str()), (Kind::Gcs, ""));
        let l = Location::parse("az://container/p").unwrap();
        assert_eq!(l.kind, Kind::Azure);
        let l = Location::parse("file:///srv/channel").unwrap();
        assert_eq!((l.kind, l.root.as_str()), (Kind::Local, "/srv/channel"));
        let l = Location::parse("relative/folder").unwrap();
        assert_eq!((l.kind, l.root.as_str()), (Kind::Local, "relative/folder"));
    }

    #[test]
    fn credentials_in_urls_and_unknown_schemes_are_refused() {
        for (url, says) in [
            ("s3://key:secret@bucket/p", "no user or password"),
            ("https://cdn/p?sig=abc", "no query"),
            ("ftp://host/p", "use s3://"),
            ("s3:///p", "no bucket"),
            ("file://relative", "absolute folder"),
            ("s3://b/a/../c", "prefix"),
        ] {
            let e = Location::parse(url).unwrap_err().to_string();
            assert!(e.contains(says), "{url}: {e}");
            assert!(!e.contains("secret") && !e.contains("sig=abc"), "{e}");
        }
    }

    #[test]
    fn an_http_origin_is_refused_for_writing_with_the_fix() {
        let l = Location::parse("http://127.0.0.1:9/channel").unwrap();
        let e = l
            .open(&StoreConfig::default(), true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("read-only") && e.contains("bucket"), "{e}");
        // Reading is what boxes do.
        l.open(&StoreConfig::default(), false).unwrap();
    }

    #[test]
    fn a_credentials_file_is_read_and_its_values_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("creds");
        std::fs::write(
            &p,
            "# HQ's writer\nAWS_ACCESS_KEY_ID=AKIAEXAMPLE\nexport AWS_SECRET_ACCESS_KEY=\"s3cr3t\"\n",
        )
        .unwrap();
        let cfg = StoreConfig::default().with_credentials_file(&p).unwrap();
        assert_eq!(
            cfg.options,
            vec![
                ("aws_access_key_id".into(), "AKIAEXAMPLE".into()),
                ("aws_secret_access_key".into(), "s3cr3t".into()),
            ]
        );
        std::fs::write(&p, "AWS_SECRET_ACCESS_KEY s3cr3t\n").unwrap();
        let e = StoreConfig::default()
            .with_credentials_file(&p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && !e.contains("s3cr3t"), "{e}");
        std::fs::write(&p, "PASSWORD=s3cr3t\n").unwrap();
        let e = StoreConfig::default()
            .with_credentials_file(&p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("'PASSWORD'") && !e.contains("s3cr3t"), "{e}");
        // A setting the store does not know is named when the store is built.
        let cfg = StoreConfig {
            use_env: false,
            options: vec![("aws_no_such_thing".into(), "x".into())],
            ..Default::default()
        };
        let e = Location::parse("s3://b")
            .unwrap()
            .open(&cfg, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("AWS_NO_SUCH_THING"), "{e}");
    }

    #[tokio::test]
    async fn a_local_folder_channel_reads_back_what_was_put() {
        use object_store::ObjectStoreExt;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/ch", dir.path().display());
        let ch = Location::parse(&url)
            .unwrap()
            .open(&StoreConfig::default(), true)
            .unwrap();
        let name = ch.object("bundles/x.tar").unwrap();
        ch.store.put(&name, b"abc".to_vec().into()).await.unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("ch/bundles/x.tar")).unwrap(),
            b"abc"
        );
        let read = Location::parse(&url)
            .unwrap()
            .open(&StoreConfig::default(), false)
            .unwrap();
        let got = read.store.get(&name).await.unwrap().bytes().await.unwrap();
        assert_eq!(&got[..], b"abc");
    }
}
