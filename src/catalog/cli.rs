//! `vitrine catalog import | verify | list | activate | rollback`: the staff CLI over the same
//! [`CatalogService`] the daemon uses, with a progress bar on a terminal; and HQ's
//! `vitrine catalog keygen | publish` for catalog channels ([`super::channel`]).
//!
//! Writing needs the data folder's lock; while the daemon runs it holds that lock, and these
//! commands say to use its staff API instead (`list` and `verify` only read and always work).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use super::bundle::{self, ReadOptions, UnpackLimits};
use super::channel::{keys, publish};
use super::import::{CatalogService, ImportInput, ImportRequest, Job, JobKind, ServiceConfig};
use super::store::{Store, VersionInfo, VersionSummary};
use super::{Catalog, CatalogError, IndexParams};
use crate::config::Settings;
use crate::scratch::ScratchDir;

/// A bar on stderr (hidden when stderr is not a terminal).
pub fn progress_bar(len: u64, message: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({eta} left)")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(message.to_string());
    bar
}

fn service(settings: &Settings) -> Result<CatalogService, CatalogError> {
    let empty = Catalog::empty(
        settings.catalog.path.clone(),
        settings.embedder.spec.output.dim,
        &settings.catalog.index,
    );
    CatalogService::open(
        ServiceConfig::from_settings(settings),
        Arc::new(arc_swap::ArcSwap::from_pointee(empty)),
        Box::new(|_| {}),
    )
}

/// Shows a job's stage and progress until `done` is set.
fn follow(job: Arc<Job>, done: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let bar = progress_bar(0, "starting");
        let mut stage = None;
        while !done.load(Ordering::Relaxed) {
            let s = job.status();
            if stage != Some(s.stage) {
                stage = Some(s.stage);
                bar.set_message(s.stage.as_str());
                bar.set_position(0);
            }
            bar.set_length(s.total.max(s.done));
            bar.set_position(s.done);
            std::thread::sleep(Duration::from_millis(100));
        }
        bar.finish_and_clear();
    })
}

/// Imports a bundle folder or archive as a new version (activated unless `activate` is false).
pub fn import(
    settings: &Settings,
    path: &Path,
    activate: bool,
    label: Option<String>,
) -> Result<VersionInfo, CatalogError> {
    let service = service(settings)?;
    service.writable()?;
    let input = if path.is_dir() {
        ImportInput::Folder(path.into())
    } else {
        ImportInput::Archive {
            path: path.into(),
            owned: false,
        }
    };
    let job = service.new_job(JobKind::Import);
    let done = Arc::new(AtomicBool::new(false));
    let bar = follow(job.clone(), done.clone());
    let req = ImportRequest {
        input,
        activate,
        label,
        source: Some(format!("cli {}", path.display())),
    };
    let result = service.import_as(&job, req);
    done.store(true, Ordering::Relaxed);
    let _ = bar.join();
    result
}

/// Checks a bundle as an import would, without storing anything; returns a short report.
pub fn verify(settings: &Settings, path: &Path) -> Result<String, CatalogError> {
    let spec = &settings.embedder.spec;
    let scratch;
    let dir = if path.is_dir() {
        path.to_path_buf()
    } else {
        scratch = ScratchDir::new("verify")
            .map_err(|(path, source)| CatalogError::Write { path, source })?;
        let limits = UnpackLimits::new(
            settings.catalog.unpack_limit,
            settings.embedder.spec.output.dim,
        );
        bundle::unpack(path, scratch.path(), limits)?
    };
    let images_only = super::Manifest::load_optional(&dir)
        .ok()
        .flatten()
        .is_some_and(|m| m.embeddings == "none");
    let b = bundle::read_bundle(
        &dir,
        Some(&super::EmbedderFingerprint::running(
            spec,
            &settings.similarity,
        )),
        &ReadOptions {
            decode_images: images_only,
            require_manifest: dir != path,
        },
    );
    let b = b?;
    let mut groups = std::collections::BTreeMap::<&str, usize>::new();
    for it in &b.items {
        *groups.entry(it.group.as_str()).or_default() += 1;
    }
    let mut report = format!(
        "{}: OK — '{}', {} items ({}), embeddings: {}",
        path.display(),
        b.manifest.version,
        b.items.len(),
        groups
            .iter()
            .map(|(g, n)| format!("{g} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        if b.vectors.is_some() {
            b.manifest.embeddings.clone()
        } else {
            "none (computed at import)".into()
        }
    );
    for w in &b.warnings {
        report.push_str(&format!("\nwarning: {w}"));
    }
    Ok(report)
}

pub fn list(settings: &Settings) -> Result<Vec<VersionSummary>, CatalogError> {
    Store::open(&settings.catalog.data_dir, false)?.list()
}

pub fn activate(settings: &Settings, id: &str) -> Result<VersionInfo, CatalogError> {
    service(settings)?.activate(id)
}

pub fn rollback(settings: &Settings) -> Result<VersionInfo, CatalogError> {
    service(settings)?.rollback()
}

/// `vitrine catalog keygen --out DIR`: encrypted with [`keys::PASSWORD_ENV`] when it is set.
pub fn keygen(out: &Path) -> Result<keys::Generated, keys::KeyError> {
    let password = std::env::var(keys::PASSWORD_ENV)
        .ok()
        .filter(|p| !p.is_empty());
    if password.is_none() {
        tracing::warn!(
            "{} is not set: the secret key is written unencrypted; keep it where only the publisher can read it",
            keys::PASSWORD_ENV
        );
    }
    keys::keygen(out, password)
}

/// What a box's config says publishing must match: its `[catalog.index]` and
/// `catalog.unpack_limit_mb`. Only `[catalog]` is read, so HQ needs none of the models a box
/// runs and none of its files.
pub fn box_catalog_settings(config: &Path) -> Result<(IndexParams, u64), String> {
    #[derive(serde::Deserialize)]
    struct Partial {
        catalog: PartialCatalog,
    }
    #[derive(serde::Deserialize)]
    struct PartialCatalog {
        #[serde(default)]
        index: IndexParams,
        unpack_limit_mb: Option<u64>,
    }
    let text = std::fs::read_to_string(config)
        .map_err(|e| format!("{}: cannot read it: {e}", config.display()))?;
    let p: Partial = toml::from_str(&text).map_err(|e| format!("{}: {e}", config.display()))?;
    let limit = p
        .catalog
        .unpack_limit_mb
        .map_or(publish::UNPACK_LIMIT_DEFAULT, |mb| mb << 20);
    Ok((p.catalog.index, limit))
}

/// `vitrine catalog publish`: loads the key (its password from [`keys::PASSWORD_ENV`]) and
/// publishes on a runtime of its own.
pub fn publish(
    opts: &publish::PublishOptions,
    key: &Path,
) -> Result<publish::PublishReport, publish::PublishError> {
    let password = std::env::var(keys::PASSWORD_ENV).ok();
    let key = keys::SigningKey::load(key, password)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| publish::PublishError::Refused(format!("cannot start the runtime: {e}")))?;
    rt.block_on(publish::publish(opts, &key))
}
