//! Reaching a channel: the settings and credentials a store needs besides its URL, and
//! [`ChannelUrl::open`], which turns a parsed URL into an [`ObjectStore`] rooted at the channel's
//! prefix. HQ's publisher writes through it and a box's [`super::fetch::Fetcher`] reads through
//! it, so both sides reach a URL the same way.
//!
//! Credentials never come from the URL ([`super::url`] refuses them there), the command line or
//! a box's config: they come from the environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`, as
//! `object_store`'s builders read them) and, optionally, from a credentials file whose values
//! take precedence. The file is read by one parser for both sides ([`parse_credentials`]): the
//! environment-file form (`AWS_ACCESS_KEY_ID=…`, systemd's `EnvironmentFile=`) or AWS's own
//! credentials form (`aws_access_key_id = …` under a `[profile]`). Nothing here logs or displays
//! a value read from either; [`StoreConfig`]'s `Debug` shows setting names only.

use std::path::{Path as FsPath, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ClientOptions, ObjectStore, RetryConfig};

use super::url::{ChannelUrl, Kind, Side, UrlError};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("credentials file {}: {problem}", path.display())]
    Credentials {
        path: PathBuf,
        problem: CredentialsProblem,
    },
    #[error("channel {url}: {why}")]
    Open { url: String, why: String },
}

/// What is wrong with a credentials file. Only names and line numbers are ever shown: the
/// values are secrets.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsProblem {
    #[error("cannot read it: {0}")]
    Unreadable(std::io::Error),
    #[error(
        "line {0} is neither NAME=value (AWS_ACCESS_KEY_ID=…, or aws_access_key_id = … under a [profile]) nor a [section]"
    )]
    NotNameValue(usize),
    #[error("line {line}: '{name}' is not an AWS_*, GOOGLE_* or AZURE_* setting")]
    NotAStoreSetting { line: usize, name: String },
    #[error("line {line}: '{name}' is not a setting of the {store} store")]
    UnknownSetting {
        line: usize,
        name: String,
        store: &'static str,
    },
    #[error("it must set both aws_access_key_id and aws_secret_access_key")]
    HalfKeyPair,
}

/// How a store is reached besides its URL.
#[derive(Clone)]
pub struct StoreConfig {
    /// Read `AWS_*` / `GOOGLE_*` / `AZURE_*` from the environment (the builders' `from_env`).
    pub use_env: bool,
    /// Lower-case `object_store` config keys and values (`aws_access_key_id`, `aws_endpoint`,
    /// …), applied after the environment, in order. Values are secrets: never logged.
    pub options: Vec<(String, String)>,
    pub retry: RetryConfig,
    /// Timeouts and the like: the base the environment and `options` are applied over.
    pub client: ClientOptions,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.options.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("StoreConfig")
            .field("use_env", &self.use_env)
            .field("options", &names)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
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
            client: ClientOptions::new(),
        }
    }
}

impl StoreConfig {
    /// The settings of a credentials file ([`read_credentials`]) added to these.
    pub fn with_credentials_file(mut self, path: &FsPath) -> Result<Self, StoreError> {
        let settings = read_credentials(path).map_err(|problem| StoreError::Credentials {
            path: path.into(),
            problem,
        })?;
        self.options.extend(settings);
        Ok(self)
    }

    /// Whether `options` hold an S3 key pair (the environment may hold one too).
    pub fn has_key_pair(&self) -> bool {
        has_key_pair(&self.options)
    }
}

fn has_key_pair(options: &[(String, String)]) -> bool {
    let set = |name: &str| options.iter().any(|(k, v)| k == name && !v.is_empty());
    set("aws_access_key_id") && set("aws_secret_access_key")
}

/// Reads a credentials file ([`parse_credentials`]), warning when others may read it.
pub fn read_credentials(path: &FsPath) -> Result<Vec<(String, String)>, CredentialsProblem> {
    let text = std::fs::read_to_string(path).map_err(CredentialsProblem::Unreadable)?;
    warn_if_readable_by_others(path);
    parse_credentials(&text)
}

/// The settings in a credentials file, as lower-case `object_store` keys: `NAME=value` lines
/// (`export` and quotes allowed, names as the environment's: `AWS_SECRET_ACCESS_KEY=…`) or AWS's
/// credentials form (`aws_access_key_id = …`; `[profile]` lines and `;` comments skipped).
/// A name no store knows is refused, as is a key id without its secret or the other way round.
pub fn parse_credentials(text: &str) -> Result<Vec<(String, String)>, CredentialsProblem> {
    let mut settings = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with(['#', ';', '[']) {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((name, value)) = line.split_once('=') else {
            return Err(CredentialsProblem::NotNameValue(n + 1));
        };
        let shown = name.trim();
        let mut name = shown.to_ascii_lowercase();
        // AWS's credentials files also spell the keys without their prefix.
        if ["access_key_id", "secret_access_key", "session_token"].contains(&name.as_str()) {
            name = format!("aws_{name}");
        }
        let line = n + 1;
        let (store, known) = match name.split('_').next() {
            Some("aws") => ("S3", name.parse::<AmazonS3ConfigKey>().is_ok()),
            Some("google") => ("GCS", name.parse::<GoogleConfigKey>().is_ok()),
            Some("azure") => ("Azure", name.parse::<AzureConfigKey>().is_ok()),
            _ => {
                let name = shown.into();
                return Err(CredentialsProblem::NotAStoreSetting { line, name });
            }
        };
        if !known {
            let name = shown.into();
            return Err(CredentialsProblem::UnknownSetting { line, name, store });
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        settings.push((name, value.to_string()));
    }
    let set = |k: &str| settings.iter().any(|(n, v)| n == k && !v.is_empty());
    if set("aws_access_key_id") != set("aws_secret_access_key") {
        return Err(CredentialsProblem::HalfKeyPair);
    }
    Ok(settings)
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

/// The environment's settings for one store, as its builder's `from_env` reads them (`AWS_*` →
/// `aws_*`, and the older name it also honours, in the same order). Read here rather than
/// through `from_env` because the client options must come first: `with_client_options`
/// replaces whatever the environment set (`AWS_ALLOW_HTTP`, a proxy).
fn environment(prefix: &str) -> Vec<(String, String)> {
    let older = |name: &str, key: &str| std::env::var(name).ok().map(|v| (key.to_string(), v));
    let named = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| (k.to_ascii_lowercase(), v));
    match prefix {
        "GOOGLE_" => older("SERVICE_ACCOUNT", "google_service_account")
            .into_iter()
            .chain(named)
            .collect(),
        "AZURE_" => named
            .chain(older("IDENTITY_ENDPOINT", "azure_msi_endpoint"))
            .collect(),
        _ => named.collect(),
    }
}

/// Applies the environment (unknown names skipped, as `from_env` does) and then `cfg.options`
/// meant for this store (unknown names refused: someone wrote them) to a builder.
fn configure<B, K: FromStr>(
    mut builder: B,
    cfg: &StoreConfig,
    env_prefix: &str,
    store: &str,
    set: impl Fn(B, K, &str) -> B,
) -> Result<B, String> {
    if cfg.use_env {
        for (k, v) in environment(env_prefix) {
            if let Ok(key) = k.parse() {
                builder = set(builder, key, &v);
            }
        }
    }
    let prefix = env_prefix.to_ascii_lowercase();
    for (k, v) in cfg.options.iter().filter(|(k, _)| k.starts_with(&prefix)) {
        let key = k.parse().map_err(|_| {
            format!(
                "'{}' is not a setting of the {store} store",
                k.to_ascii_uppercase()
            )
        })?;
        builder = set(builder, key, v);
    }
    Ok(builder)
}

impl ChannelUrl {
    /// Opens the channel's store: for publishing, a local folder is created; for reading, it must
    /// exist.
    pub fn open(&self, cfg: &StoreConfig) -> Result<ChannelStore, StoreError> {
        let fail = |why: String| StoreError::Open {
            url: self.to_string(),
            why,
        };
        let (root, client, retry) = (self.root(), cfg.client.clone(), cfg.retry.clone());
        // The three cloud builders have the same methods, but no trait in common.
        macro_rules! cloud {
            ($builder:ident, $key:ident, $env:literal, $store:literal) => {{
                let b = $builder::new().with_client_options(client);
                let b = configure(b, cfg, $env, $store, |b, k: $key, v| b.with_config(k, v));
                let s = b.map_err(fail)?.with_url(root).with_retry(retry).build();
                Arc::new(s.map_err(|e| fail(e.to_string()))?)
            }};
        }
        let store: Arc<dyn ObjectStore> = match self.kind() {
            Kind::Folder => {
                let dir = FsPath::new(root);
                if self.side() == Side::Publish {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| fail(format!("cannot create the folder: {e}")))?;
                } else if !dir.is_dir() {
                    return Err(fail("the folder does not exist".into()));
                }
                Arc::new(
                    object_store::local::LocalFileSystem::new_with_prefix(dir)
                        .map_err(|e| fail(e.to_string()))?,
                )
            }
            Kind::S3 => cloud!(AmazonS3Builder, AmazonS3ConfigKey, "AWS_", "S3"),
            Kind::Gcs => cloud!(GoogleCloudStorageBuilder, GoogleConfigKey, "GOOGLE_", "GCS"),
            Kind::Azure => cloud!(MicrosoftAzureBuilder, AzureConfigKey, "AZURE_", "Azure"),
            Kind::Http => {
                // The URL says http:// on purpose (a LAN origin, the tests' nginx).
                let plain = root.starts_with("http://");
                let s = object_store::http::HttpBuilder::new()
                    .with_url(root)
                    .with_client_options(client.with_allow_http(plain))
                    .with_retry(retry)
                    .build();
                Arc::new(s.map_err(|e| fail(e.to_string()))?)
            }
        };
        let store: Arc<dyn ObjectStore> = if self.prefix().is_empty() {
            store
        } else {
            let prefix = Path::parse(self.prefix()).map_err(|e| fail(e.to_string()))?;
            Arc::new(PrefixStore::new(store, prefix))
        };
        Ok(ChannelStore {
            store,
            url: self.clone(),
        })
    }
}

/// An opened channel: object names (`channel.json`, `bundles/…`) are relative to its prefix.
#[derive(Debug, Clone)]
pub struct ChannelStore {
    pub store: Arc<dyn ObjectStore>,
    pub url: ChannelUrl,
}

impl ChannelStore {
    /// The store path of an object name relative to the channel.
    pub fn object(&self, name: &str) -> Result<Path, UrlError> {
        self.url.object(name)
    }

    /// The channel's URL, for messages.
    pub fn url(&self) -> &str {
        self.url.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_read_the_env_file_and_aws_forms_and_never_show_a_value() {
        let env = "# HQ's writer\nAWS_ACCESS_KEY_ID=AKIAEXAMPLE\nexport AWS_SECRET_ACCESS_KEY=\"s3cr3t\"\nAWS_SESSION_TOKEN='FwoGZXIvYXdz'\nGOOGLE_SERVICE_ACCOUNT=/k.json\n";
        assert_eq!(
            parse_credentials(env).unwrap(),
            [
                ("aws_access_key_id", "AKIAEXAMPLE"),
                ("aws_secret_access_key", "s3cr3t"),
                ("aws_session_token", "FwoGZXIvYXdz"),
                ("google_service_account", "/k.json"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        let ini = "[default]\naws_access_key_id = AKIDEXAMPLE\n; old\naws_secret_access_key = wJalrXUtnFEMI\n[other]\nsession_token = FwoG\n";
        let got = parse_credentials(ini).unwrap();
        assert_eq!(
            got[1],
            ("aws_secret_access_key".into(), "wJalrXUtnFEMI".into())
        );
        assert_eq!(got[2], ("aws_session_token".into(), "FwoG".into()));
        let cfg = StoreConfig {
            options: got,
            ..Default::default()
        };
        assert!(cfg.has_key_pair());
        let shown = format!("{cfg:?}");
        assert!(shown.contains("aws_secret_access_key"), "{shown}");
        assert!(!shown.contains("AKID") && !shown.contains("wJal") && !shown.contains("FwoG"));
        // An endpoint alone is fine for HQ (keys from the environment); a box asks for a pair.
        let only = parse_credentials("AWS_ENDPOINT=http://127.0.0.1:9000\n").unwrap();
        assert!(!has_key_pair(&only));
    }

    #[test]
    fn bad_credentials_name_the_line_or_the_key_never_a_value() {
        for (text, says) in [
            (
                "AWS_SECRET_ACCESS_KEY s3cr3t\n",
                "line 1 is neither NAME=value",
            ),
            (
                "# c\nPASSWORD=s3cr3t\n",
                "line 2: 'PASSWORD' is not an AWS_*",
            ),
            (
                "aws_secret_key = s3cr3t\n",
                "'aws_secret_key' is not a setting of the S3 store",
            ),
            ("GOOGLE_NOPE=s3cr3t\n", "of the GCS store"),
            ("AZURE_NOPE=s3cr3t\n", "of the Azure store"),
            ("aws_access_key_id = AKIAs3cr3t\n", "aws_secret_access_key"),
            (
                "AWS_ACCESS_KEY_ID=\nAWS_SECRET_ACCESS_KEY=s3cr3t\n",
                "must set both",
            ),
        ] {
            let e = parse_credentials(text).unwrap_err().to_string();
            assert!(e.contains(says), "{text}: {e}");
            assert!(!e.contains("s3cr3t"), "{e}");
        }
    }

    #[test]
    fn a_credentials_file_is_read_into_the_options() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("creds");
        std::fs::write(
            &p,
            "AWS_ACCESS_KEY_ID=AKIAEXAMPLE\nAWS_SECRET_ACCESS_KEY=s3cr3t\n",
        )
        .unwrap();
        let cfg = StoreConfig::default().with_credentials_file(&p).unwrap();
        assert_eq!(cfg.options.len(), 2);
        let e = StoreConfig::default()
            .with_credentials_file(&dir.path().join("missing"))
            .unwrap_err();
        assert!(
            matches!(
                &e,
                StoreError::Credentials {
                    problem: CredentialsProblem::Unreadable(_),
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("missing: cannot read it"), "{e}");
    }

    #[test]
    fn a_setting_the_store_does_not_know_is_named_when_it_is_opened() {
        let cfg = StoreConfig {
            use_env: false,
            options: vec![("aws_no_such_thing".into(), "x".into())],
            ..Default::default()
        };
        let e = ChannelUrl::new("s3://bucket", Side::Publish)
            .unwrap()
            .open(&cfg)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("AWS_NO_SUCH_THING") && e.contains("channel s3://bucket"),
            "{e}"
        );
    }

    #[test]
    fn every_remote_kind_opens_without_a_request() {
        let cfg = StoreConfig {
            use_env: false,
            options: vec![
                ("aws_region".into(), "us-east-1".into()),
                ("azure_storage_account_name".into(), "acct".into()),
                ("azure_skip_signature".into(), "true".into()),
                ("google_skip_signature".into(), "true".into()),
            ],
            ..Default::default()
        };
        for (url, side) in [
            ("s3://fleet/eu", Side::Publish),
            ("s3://fleet/eu", Side::Subscribe),
            ("gs://fleet/eu", Side::Publish),
            ("az://container/eu", Side::Publish),
            ("https://cdn.example.com/eu", Side::Subscribe),
            ("http://127.0.0.1:9/eu", Side::Subscribe),
        ] {
            let ch = ChannelUrl::new(url, side).unwrap().open(&cfg);
            let ch = ch.unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(ch.url(), url);
            assert_eq!(ch.object("channel.json").unwrap().as_ref(), "channel.json");
        }
    }

    #[tokio::test]
    async fn a_local_folder_channel_reads_back_what_was_put() {
        use object_store::ObjectStoreExt;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/ch", dir.path().display());
        let read = ChannelUrl::new(&url, Side::Subscribe).unwrap();
        let e = read.open(&StoreConfig::default()).unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
        let ch = ChannelUrl::new(&url, Side::Publish)
            .unwrap()
            .open(&StoreConfig::default())
            .unwrap();
        let name = ch.object("bundles/x.tar").unwrap();
        ch.store.put(&name, b"abc".to_vec().into()).await.unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("ch/bundles/x.tar")).unwrap(),
            b"abc"
        );
        let read = read.open(&StoreConfig::default()).unwrap();
        let got = read.store.get(&name).await.unwrap().bytes().await.unwrap();
        assert_eq!(&got[..], b"abc");
        // A plain path is HQ's too.
        let plain = dir.path().join("plain");
        let ch = ChannelUrl::new(plain.to_str().unwrap(), Side::Publish)
            .unwrap()
            .open(&StoreConfig::default())
            .unwrap();
        ch.store.put(&name, b"d".to_vec().into()).await.unwrap();
        assert!(plain.join("bundles/x.tar").is_file());
    }
}
