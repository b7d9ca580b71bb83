//! `vitrine catalog publish`: HQ's side of a channel. A bundle is checked as a box's import would
//! check it, signed, uploaded under its content address, and offered in a new signed channel
//! document.
//!
//! The order of writes is what keeps boxes safe while HQ publishes: the bundle object first, the
//! ledger, the document last. A box polling in between sees the old document (naming a bundle
//! that is still there) or the new one (naming a bundle already complete), never a document
//! naming something missing.
//!
//! Publishing is idempotent. Besides `channel.json` and `bundles/`, the channel holds HQ's
//! ledger, `published.json`: for each version ever published, a digest of its content (the files
//! of the unpacked bundle, so a folder and its archive are the same content and repacking with
//! another compressor changes nothing), whether it carried prebuilt indexes, and the object it
//! was published as. Boxes never read it (it is unsigned; whoever can write the bucket could
//! delete the channel anyway). With it:
//! - the same version, content and settings again: nothing is uploaded or written;
//! - the same version and content with another roll-out percentage or new revocations: a new
//!   document (sequence + 1) naming the object already there — no rebuild, no upload;
//! - the same version name with other content, or published with and now without prebuilt
//!   indexes (or the other way round): refused, since boxes know a version by its name;
//! - an earlier version again (a roll-back by re-publishing): its object, a new sequence.
//!
//! One publisher at a time per channel: the stores this runs on do not all offer
//! compare-and-swap, so two simultaneous publishes could both take sequence N + 1.

use std::io::Read;
use std::path::{Path, PathBuf};

use object_store::{ObjectStoreExt, PutMode, UpdateVersion};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::doc::{self, ChannelDocument, bundle_object_name};
use super::keys::SigningKey;
use super::store::{ChannelStore, StoreConfig, StoreError};
use super::url::{ChannelUrl, Side, UrlError};
use crate::catalog::bundle::{self, ReadOptions, UnpackLimits};
use crate::catalog::items::{EmbedderFingerprint, MANIFEST_MAX, Manifest};
use crate::catalog::{CatalogError, IndexParams, prebuilt};
use crate::scratch::ScratchDir;

/// HQ's record of what it published, under the channel's prefix (see the module header).
pub const LEDGER: &str = "published.json";
pub const LEDGER_FORMAT: &str = "vitrine-channel-ledger/1";

/// Parts of a multipart upload: large enough for S3's 5 MiB minimum with room, small enough
/// that two in flight cost little memory.
pub const PART_SIZE: usize = 16 << 20;

/// A box's default `catalog.unpack_limit_mb`, used when no config is given.
pub const UNPACK_LIMIT_DEFAULT: u64 = 3072 << 20;

#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// A bundle folder, `.tar` or `.tar.gz`.
    pub bundle: PathBuf,
    /// The channel URL (see [`super::url`]).
    pub channel: String,
    pub store: StoreConfig,
    /// Share of boxes that take this version; `None`: the current document's for the same
    /// version, else 100.
    pub rollout: Option<u8>,
    /// Versions to add to the channel's revocation list.
    pub revoke: Vec<String>,
    /// Build the boxes' indexes with these parameters into the bundle (`--with-index`).
    pub index: Option<IndexParams>,
    /// What the bundle may unpack to, as the boxes' `catalog.unpack_limit_mb`.
    pub unpack_limit: u64,
    pub part_size: usize,
}

impl PublishOptions {
    pub fn new(bundle: PathBuf, channel: String) -> Self {
        Self {
            bundle,
            channel,
            store: StoreConfig::default(),
            rollout: None,
            revoke: Vec::new(),
            index: None,
            unpack_limit: UNPACK_LIMIT_DEFAULT,
            part_size: PART_SIZE,
        }
    }
}

/// What a publish did.
#[derive(Debug, Clone, Serialize)]
pub struct PublishReport {
    pub channel: String,
    pub version: String,
    pub sequence: u64,
    /// The bundle's object name under the channel.
    pub bundle: String,
    pub size: u64,
    pub sha256: String,
    pub items: usize,
    pub rollout_percent: u8,
    pub revoked: Vec<String>,
    /// Prebuilt index parameters the bundle carries.
    pub prebuilt_index: Option<IndexParams>,
    /// False when the object was already in the channel.
    pub uploaded_bundle: bool,
    /// False when the channel already offered exactly this: nothing was written.
    pub wrote_document: bool,
    pub key_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] super::keys::KeyError),
    #[error("the bundle is refused: {0}")]
    Bundle(#[from] CatalogError),
    #[error("channel {url}: {what}: {source}")]
    Remote {
        url: String,
        what: String,
        source: object_store::Error,
    },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Refused(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot sign: {0}")]
    Sign(String),
}

/// One entry of the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub version: String,
    /// [`content_digest`] of the bundle as published.
    pub content_sha256: String,
    pub prebuilt_index: Option<IndexParams>,
    pub bundle: String,
    pub size: u64,
    pub sha256: String,
    pub bundle_signature: String,
    pub first_sequence: u64,
    pub published: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ledger {
    pub format: String,
    pub versions: Vec<LedgerEntry>,
}

/// The bundle as checked: unpacked under the scratch folder, with its archive.
struct Checked {
    /// The bundle's folder (inside the unpacked archive).
    root: PathBuf,
    /// The archive as it would be uploaded without prebuilt indexes: the file given, or the
    /// folder packed.
    archive: PathBuf,
    manifest: Manifest,
    items: usize,
    content: String,
}

/// Publishes `opts.bundle` to `opts.channel`, signed with `key`.
pub async fn publish(
    opts: &PublishOptions,
    key: &SigningKey,
) -> Result<PublishReport, PublishError> {
    // Refuses a read-only origin before any work is done.
    let channel = ChannelUrl::new(&opts.channel, Side::Publish)?.open(&opts.store)?;
    let (current, mut ledger, seen) = read_state(&channel).await?;
    // Debug builds: a test holds a publish here while another one writes the channel.
    crate::catalog::failpoint("publish-read");
    let scratch = ScratchDir::new("publish").map_err(|(path, source)| PublishError::Io {
        what: "cannot create the scratch folder",
        path,
        source,
    })?;
    tracing::info!(bundle = %opts.bundle.display(), "checking the bundle as a box's import would");
    let checked = {
        let (input, dir, limit, with_index) = (
            opts.bundle.clone(),
            scratch.path().to_path_buf(),
            opts.unpack_limit,
            opts.index.is_some(),
        );
        blocking(move || check_bundle(&input, &dir, limit, with_index)).await??
    };
    let version = checked.manifest.version.clone();
    let prior = ledger
        .versions
        .iter()
        .find(|e| e.version == version)
        .cloned();
    if let Some(e) = &prior {
        same_as_before(e, &checked.content, opts.index)?;
    }
    let revoked = merged_revocations(current.as_ref(), &opts.revoke);
    if revoked.contains(&version) {
        return Err(PublishError::Refused(format!(
            "version '{version}' is revoked in this channel: every box would refuse it; publish the catalog under a new version"
        )));
    }

    let (object, uploaded) = match &prior {
        Some(e) => (reuse(&channel, e, key, &scratch).await?, false),
        None => {
            let built = build_object(opts, key, &checked, &scratch).await?;
            if let Some(doc) = current.as_ref().filter(|d| d.version == version)
                && doc.sha256 != built.sha256
            {
                return Err(PublishError::Conflict(format!(
                    "version '{version}' is in the channel with other bytes (sha256 {}); a changed catalog needs a new version in its manifest.json",
                    doc.sha256
                )));
            }
            let uploaded = upload_if_missing(&channel, &built, opts.part_size).await?;
            (built, uploaded)
        }
    };

    let rollout = opts.rollout.unwrap_or_else(|| match &current {
        Some(d) if d.version == version => d.rollout_percent,
        _ => 100,
    });
    let embedder = checked.manifest.embedder.clone();
    let unchanged = current.as_ref().is_some_and(|d| {
        d.version == version
            && d.sha256 == object.sha256
            && d.rollout_percent == rollout
            && d.embedder == embedder
            && same_set(&d.revoked, &revoked)
    });
    let sequence = match (&current, unchanged) {
        (Some(d), true) => d.sequence,
        (Some(d), false) => d.sequence + 1,
        (None, _) => 1,
    };
    if prior.is_none() {
        ledger.format = LEDGER_FORMAT.into();
        ledger.versions.push(LedgerEntry {
            version: version.clone(),
            content_sha256: checked.content.clone(),
            prebuilt_index: opts.index,
            bundle: object.name.clone(),
            size: object.size,
            sha256: object.sha256.clone(),
            bundle_signature: object.signature.clone(),
            first_sequence: sequence,
            published: now(),
        });
        put_json(&channel, LEDGER, &ledger, &seen.ledger).await?;
    }
    if !unchanged {
        let doc = ChannelDocument {
            format: doc::FORMAT.into(),
            sequence,
            version: version.clone(),
            bundle: object.name.clone(),
            size: object.size,
            sha256: object.sha256.clone(),
            bundle_signature: object.signature.clone(),
            embedder,
            created: now(),
            rollout_percent: rollout,
            revoked: revoked.clone(),
            signature: String::new(),
        };
        put_json(&channel, doc::DOCUMENT, &signed(doc, key)?, &seen.document).await?;
    }
    Ok(PublishReport {
        channel: channel.url().into(),
        version,
        sequence,
        bundle: object.name,
        size: object.size,
        sha256: object.sha256,
        items: checked.items,
        rollout_percent: rollout,
        revoked,
        prebuilt_index: opts.index,
        uploaded_bundle: uploaded,
        wrote_document: !unchanged,
        key_id: key.key_id.clone(),
    })
}

/// Refuses to publish a version name again with other content, or with and now without
/// prebuilt indexes (or the other way round): boxes know a version by its name.
fn same_as_before(
    e: &LedgerEntry,
    content: &str,
    index: Option<IndexParams>,
) -> Result<(), PublishError> {
    let version = &e.version;
    if e.content_sha256 != content {
        return Err(PublishError::Conflict(format!(
            "version '{version}' was published on {} with other content (bundle {}); a changed catalog needs a new version in its manifest.json",
            e.published, e.bundle
        )));
    }
    if e.prebuilt_index != index {
        return Err(PublishError::Conflict(format!(
            "version '{version}' was published {}; publish it the same way, or give the bundle a new version in its manifest.json",
            match e.prebuilt_index {
                Some(p) => format!(
                    "with prebuilt indexes (M = {}, ef_construction = {})",
                    p.max_connections, p.ef_construction
                ),
                None => "without prebuilt indexes".into(),
            }
        )));
    }
    Ok(())
}

/// Runs CPU- and disk-bound work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, PublishError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PublishError::Refused(format!("internal error: {e}")))
}

/// The document with its signature, after the field checks every box runs.
fn signed(mut doc: ChannelDocument, key: &SigningKey) -> Result<ChannelDocument, PublishError> {
    doc.check_fields().map_err(PublishError::Refused)?;
    doc.signature = key
        .sign(&doc.signed_bytes()[..], "channel document")
        .map_err(PublishError::Sign)?;
    Ok(doc)
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// The revocations a new document carries: the current ones, then the new, each once.
fn merged_revocations(current: Option<&ChannelDocument>, new: &[String]) -> Vec<String> {
    let mut out: Vec<String> = current.map(|d| d.revoked.clone()).unwrap_or_default();
    for v in new {
        let v = v.trim();
        if !v.is_empty() && !out.iter().any(|o| o == v) {
            out.push(v.to_string());
        }
    }
    out
}

fn same_set(a: &[String], b: &[String]) -> bool {
    let a: std::collections::BTreeSet<&String> = a.iter().collect();
    let b: std::collections::BTreeSet<&String> = b.iter().collect();
    a == b
}

fn remote(channel: &ChannelStore, what: &str) -> impl FnOnce(object_store::Error) -> PublishError {
    let url = channel.url().to_string();
    let what = what.to_string();
    move |source| PublishError::Remote { url, what, source }
}

/// An object's bytes, or `None` when it does not exist; at most `max` bytes are accepted.
async fn get_small(
    channel: &ChannelStore,
    name: &str,
    max: u64,
) -> Result<Option<(Vec<u8>, UpdateVersion)>, PublishError> {
    let path = channel.object(name)?;
    match channel.store.get(&path).await {
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(remote(channel, &format!("reading {name}"))(e)),
        Ok(r) => {
            if r.meta.size > max {
                return Err(PublishError::Refused(format!(
                    "{name} in {} is {} bytes, more than such a file can be",
                    channel.url(),
                    r.meta.size
                )));
            }
            let seen = UpdateVersion {
                e_tag: r.meta.e_tag.clone(),
                version: r.meta.version.clone(),
            };
            let bytes = r
                .bytes()
                .await
                .map_err(remote(channel, &format!("reading {name}")))?;
            Ok(Some((bytes.to_vec(), seen)))
        }
    }
}

/// The document's and the ledger's versions as this publish read them (`None`: absent). Each is
/// written back only if it is still that version, so two publishes at once cannot both offer a
/// sequence number, nor one undo the other's ledger entry.
#[derive(Debug, Default)]
struct Seen {
    document: Option<UpdateVersion>,
    ledger: Option<UpdateVersion>,
}

/// The channel's current document and HQ's ledger, and the versions of both as read.
async fn read_state(
    channel: &ChannelStore,
) -> Result<(Option<ChannelDocument>, Ledger, Seen), PublishError> {
    let mut seen = Seen::default();
    let current = match get_small(channel, doc::DOCUMENT, doc::DOCUMENT_MAX).await? {
        None => None,
        Some((bytes, version)) => {
            seen.document = Some(version);
            let d: ChannelDocument = serde_json::from_slice(&bytes)
                .ok()
                .filter(|d: &ChannelDocument| d.format == doc::FORMAT)
                .ok_or_else(|| {
                    PublishError::Refused(format!(
                        "{}/{} is not a channel document this publisher understands; move it away only if you are sure no box follows this channel (boxes refuse any sequence below the one they accepted)",
                        channel.url(),
                        doc::DOCUMENT
                    ))
                })?;
            Some(d)
        }
    };
    let ledger = match get_small(channel, LEDGER, 64 << 20).await? {
        None => Ledger::default(),
        Some((bytes, version)) => {
            seen.ledger = Some(version);
            serde_json::from_slice::<Ledger>(&bytes)
                .ok()
                .filter(|l| l.format == LEDGER_FORMAT)
                .ok_or_else(|| {
                    PublishError::Refused(format!(
                        "{}/{LEDGER} is not a publisher's ledger; it records what each version's content was, so it is not overwritten",
                        channel.url()
                    ))
                })?
        }
    };
    Ok((current, ledger, seen))
}

/// Writes `name` if it is still as this publish read it (`seen`; `None`: still absent).
async fn put_json(
    channel: &ChannelStore,
    name: &str,
    value: &impl Serialize,
    seen: &Option<UpdateVersion>,
) -> Result<(), PublishError> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| PublishError::Refused(format!("internal error: {e}")))?;
    // Shared, not copied, by the fallback write below.
    let payload = object_store::PutPayload::from(bytes);
    let path = channel.object(name)?;
    let mode = match seen {
        Some(v) => PutMode::Update(v.clone()),
        None => PutMode::Create,
    };
    let put = channel
        .store
        .put_opts(&path, payload.clone(), mode.into())
        .await;
    match put {
        Ok(_) => Ok(()),
        Err(
            object_store::Error::Precondition { .. } | object_store::Error::AlreadyExists { .. },
        ) => Err(PublishError::Conflict(format!(
            "{name} in {} changed while this publish ran: another publish to the same channel came first. Boxes are offered that one, nothing of this one; run this publish again: it starts from the new document",
            channel.url()
        ))),
        // A local folder cannot compare versions (object_store's folder store has no
        // conditional replace): a folder channel has one writer, the machine it is on.
        Err(object_store::Error::NotImplemented { .. }) => channel
            .store
            .put(&path, payload)
            .await
            .map(|_| ())
            .map_err(remote(channel, &format!("writing {name}"))),
        Err(e) => Err(remote(channel, &format!("writing {name}"))(e)),
    }
}

/// The bundle object a document names.
struct Object {
    name: String,
    /// The local file, when this run made it.
    file: Option<PathBuf>,
    size: u64,
    sha256: String,
    signature: String,
}

/// Unpacks and checks the bundle as a box's import does, for the embedder its manifest
/// declares. A folder is packed first, so what is checked is what would be uploaded.
fn check_bundle(
    input: &Path,
    scratch: &Path,
    unpack_limit: u64,
    with_index: bool,
) -> Result<Checked, PublishError> {
    let archive = if input.is_dir() {
        let out = scratch.join("bundle.tar.gz");
        pack(input, &out).map_err(|source| PublishError::Io {
            what: "cannot pack the bundle folder",
            path: input.into(),
            source,
        })?;
        out
    } else {
        input.to_path_buf()
    };
    let declared = peek_manifest(&archive)?;
    let dim = declared.embedder.as_ref().map_or(0, |e| e.dim);
    let into = scratch.join("unpacked");
    std::fs::create_dir_all(&into).map_err(|source| PublishError::Io {
        what: "cannot create",
        path: into.clone(),
        source,
    })?;
    let root = bundle::unpack(&archive, &into, UnpackLimits::new(unpack_limit, dim))?;
    let images_only = declared.embeddings == "none";
    if images_only && with_index {
        return Err(PublishError::Refused(
            "this bundle carries images only (\"embeddings\": \"none\"): boxes compute its vectors, so there is nothing to index at HQ; publish it without --with-index, or make its embeddings first (vitrine catalog build)".into(),
        ));
    }
    let opts = ReadOptions {
        require_manifest: true,
        decode_images: images_only,
    };
    let b = bundle::read_bundle(&root, declared.embedder.as_ref(), &opts)?;
    for w in &b.warnings {
        tracing::warn!("{w}");
    }
    let content = content_digest(&root, with_index).map_err(|source| PublishError::Io {
        what: "cannot read",
        path: root.clone(),
        source,
    })?;
    Ok(Checked {
        root,
        archive,
        manifest: b.manifest,
        items: b.items.len(),
        content,
    })
}

/// The manifest of an archive, read without unpacking the rest (its size bounds the unpack).
fn peek_manifest(archive: &Path) -> Result<Manifest, PublishError> {
    let bad = |m: String| CatalogError::Invalid {
        path: archive.into(),
        problems: vec![m],
    };
    let io = |source| PublishError::Io {
        what: "cannot read",
        path: archive.into(),
        source,
    };
    let mut f = std::fs::File::open(archive).map_err(io)?;
    let mut magic = [0u8; 2];
    let gz = f.read(&mut magic).map_err(io)? == 2 && magic == [0x1f, 0x8b];
    let f = std::io::BufReader::new(std::fs::File::open(archive).map_err(io)?);
    let reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(f))
    } else {
        Box::new(f)
    };
    let corrupt = |e: std::io::Error| bad(format!("the archive cannot be read ({e})"));
    let mut tar = tar::Archive::new(reader);
    for entry in tar.entries().map_err(corrupt)? {
        let entry = entry.map_err(corrupt)?;
        let path = entry.path().map_err(corrupt)?.into_owned();
        let parts: Vec<_> = path
            .components()
            .filter(|c| !matches!(c, std::path::Component::CurDir))
            .collect();
        if parts.len() <= 2 && path.file_name().is_some_and(|n| n == "manifest.json") {
            let mut bytes = Vec::new();
            entry
                .take(MANIFEST_MAX + 1)
                .read_to_end(&mut bytes)
                .map_err(corrupt)?;
            return serde_json::from_slice(&bytes)
                .map_err(|e| bad(format!("manifest.json: {e}")).into());
        }
    }
    Err(bad("the archive has no manifest.json at its top (or inside one top folder)".into()).into())
}

/// SHA-256 over every file of the bundle folder (relative path, size, and the file's own
/// SHA-256, in path order): the same for a folder and any archive of it. `skip_index` leaves out
/// `index/`, which `--with-index` builds afresh.
pub fn content_digest(root: &Path, skip_index: bool) -> std::io::Result<String> {
    let mut h = Sha256::new();
    for rel in files(root)? {
        if skip_index && rel.starts_with(prebuilt::INDEX_DIR) {
            continue;
        }
        let (sha, size) = sha256_file(&root.join(&rel))?;
        h.update(rel.to_string_lossy().as_bytes());
        h.update([0]);
        h.update(size.to_le_bytes());
        h.update(sha.as_bytes());
    }
    Ok(hex::encode(h.finalize()))
}

/// Lower-case hex SHA-256 and length of a file, read in chunks.
pub fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let got = f.read(&mut buf)?;
        if got == 0 {
            break;
        }
        h.update(&buf[..got]);
        n += got as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

/// Every regular file under `root`, relative, sorted; anything else (a link, a device) is an
/// error, as it would be in an upload.
fn files(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in std::fs::read_dir(root.join(&rel))? {
            let e = e?;
            let t = e.file_type()?;
            let child = rel.join(e.file_name());
            if t.is_dir() {
                stack.push(child);
            } else if t.is_file() {
                out.push(child);
            } else {
                return Err(std::io::Error::other(format!(
                    "{} is neither a file nor a folder; bundles hold only those",
                    child.display()
                )));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Packs a bundle folder as a `.tar.gz` whose bytes depend only on the files' names and
/// contents (sorted, no times, owners or modes), so the same folder always gives the same
/// object. `manifest.json` goes first: a reader learns the bundle's size before the rest.
pub fn pack(dir: &Path, out: &Path) -> std::io::Result<()> {
    let mut names = files(dir)?;
    names.sort_by_key(|p| (p != Path::new("manifest.json"), p.clone()));
    let f = std::fs::File::create(out)?;
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(std::io::BufWriter::new(f), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    for rel in names {
        let path = dir.join(&rel);
        let file = std::fs::File::open(&path)?;
        let mut h = tar::Header::new_gnu();
        h.set_size(file.metadata()?.len());
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, &rel, file)?;
    }
    let mut w = tar.into_inner()?.finish()?;
    std::io::Write::flush(&mut w)?;
    w.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// The object for a version this run publishes: with prebuilt indexes built into the checked
/// bundle and repacked, or the archive as checked; hashed and signed.
async fn build_object(
    opts: &PublishOptions,
    key: &SigningKey,
    checked: &Checked,
    scratch: &ScratchDir,
) -> Result<Object, PublishError> {
    let file = match opts.index {
        None => checked.archive.clone(),
        Some(params) => {
            let (root, out) = (checked.root.clone(), scratch.join("with-index.tar.gz"));
            let fp = checked.manifest.embedder.clone();
            blocking(move || with_index(&root, &out, fp, &params).map(|()| out)).await??
        }
    };
    let (sha256, size, signature) = {
        let (file, key) = (file.clone(), key.clone());
        blocking(move || -> Result<_, PublishError> {
            let io = |source| PublishError::Io {
                what: "cannot read",
                path: file.clone(),
                source,
            };
            let (sha, size) = sha256_file(&file).map_err(io)?;
            let f = std::io::BufReader::new(std::fs::File::open(&file).map_err(io)?);
            let sig = key
                .sign(f, &format!("bundle {sha}"))
                .map_err(PublishError::Sign)?;
            Ok((sha, size, sig))
        })
        .await??
    };
    let ext = if is_gzip(&file) { "tar.gz" } else { "tar" };
    Ok(Object {
        name: bundle_object_name(&sha256, ext),
        file: Some(file),
        size,
        sha256,
        signature,
    })
}

fn is_gzip(path: &Path) -> bool {
    let mut magic = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == [0x1f, 0x8b]
}

/// Builds the boxes' indexes into the checked bundle folder and packs it as `out`.
fn with_index(
    root: &Path,
    out: &Path,
    fingerprint: Option<EmbedderFingerprint>,
    params: &IndexParams,
) -> Result<(), PublishError> {
    let Some(fp) = fingerprint else {
        return Err(PublishError::Refused(
            "the bundle's manifest names no embedder, so its vectors cannot be indexed".into(),
        ));
    };
    let b = bundle::read_bundle(
        root,
        Some(&fp),
        &ReadOptions {
            require_manifest: true,
            decode_images: false,
        },
    )?;
    let Some(vectors) = b.vectors else {
        return Err(PublishError::Refused(
            "the bundle carries no vectors to index".into(),
        ));
    };
    tracing::info!(
        items = b.items.len(),
        m = params.max_connections,
        ef_construction = params.ef_construction,
        "building the boxes' indexes"
    );
    let started = std::time::Instant::now();
    let listing = prebuilt::write(root, b.items, vectors, &fp, params, &|_, _| {})?;
    tracing::info!(
        groups = listing.groups.len(),
        seconds = started.elapsed().as_secs_f64(),
        "indexes built"
    );
    pack(root, out).map_err(|source| PublishError::Io {
        what: "cannot pack",
        path: root.into(),
        source,
    })
}

/// The object of a version already in the ledger, signed by this key: its signature when this
/// key made it, else the object fetched back (and its digest checked) and signed again, as after
/// a key rotation.
async fn reuse(
    channel: &ChannelStore,
    e: &LedgerEntry,
    key: &SigningKey,
    scratch: &ScratchDir,
) -> Result<Object, PublishError> {
    let mut object = Object {
        name: e.bundle.clone(),
        file: None,
        size: e.size,
        sha256: e.sha256.clone(),
        signature: e.bundle_signature.clone(),
    };
    let ours = minisign::SignatureBox::from_string(&e.bundle_signature)
        .is_ok_and(|s| s.keynum() == key.public.keynum());
    if ours {
        return Ok(object);
    }
    tracing::info!(bundle = %e.bundle, "the published bundle was signed by another key: fetching it to sign it with this one");
    let local = scratch.join("fetched");
    let path = channel.object(&e.bundle)?;
    let got = channel
        .store
        .get(&path)
        .await
        .map_err(remote(channel, &format!("reading {}", e.bundle)))?;
    let mut stream = got.into_stream();
    let mut f = std::fs::File::create(&local).map_err(|source| PublishError::Io {
        what: "cannot write",
        path: local.clone(),
        source,
    })?;
    use futures::StreamExt;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(remote(channel, &format!("reading {}", e.bundle)))?;
        std::io::Write::write_all(&mut f, &chunk).map_err(|source| PublishError::Io {
            what: "cannot write",
            path: local.clone(),
            source,
        })?;
    }
    drop(f);
    let (sha, _) = sha256_file(&local).map_err(|source| PublishError::Io {
        what: "cannot read",
        path: local.clone(),
        source,
    })?;
    if sha != e.sha256 {
        return Err(PublishError::Refused(format!(
            "{} in the channel no longer has the SHA-256 the ledger recorded; re-publish the catalog under a new version",
            e.bundle
        )));
    }
    let f = std::io::BufReader::new(std::fs::File::open(&local).map_err(|source| {
        PublishError::Io {
            what: "cannot read",
            path: local.clone(),
            source,
        }
    })?);
    object.signature = key
        .sign(f, &format!("bundle {sha}"))
        .map_err(PublishError::Sign)?;
    Ok(object)
}

/// Uploads the object unless the channel already holds it (same name, so same content; a
/// different size means an interrupted upload by a store without atomic puts: uploaded again).
async fn upload_if_missing(
    channel: &ChannelStore,
    object: &Object,
    part_size: usize,
) -> Result<bool, PublishError> {
    let path = channel.object(&object.name)?;
    match channel.store.head(&path).await {
        Ok(meta) if meta.size == object.size => {
            tracing::info!(bundle = %object.name, "the channel already holds this bundle");
            return Ok(false);
        }
        Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(remote(channel, &format!("checking {}", object.name))(e)),
    }
    let Some(file) = &object.file else {
        return Err(PublishError::Refused(format!(
            "{} is missing from the channel; re-publish the catalog under a new version",
            object.name
        )));
    };
    tracing::info!(bundle = %object.name, bytes = object.size, "uploading the bundle");
    let io = |source| PublishError::Io {
        what: "cannot read",
        path: file.clone(),
        source,
    };
    let mut src = tokio::fs::File::open(file).await.map_err(io)?;
    let mut w =
        object_store::buffered::BufWriter::with_capacity(channel.store.clone(), path, part_size)
            .with_max_concurrency(2);
    let mut buf = vec![0u8; part_size.min(8 << 20)];
    let copied: Result<(), PublishError> = async {
        loop {
            let n = src.read(&mut buf).await.map_err(io)?;
            if n == 0 {
                break;
            }
            w.put(bytes::Bytes::copy_from_slice(&buf[..n]))
                .await
                .map_err(remote(channel, &format!("uploading {}", object.name)))?;
        }
        tokio::io::AsyncWriteExt::shutdown(&mut w)
            .await
            .map_err(|e| {
                PublishError::Refused(format!(
                    "channel {}: uploading {}: {e}",
                    channel.url(),
                    object.name
                ))
            })
    }
    .await;
    if let Err(e) = copied {
        let _ = w.abort().await;
        return Err(e);
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::synth::{self, Embeddings};

    fn fingerprint() -> EmbedderFingerprint {
        EmbedderFingerprint {
            sha256: "synthetic".into(),
            dim: 16,
            recipe: crate::vision::fusion::CNN_ONLY.into(),
        }
    }

    #[test]
    fn packing_depends_only_on_names_and_contents() {
        let dir = tempfile::tempdir().unwrap();
        let b = dir.path().join("b");
        synth::write_bundle(&b, "p", 40, 4, &fingerprint(), Embeddings::Npy, "v1", 3).unwrap();
        let (one, two) = (dir.path().join("1.tar.gz"), dir.path().join("2.tar.gz"));
        pack(&b, &one).unwrap();
        // Touch every file: times must not matter.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        for rel in files(&b).unwrap() {
            let bytes = std::fs::read(b.join(&rel)).unwrap();
            std::fs::write(b.join(&rel), bytes).unwrap();
        }
        pack(&b, &two).unwrap();
        assert_eq!(std::fs::read(&one).unwrap(), std::fs::read(&two).unwrap());
        // The archive unpacks to the same content, and the manifest comes first.
        let into = dir.path().join("u");
        std::fs::create_dir_all(&into).unwrap();
        let root = bundle::unpack(&one, &into, UnpackLimits::new(1 << 30, 16)).unwrap();
        assert_eq!(
            content_digest(&root, false).unwrap(),
            content_digest(&b, false).unwrap()
        );
        let first = tar::Archive::new(flate2::read::GzDecoder::new(
            std::fs::File::open(&one).unwrap(),
        ))
        .entries()
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .unwrap()
        .into_owned();
        assert_eq!(first, Path::new("manifest.json"));
        // A change of content is a change of digest.
        std::fs::write(b.join("images/p-0.jpg"), b"not the same").unwrap();
        assert_ne!(
            content_digest(&b, false).unwrap(),
            content_digest(&root, false).unwrap()
        );
    }

    #[test]
    fn revocations_carry_over_once_each() {
        let doc = ChannelDocument {
            format: doc::FORMAT.into(),
            sequence: 1,
            version: "a".into(),
            bundle: String::new(),
            size: 0,
            sha256: String::new(),
            bundle_signature: String::new(),
            embedder: None,
            created: String::new(),
            rollout_percent: 100,
            revoked: vec!["old".into()],
            signature: String::new(),
        };
        assert_eq!(
            merged_revocations(Some(&doc), &["new".into(), "old".into(), " ".into()]),
            vec!["old".to_string(), "new".to_string()]
        );
        assert!(same_set(
            &["a".into(), "b".into()],
            &["b".into(), "a".into()]
        ));
    }
}
