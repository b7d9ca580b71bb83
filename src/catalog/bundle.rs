//! Catalog bundles (README, "Catalog bundles"): a folder, `.tar` or `.tar.gz` holding
//! `manifest.json`, `items.jsonl` and either embeddings (inline or an `.npy` matrix) or only
//! `images/`, and the checks a bundle passes before anything goes live.
//!
//! Data enters as a path (an upload already on disk, or a staff folder) and leaves as a checked
//! [`Bundle`]: unit vectors of the running embedder's size, unique ids, every field present,
//! every image readable. Archives are unpacked entry by entry so nothing can land outside the
//! staging folder (`..`, absolute names, links and device files are refused) and a size cap
//! stops decompression bombs. Every bad row is reported at once (first 20 and a count).

use std::collections::HashSet;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use rayon::prelude::*;

use super::CatalogError;
use super::items::{
    EmbedderFingerprint, EmbeddingSource, FORMAT, Item, MANIFEST_MAX, Manifest, cap_problems,
    check_fields, check_vector, normalise,
};

/// How many problems an error lists before it just counts them.
pub const MAX_LISTED: usize = 20;

#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Refuse a bundle without `manifest.json` (uploads); folders already on the appliance (the
    /// seed catalog, older catalog folders) may lack one and are then read as inline embeddings
    /// whose size, but not model, can be checked.
    pub require_manifest: bool,
    /// Decode every image fully instead of reading its header only. Header checks catch wrong
    /// formats, empty and foreign files at a fraction of the cost; bundles whose embeddings the
    /// appliance computes decode every image anyway.
    pub decode_images: bool,
}

/// A checked bundle.
#[derive(Debug)]
pub struct Bundle {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub items: Vec<Item>,
    /// Unit vectors in item order; `None` when the bundle carries images only.
    pub vectors: Option<Vec<Vec<f32>>>,
    pub dim: usize,
    /// Things fixed on the way in (e.g. vectors normalised), for the job report and the log.
    pub warnings: Vec<String>,
}

fn invalid(path: &Path, problems: Vec<String>) -> CatalogError {
    CatalogError::Invalid {
        path: path.into(),
        problems: cap_problems(problems, MAX_LISTED),
    }
}

/// Reads and checks a bundle folder. `expect` is the running embedder's fingerprint: bundles
/// that carry embeddings must have been made by exactly that model and recipe.
pub fn read_bundle(
    dir: &Path,
    expect: Option<&EmbedderFingerprint>,
    opts: &ReadOptions,
) -> Result<Bundle, CatalogError> {
    let mut warnings = Vec::new();
    let (manifest, counted) = read_manifest(dir, expect, opts, &mut warnings)?;
    let mut problems = Vec::new();
    if manifest.format != FORMAT {
        problems.push(format!(
            "manifest.json: format \"{}\" is not \"{FORMAT}\"",
            manifest.format
        ));
    }
    if manifest.version.trim().is_empty() {
        problems.push("manifest.json: version (the label staff see) is empty".into());
    }
    let source = manifest
        .embedding_source()
        .map_err(|p| invalid(dir, vec![p]))?;
    let dim = if source == EmbeddingSource::None {
        expect.map(|e| e.dim).unwrap_or(0)
    } else {
        match (&manifest.embedder, expect) {
            (None, _) => {
                problems.push("manifest.json: embedder {sha256, dim} is missing; it is required when the bundle carries embeddings".into());
                expect.map(|e| e.dim).unwrap_or(0)
            }
            (Some(fp), Some(running)) => {
                if let Some(why) = fp.mismatch(running) {
                    return Err(CatalogError::EmbedderMismatch {
                        path: dir.into(),
                        why,
                    });
                }
                running.dim
            }
            (Some(fp), None) => fp.dim,
        }
    };
    if !problems.is_empty() {
        return Err(invalid(dir, problems));
    }

    let declared = counted.then_some(manifest.item_count);
    let rows = read_items(dir, &source, dim, declared)?;
    let Rows {
        items,
        inline,
        mut problems,
    } = rows;

    // Images: inside the bundle, regular files, readable as images, and one stored file each.
    for chunk in items.chunks(BATCH) {
        let found: Vec<String> = chunk
            .par_iter()
            .filter_map(|it| check_image(dir, it, opts.decode_images).err())
            .collect();
        problems.extend(found);
    }
    problems.extend(image_collisions(&items));

    let mut vectors = match &source {
        EmbeddingSource::None => None,
        EmbeddingSource::Inline => {
            Some(inline.into_iter().map(Option::unwrap_or_default).collect())
        }
        EmbeddingSource::Npy(file) => match read_npy(dir, file, &items, dim) {
            Ok(v) => Some(v),
            Err(p) => {
                problems.extend(p);
                None
            }
        },
    };
    if problems.total > 0 {
        return Err(problems.into_error(dir));
    }
    if let Some(vs) = vectors.as_mut() {
        let fixed: Vec<usize> = vs
            .par_iter_mut()
            .enumerate()
            .filter_map(|(i, v)| normalise(v).then_some(i))
            .collect();
        if let Some(&first) = fixed.first() {
            let w = format!(
                "{} embedding(s) were not unit length and have been normalised (first: item '{}')",
                fixed.len(),
                items[first].id
            );
            tracing::warn!(bundle = %dir.display(), "{w}");
            warnings.push(w);
        }
    }
    Ok(Bundle {
        dir: dir.into(),
        manifest,
        items,
        vectors,
        dim,
        warnings,
    })
}

/// The bundle's manifest, and whether it is its own (`false`: none, and one is assumed for a
/// plain catalog folder, with a warning).
fn read_manifest(
    dir: &Path,
    expect: Option<&EmbedderFingerprint>,
    opts: &ReadOptions,
    warnings: &mut Vec<String>,
) -> Result<(Manifest, bool), CatalogError> {
    Ok(match Manifest::load_optional(dir)? {
        Some(m) => (m, true),
        None if opts.require_manifest || expect.is_none() => {
            return Err(invalid(
                dir,
                vec!["manifest.json is missing: a bundle starts with one (README, \"Catalog bundles\")".into()],
            ));
        }
        None => {
            let w = "no manifest.json: embeddings read as inline and assumed to come from the running embedder (only their size is checked)".to_string();
            tracing::warn!(bundle = %dir.display(), "{w}");
            warnings.push(w);
            let fp = expect.cloned();
            let label = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "catalog".into());
            let m = Manifest {
                format: FORMAT.into(),
                version: label,
                created: String::new(),
                item_count: 0,
                embedder: fp,
                embeddings: "inline".into(),
                embeddings_file: None,
            };
            (m, false)
        }
    })
}

/// Problems as a bundle reports them: the first [`MAX_LISTED`] and a count, held bounded so a
/// file of a million bad lines cannot fill memory with messages.
#[derive(Default)]
struct Problems {
    listed: Vec<String>,
    total: usize,
}

impl Problems {
    fn push(&mut self, p: String) {
        self.total += 1;
        if self.listed.len() < MAX_LISTED {
            self.listed.push(p);
        }
    }

    fn extend(&mut self, ps: impl IntoIterator<Item = String>) {
        ps.into_iter().for_each(|p| self.push(p));
    }

    fn into_error(mut self, path: &Path) -> CatalogError {
        if self.total > self.listed.len() {
            self.listed
                .push(format!("… {} problems in all", self.total));
        }
        CatalogError::Invalid {
            path: path.into(),
            problems: self.listed,
        }
    }
}

/// The parsed rows of items.jsonl.
struct Rows {
    items: Vec<Item>,
    inline: Vec<Option<Vec<f32>>>,
    problems: Problems,
}

/// Lines parsed per parallel step: memory holds one batch of raw lines, never the whole file.
const BATCH: usize = 4096;

/// Reads items.jsonl line by line (each at most [`line_max`]), parsing batches in parallel on
/// the caller's rayon pool. Stops at the first line beyond `declared` items: a manifest's count
/// bounds what is read, whatever the file's size.
fn read_items(
    dir: &Path,
    source: &EmbeddingSource,
    dim: usize,
    declared: Option<usize>,
) -> Result<Rows, CatalogError> {
    use std::io::BufRead;
    let path = dir.join("items.jsonl");
    let file = std::fs::File::open(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            invalid(dir, vec!["items.jsonl is missing".into()])
        } else {
            CatalogError::Read {
                path: path.clone(),
                source: e,
            }
        }
    })?;
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Err(invalid(
            dir,
            vec!["items.jsonl is not a regular file".into()],
        ));
    }
    let max = line_max(dim);
    let mut reader = std::io::BufReader::new(file);
    let mut rows = Rows {
        items: Vec::new(),
        inline: Vec::new(),
        problems: Problems::default(),
    };
    let mut seen = HashSet::new();
    let (mut n, mut count) = (0usize, 0usize);
    let mut batch: Vec<(usize, String)> = Vec::new();
    let mut raw = Vec::new();
    loop {
        raw.clear();
        let got = reader
            .by_ref()
            .take(max as u64 + 2)
            .read_until(b'\n', &mut raw)
            .map_err(|source| CatalogError::Read {
                path: path.clone(),
                source,
            })?;
        let end = got == 0;
        if !end {
            n += 1;
            let line = raw.strip_suffix(b"\n").unwrap_or(&raw);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() > max {
                rows.problems.push(format!(
                    "items.jsonl line {n} is longer than {} KiB; one item a line",
                    max >> 10
                ));
                return Err(rows.problems.into_error(dir));
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                count += 1;
                if declared.is_some_and(|d| count > d) {
                    rows.problems.push(format!(
                        "manifest.json says item_count {} but items.jsonl has more items",
                        declared.unwrap_or(0)
                    ));
                    return Err(rows.problems.into_error(dir));
                }
                match std::str::from_utf8(line) {
                    Ok(l) => batch.push((n, l.to_string())),
                    Err(_) => rows
                        .problems
                        .push(format!("items.jsonl line {n} is not UTF-8 text")),
                }
            }
        }
        if batch.len() >= BATCH || (end && !batch.is_empty()) {
            parse_batch(
                std::mem::take(&mut batch),
                source,
                dim,
                &mut rows,
                &mut seen,
            );
        }
        if end {
            break;
        }
    }
    if let Some(d) = declared.filter(|d| count != *d) {
        rows.problems.push(format!(
            "manifest.json says item_count {d} but items.jsonl has {count} items (a truncated upload?)"
        ));
    }
    if count == 0 {
        rows.problems.push("items.jsonl holds no items".into());
        return Err(rows.problems.into_error(dir));
    }
    Ok(rows)
}

/// Parses and checks a batch of lines in parallel; each yields its item, its inline embedding
/// and its problems, gathered in line order.
fn parse_batch(
    batch: Vec<(usize, String)>,
    source: &EmbeddingSource,
    dim: usize,
    rows: &mut Rows,
    seen: &mut HashSet<String>,
) {
    let parsed: Vec<Row> = batch
        .par_iter()
        .map(|(n, line)| parse_row(*n, line, source, dim))
        .collect();
    for ((n, _), (item, emb, row_problems)) in batch.iter().zip(parsed) {
        rows.problems.extend(row_problems);
        if let Some(it) = item {
            if !seen.insert(it.id.clone()) {
                rows.problems.push(format!(
                    "items.jsonl line {n}, item '{}': duplicate id",
                    it.id
                ));
            }
            rows.items.push(it);
            rows.inline.push(emb);
        }
    }
}

/// An image path as stored in a version: plain components joined by '/', the leading
/// `images/` dropped (a version keeps every image under its own `images/`).
fn stored_image_name(image: &str) -> String {
    let parts: Vec<&str> = Path::new(image)
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => p.to_str(),
            _ => None,
        })
        .collect();
    let parts = match parts.split_first() {
        Some((&"images", rest)) if !rest.is_empty() => rest,
        _ => &parts[..],
    };
    parts.join("/")
}

/// An image path without `.` components: two spellings of one file compare equal.
fn canonical(image: &str) -> PathBuf {
    Path::new(image)
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

/// Items whose different files would be stored under one name (`images/a.jpg` and `a.jpg`):
/// the second would show the first's photo.
fn image_collisions(items: &[Item]) -> Vec<String> {
    let mut by_name: std::collections::HashMap<String, (&str, &str)> = Default::default();
    let mut out = Vec::new();
    for it in items {
        let name = stored_image_name(&it.image);
        match by_name.get(&name) {
            Some((id, first)) if canonical(first) != canonical(&it.image) => {
                out.push(format!(
                    "item '{}': image '{}' and item '{id}': image '{first}' are different files but would both be stored as 'images/{name}'; rename one of them",
                    it.id, it.image
                ));
            }
            Some(_) => {}
            None => {
                by_name.insert(name, (&it.id, &it.image));
            }
        }
    }
    out
}

/// One line of items.jsonl: the item (when it parses), its inline embedding, its problems.
type Row = (Option<Item>, Option<Vec<f32>>, Vec<String>);

fn parse_row(n: usize, line: &str, source: &EmbeddingSource, dim: usize) -> Row {
    #[derive(serde::Deserialize)]
    struct Row {
        #[serde(flatten)]
        item: Item,
        #[serde(default)]
        embedding: Option<Vec<f32>>,
    }
    let row: Row = match serde_json::from_str(line) {
        Ok(r) => r,
        Err(e) => {
            let id = serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("id")?.as_str().map(String::from))
                .or_else(|| sniff_id(line));
            let at = match id {
                Some(id) => format!("items.jsonl line {n}, item '{id}'"),
                None => format!("items.jsonl line {n}"),
            };
            let why = if ["NaN", "Infinity"].iter().any(|w| line.contains(w)) {
                "embedding contains NaN or infinite values (not valid JSON either)".to_string()
            } else {
                e.to_string()
            };
            return (None, None, vec![format!("{at}: {why}")]);
        }
    };
    let at = format!("items.jsonl line {n}, item '{}'", row.item.id);
    let mut p: Vec<String> = check_fields(&row.item)
        .into_iter()
        .map(|m| format!("{at}: {m}"))
        .collect();
    match (source, &row.embedding) {
        (EmbeddingSource::Inline, None) => p.push(format!(
            "{at}: no embedding (the manifest says embeddings are inline)"
        )),
        (EmbeddingSource::Inline, Some(v)) => p.extend(
            check_vector(v, dim)
                .into_iter()
                .map(|m| format!("{at}: {m}")),
        ),
        (EmbeddingSource::Npy(_) | EmbeddingSource::None, Some(_)) => p.push(format!(
            "{at}: has an inline embedding but the manifest says embeddings are \"{}\"",
            if *source == EmbeddingSource::None {
                "none"
            } else {
                "npy"
            }
        )),
        _ => {}
    }
    (Some(row.item), row.embedding, p)
}

/// The `"id": "…"` of a line that is not valid JSON (e.g. Python's `NaN`), to name it anyway.
fn sniff_id(line: &str) -> Option<String> {
    let rest = &line[line.find("\"id\"")? + 4..];
    let rest = rest
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_string())
}

fn check_image(dir: &Path, it: &Item, decode: bool) -> Result<(), String> {
    let at = format!("item '{}': image '{}'", it.id, it.image);
    let path = dir.join(&it.image);
    let meta = std::fs::symlink_metadata(&path).map_err(|_| format!("{at} is missing"))?;
    if !meta.file_type().is_file() {
        return Err(format!(
            "{at} is not a regular file (links are not allowed)"
        ));
    }
    let reader = image::ImageReader::open(&path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| format!("{at} cannot be read ({e})"))?;
    if reader.format().is_none() {
        return Err(format!("{at} is not a JPEG or PNG image"));
    }
    let undecodable = |e: String| format!("{at} cannot be decoded ({e})");
    if decode {
        let bytes = std::fs::read(&path).map_err(|e| format!("{at} cannot be read ({e})"))?;
        return crate::capture::decode::decode_frame(&bytes)
            .map(|_| ())
            .map_err(undecodable);
    }
    match reader.into_dimensions() {
        Ok((w, h)) if w > 0 && h > 0 => {}
        Ok(_) => return Err(format!("{at} has no pixels")),
        Err(e) => return Err(undecodable(e.to_string())),
    }
    crate::capture::decode::check_file_complete(&path).map_err(undecodable)
}

fn read_npy(
    dir: &Path,
    file: &str,
    items: &[Item],
    dim: usize,
) -> Result<Vec<Vec<f32>>, Vec<String>> {
    let path = dir.join(file);
    let f = std::fs::File::open(&path).map_err(|e| vec![format!("{file} cannot be read ({e})")])?;
    let file_len = f
        .metadata()
        .map_err(|e| vec![format!("{file} cannot be read ({e})")])?
        .len();
    let mut r = std::io::BufReader::new(f);
    // The shape is checked against the items, the embedder and the file's length before the
    // body is read: a header must not be able to make the daemon allocate what it declares.
    let h = super::npy::read_header(&mut r).map_err(|e| vec![format!("{file}: {e}")])?;
    let (rows, cols) = (h.rows, h.cols);
    if rows != items.len() || cols != dim {
        return Err(vec![format!(
            "{file} has shape ({rows}, {cols}) but ({}, {dim}) is needed: one row per item, in items.jsonl order, of the embedder's size",
            items.len()
        )]);
    }
    h.check_file_len(file_len)
        .map_err(|e| vec![format!("{file}: {e}")])?;
    let data = super::npy::read_body(&mut r, &h).map_err(|e| vec![format!("{file}: {e}")])?;
    let mut problems = Vec::new();
    let vectors: Vec<Vec<f32>> = data
        .chunks_exact(cols.max(1))
        .map(<[f32]>::to_vec)
        .collect();
    for (r, (v, it)) in vectors.iter().zip(items).enumerate() {
        problems.extend(
            check_vector(v, dim)
                .into_iter()
                .map(|m| format!("{file} row {r} (item '{}'): {m}", it.id)),
        );
    }
    if problems.is_empty() {
        Ok(vectors)
    } else {
        Err(problems)
    }
}

/// Limits on what an archive may unpack to.
#[derive(Debug, Clone, Copy)]
pub struct UnpackLimits {
    /// All members together (`catalog.unpack_limit_mb`).
    pub max_bytes: u64,
    pub max_entries: usize,
    /// The running embedder's size: what an embeddings member of `item_count` rows can need.
    pub dim: usize,
}

impl UnpackLimits {
    pub fn new(max_bytes: u64, dim: usize) -> Self {
        Self {
            max_bytes,
            max_entries: 4_000_000,
            dim,
        }
    }
}

/// A product photo; camera originals are a few MiB.
pub const IMAGE_MAX: u64 = 64 << 20;

/// The longest `items.jsonl` line a bundle for an embedder of `dim` values may have: the fields
/// and attributes, plus an inline embedding written out as JSON numbers.
pub fn line_max(dim: usize) -> usize {
    (64 << 10) + 32 * dim
}

/// What one archive member may unpack to, by its name: what a bundle of the size its manifest
/// declares can need. `declared` is the manifest once it has been unpacked (archives need not
/// put it first; members before it are bounded by what is left of the total).
fn member_max(rel: &Path, declared: Option<&Manifest>, limits: &UnpackLimits, left: u64) -> u64 {
    let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let rows = declared.map(|m| m.item_count as u64);
    // Prebuilt indexes (`index/`) are bounded by what their item count and size can need.
    let prebuilt = super::prebuilt::member_bound(rel, rows.unwrap_or(u64::MAX), limits.dim as u64);
    let bound = match name {
        _ if prebuilt.is_some() => prebuilt.unwrap_or(u64::MAX),
        "manifest.json" => MANIFEST_MAX,
        "items.jsonl" => rows.map_or(u64::MAX, |n| {
            n.saturating_mul(line_max(limits.dim) as u64 + 1)
        }),
        n if n.ends_with(".npy") => rows.map_or(u64::MAX, |n| {
            n.saturating_mul(limits.dim as u64 * 4)
                .saturating_add(MANIFEST_MAX)
        }),
        _ => IMAGE_MAX,
    };
    bound.min(left)
}

/// Why a member's copy stopped.
enum Copied {
    Done(u64),
    TooLarge,
    LongLine(usize),
}

/// Copies a member to disk, at most `max` bytes; with `line` set, refuses a line longer than
/// that as soon as it is seen (an items.jsonl of one endless line is a bomb too).
fn copy_member(
    from: &mut impl Read,
    to: &mut impl std::io::Write,
    max: u64,
    line: Option<usize>,
) -> std::io::Result<Copied> {
    let mut buf = vec![0u8; 64 << 10];
    let (mut total, mut run, mut lines) = (0u64, 0usize, 1usize);
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(Copied::Done(total)),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        total += n as u64;
        if total > max {
            return Ok(Copied::TooLarge);
        }
        if let Some(limit) = line {
            for &b in &buf[..n] {
                if b == b'\n' {
                    run = 0;
                    lines += 1;
                } else {
                    run += 1;
                    if run > limit {
                        return Ok(Copied::LongLine(lines));
                    }
                }
            }
        }
        to.write_all(&buf[..n])?;
    }
}

/// The archive's bytes, gzip or not (told apart by content, not name).
fn open_archive(archive: &Path) -> Result<Box<dyn Read>, CatalogError> {
    let rerr = |source| CatalogError::Read {
        path: archive.into(),
        source,
    };
    let mut file = std::fs::File::open(archive).map_err(rerr)?;
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic).map_err(rerr)?;
    let file = std::fs::File::open(archive).map_err(rerr)?;
    Ok(if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)))
    } else {
        Box::new(std::io::BufReader::new(file))
    })
}

/// An entry's name as a relative path of plain components, or why it is refused.
fn entry_path(name: &Path, shown: &str) -> Result<PathBuf, String> {
    let mut rel = PathBuf::new();
    for c in name.components() {
        match c {
            Component::Normal(p) => rel.push(p),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "archive entry '{shown}' points outside the bundle folder; bundles may only hold relative paths without '..'"
                ));
            }
        }
    }
    Ok(rel)
}

/// Refuses an entry that clashes with an earlier one: a file where a folder on its path is
/// needed, or a folder where a file already is (`x` then `x/y`, or the other way round).
fn check_clash(into: &Path, rel: &Path, shown: &str, is_dir: bool) -> Result<(), String> {
    let mut prefix = PathBuf::new();
    let parts: Vec<_> = rel.components().collect();
    for (i, c) in parts.iter().enumerate() {
        prefix.push(c);
        let Ok(meta) = std::fs::symlink_metadata(into.join(&prefix)) else {
            return Ok(());
        };
        let last = i + 1 == parts.len();
        if !last && !meta.is_dir() {
            return Err(format!(
                "archive entries '{}' and '{shown}' clash: '{}' is a file, so nothing can lie under it; rename one of them",
                prefix.display(),
                prefix.display()
            ));
        }
        if last && meta.is_dir() != is_dir {
            let (what, other) = if is_dir {
                ("a folder", "a file")
            } else {
                ("a file", "a folder")
            };
            return Err(format!(
                "archive entry '{shown}' is {what} but an earlier entry made '{}' {other}; rename one of them",
                prefix.display()
            ));
        }
    }
    Ok(())
}

/// Unpacks a `.tar` or `.tar.gz` (told apart by content, not name) into the empty folder `into`
/// and returns the bundle's folder: `into` itself, or the single folder the archive wraps it in.
/// Every member is streamed to disk and bounded by what its kind can need, so a decompression
/// bomb is refused after at most a member's bound, never after filling memory or the disk.
pub fn unpack(archive: &Path, into: &Path, limits: UnpackLimits) -> Result<PathBuf, CatalogError> {
    let bad = |m: String| invalid(archive, vec![m]);
    let mut tar = tar::Archive::new(open_archive(archive)?);
    let corrupt = |e: std::io::Error| {
        bad(format!(
            "the archive is truncated or corrupt ({e}); upload a complete .tar or .tar.gz"
        ))
    };
    let werr = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CatalogError::Write { path, source }
    };
    let mut total: u64 = 0;
    let mut count = 0usize;
    let mut declared: Option<Manifest> = None;
    let entries = tar.entries().map_err(corrupt)?;
    for entry in entries {
        let mut entry = entry.map_err(corrupt)?;
        count += 1;
        if count > limits.max_entries {
            return Err(bad(format!(
                "the archive has more than {} entries",
                limits.max_entries
            )));
        }
        let name = entry.path().map_err(corrupt)?.into_owned();
        let shown = name.display().to_string();
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            continue;
        }
        let rel = entry_path(&name, &shown).map_err(bad)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let dest = into.join(&rel);
        check_clash(into, &rel, &shown, kind.is_dir()).map_err(bad)?;
        if kind.is_dir() {
            std::fs::create_dir_all(&dest).map_err(werr(&dest))?;
            continue;
        }
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            return Err(bad(format!(
                "archive entry '{shown}' is a {}; bundles may only hold regular files and folders",
                match kind {
                    tar::EntryType::Symlink => "symbolic link",
                    tar::EntryType::Link => "hard link",
                    _ => "special file",
                }
            )));
        }
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(werr(parent))?;
        }
        let mut out = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&dest)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(bad(format!("archive entry '{shown}' appears twice")));
            }
            Err(source) => return Err(CatalogError::Write { path: dest, source }),
        };
        let left = limits.max_bytes.saturating_sub(total);
        let max = member_max(&rel, declared.as_ref(), &limits, left);
        let is_items = rel.file_name().is_some_and(|n| n == "items.jsonl");
        let line = is_items.then(|| line_max(limits.dim));
        match copy_member(&mut entry, &mut out, max, line).map_err(corrupt)? {
            Copied::Done(n) => total += n,
            Copied::TooLarge if max == left => {
                return Err(bad(format!(
                    "the archive unpacks to more than {} MiB (catalog.unpack_limit_mb)",
                    limits.max_bytes >> 20
                )));
            }
            Copied::TooLarge => return Err(bad(too_large(&shown, &rel, declared.as_ref(), max))),
            Copied::LongLine(n) => {
                return Err(bad(format!(
                    "archive entry '{shown}': line {n} is longer than {} KiB; one item a line",
                    line.unwrap_or(0) >> 10
                )));
            }
        }
        let top = rel.components().count() <= 2;
        if declared.is_none() && top && rel.file_name().is_some_and(|n| n == "manifest.json") {
            declared = std::fs::read(&dest)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
        }
    }
    // Reading the rest checks gzip's length and CRC trailer: a cut-off .tar.gz fails here even
    // when it was cut between two entries.
    std::io::copy(&mut tar.into_inner(), &mut std::io::sink()).map_err(corrupt)?;
    bundle_root(archive, into)
}

/// Why a member was too large, in the staff's terms.
fn too_large(shown: &str, rel: &Path, declared: Option<&Manifest>, max: u64) -> String {
    let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let kib = max.div_ceil(1024);
    match (name, declared) {
        ("manifest.json", _) => {
            format!("archive entry '{shown}' is larger than {kib} KiB; a manifest is a few lines")
        }
        ("items.jsonl", Some(m)) => format!(
            "archive entry '{shown}' is larger than {kib} KiB, more than the {} items manifest.json declares can need",
            m.item_count
        ),
        (_, Some(m)) if super::prebuilt::member_bound(rel, 0, 0).is_some() => format!(
            "archive entry '{shown}' is larger than {kib} KiB, more than a prebuilt index of the {} items manifest.json declares can need",
            m.item_count
        ),
        (n, Some(m)) if n.ends_with(".npy") => format!(
            "archive entry '{shown}' is larger than {kib} KiB, more than an embeddings matrix of the {} items manifest.json declares",
            m.item_count
        ),
        _ => format!(
            "archive entry '{shown}' is larger than {} MiB; product photos must be smaller",
            max >> 20
        ),
    }
}

/// The bundle's folder inside the unpacked archive: the top, or its one folder.
fn bundle_root(archive: &Path, into: &Path) -> Result<PathBuf, CatalogError> {
    if into.join("manifest.json").is_file() {
        return Ok(into.into());
    }
    let top: Vec<PathBuf> = std::fs::read_dir(into)
        .map_err(|source| CatalogError::Read {
            path: into.into(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    match &top[..] {
        [one] if one.join("manifest.json").is_file() => Ok(one.clone()),
        _ => Err(invalid(
            archive,
            vec!["the archive has no manifest.json at its top (or inside one top folder)".into()],
        )),
    }
}

/// Writes a bundle folder (used by `vitrine catalog build`, the tests and the benchmark).
pub fn write_bundle(
    dir: &Path,
    manifest: &Manifest,
    items: &[Item],
    vectors: Option<&[Vec<f32>]>,
) -> Result<(), CatalogError> {
    use std::io::Write;
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CatalogError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(err(dir))?;
    let npy = matches!(manifest.embedding_source(), Ok(EmbeddingSource::Npy(_)));
    let p = dir.join("items.jsonl");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&p).map_err(err(&p))?);
    for (i, it) in items.iter().enumerate() {
        let mut v = serde_json::to_value(it).map_err(|e| err(&p)(e.into()))?;
        if let (Some(vs), false, Some(obj)) = (vectors, npy, v.as_object_mut()) {
            obj.insert("embedding".into(), serde_json::json!(vs[i]));
        }
        serde_json::to_writer(&mut w, &v).map_err(|e| err(&p)(e.into()))?;
        w.write_all(b"\n").map_err(err(&p))?;
    }
    w.flush().map_err(err(&p))?;
    if let (Some(vs), Ok(EmbeddingSource::Npy(file))) = (vectors, manifest.embedding_source()) {
        let p = dir.join(file);
        let flat: Vec<f32> = vs.iter().flatten().copied().collect();
        let f = std::io::BufWriter::new(std::fs::File::create(&p).map_err(err(&p))?);
        super::npy::write_f32_matrix(f, vs.first().map_or(0, Vec::len), &flat).map_err(err(&p))?;
    }
    let p = dir.join("manifest.json");
    let m = serde_json::to_vec_pretty(manifest).map_err(|e| err(&p)(e.into()))?;
    std::fs::write(&p, m).map_err(err(&p))?;
    Ok(())
}

/// Packs a folder into a `.tar.gz` (the tests' and the benchmark's uploads).
pub fn pack_tar_gz(dir: &Path, out: &Path) -> std::io::Result<()> {
    let f = std::fs::File::create(out)?;
    let gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    tar.append_dir_all(".", dir)?;
    tar.into_inner()?.finish()?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::items::EmbedderFingerprint;

    const SHA: &str = "abc123";

    fn fp(dim: usize) -> EmbedderFingerprint {
        EmbedderFingerprint {
            sha256: SHA.into(),
            dim,
            recipe: crate::vision::fusion::CNN_ONLY.into(),
        }
    }

    fn fixture(dir: &Path, n: usize, embeddings: &str) -> (Manifest, Vec<Item>, Vec<Vec<f32>>) {
        std::fs::create_dir_all(dir.join("images")).expect("mkdir");
        let img = image::RgbImage::from_pixel(8, 8, image::Rgb([200, 10, 10]));
        img.save(dir.join("images/a.png")).expect("png");
        let items: Vec<Item> = (0..n)
            .map(|i| {
                serde_json::from_value(serde_json::json!({
                    "id": format!("it-{i}"), "name": "Shirt", "group": "top",
                    "price": 10.0, "image": "images/a.png"
                }))
                .expect("item")
            })
            .collect();
        let vectors = crate::catalog::index::tests::random_unit_vectors(n, 4, 3);
        let manifest = Manifest {
            format: FORMAT.into(),
            version: "t".into(),
            created: String::new(),
            item_count: n,
            embedder: Some(fp(4)),
            embeddings: embeddings.into(),
            embeddings_file: None,
        };
        write_bundle(dir, &manifest, &items, Some(&vectors)).expect("write");
        (manifest, items, vectors)
    }

    fn problems(r: Result<Bundle, CatalogError>) -> String {
        match r {
            Err(CatalogError::Invalid { problems, .. }) => problems.join("\n"),
            Err(e) => e.to_string(),
            Ok(_) => panic!("must be refused"),
        }
    }

    #[test]
    fn inline_and_npy_bundles_read_back_the_same() {
        let a = tempfile::tempdir().expect("tmp");
        let b = tempfile::tempdir().expect("tmp");
        let (_, _, vecs) = fixture(a.path(), 5, "inline");
        fixture(b.path(), 5, "npy");
        let ra = read_bundle(a.path(), Some(&fp(4)), &ReadOptions::default()).expect("inline");
        let rb = read_bundle(b.path(), Some(&fp(4)), &ReadOptions::default()).expect("npy");
        assert_eq!(ra.vectors, rb.vectors);
        let v = ra.vectors.expect("vectors");
        assert!((v[2][1] - vecs[2][1]).abs() < 1e-6);
        let wrong = read_bundle(a.path(), Some(&fp(8)), &ReadOptions::default());
        assert!(matches!(wrong, Err(CatalogError::EmbedderMismatch { .. })));
    }

    #[test]
    fn a_bundle_of_another_recipe_is_refused_with_the_reason() {
        let a = tempfile::tempdir().expect("tmp");
        fixture(a.path(), 3, "inline");
        let running = EmbedderFingerprint {
            recipe: "cnn*0.7071+lab-soft-hist/1*0.7071".into(),
            ..fp(4)
        };
        let err = read_bundle(a.path(), Some(&running), &ReadOptions::default())
            .expect_err("another recipe")
            .to_string();
        assert!(
            err.contains("recipe 'cnn' (running: 'cnn*0.7071+lab-soft-hist/1*0.7071')"),
            "{err}"
        );
        assert!(err.contains("vitrine catalog build"), "{err}");
        // The same bundle without its vectors is accepted: the appliance computes them.
        let m = a.path().join("manifest.json");
        let text = std::fs::read_to_string(&m).expect("manifest");
        std::fs::write(&m, text.replace("\"inline\"", "\"none\"")).expect("w");
        let items = a.path().join("items.jsonl");
        let lines: Vec<String> = std::fs::read_to_string(&items)
            .expect("items")
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).expect("json");
                v.as_object_mut().expect("obj").remove("embedding");
                v.to_string()
            })
            .collect();
        std::fs::write(&items, lines.join("\n")).expect("w");
        let b =
            read_bundle(a.path(), Some(&running), &ReadOptions::default()).expect("images only");
        assert!(b.vectors.is_none());
    }

    #[test]
    fn every_bad_row_is_named() {
        let d = tempfile::tempdir().expect("tmp");
        fixture(d.path(), 4, "inline");
        let p = d.path().join("items.jsonl");
        let text = std::fs::read_to_string(&p).expect("read");
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        lines[1] = lines[1].replace("it-1", "it-0");
        lines[2] = lines[2].replacen("[", "[NaN,", 1);
        lines[3] = lines[3].replace("\"name\":\"Shirt\",", "");
        std::fs::write(&p, lines.join("\n")).expect("write");
        let all = problems(read_bundle(d.path(), Some(&fp(4)), &ReadOptions::default()));
        assert!(all.contains("line 2, item 'it-0': duplicate id"), "{all}");
        assert!(
            all.contains("line 3, item 'it-2': embedding contains NaN"),
            "{all}"
        );
        assert!(
            all.contains("line 4, item 'it-3': missing field `name`"),
            "{all}"
        );
    }

    #[test]
    fn images_must_exist_and_be_images() {
        let d = tempfile::tempdir().expect("tmp");
        fixture(d.path(), 2, "npy");
        std::fs::write(d.path().join("images/a.png"), b"not an image").expect("w");
        let all = problems(read_bundle(d.path(), Some(&fp(4)), &ReadOptions::default()));
        assert!(
            all.contains("item 'it-0': image 'images/a.png' cannot be decoded"),
            "{all}"
        );
    }

    fn tar_with(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            // Bypass the builder's own path checks: the point is to feed hostile names.
            let raw = &mut h.as_old_mut().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            if *kind == tar::EntryType::Symlink {
                h.set_link_name("/etc/passwd").expect("link");
            }
            h.set_cksum();
            b.append(&h, *data).expect("append");
        }
        b.into_inner().expect("tar")
    }

    #[test]
    fn hostile_archives_are_refused_and_write_nothing_outside() {
        let limits = UnpackLimits {
            max_bytes: 1 << 20,
            max_entries: 100,
            dim: 4,
        };
        let cases: [(&str, Vec<u8>, &str); 4] = [
            (
                "dotdot",
                tar_with(&[("../evil.txt", tar::EntryType::Regular, b"x")]),
                "outside the bundle",
            ),
            (
                "abs",
                tar_with(&[("/tmp/evil.txt", tar::EntryType::Regular, b"x")]),
                "outside the bundle",
            ),
            (
                "link",
                tar_with(&[("images/a.png", tar::EntryType::Symlink, b"")]),
                "symbolic link",
            ),
            (
                "big",
                tar_with(&[("big.bin", tar::EntryType::Regular, &vec![0u8; 2 << 20])]),
                "more than 1 MiB",
            ),
        ];
        for (what, bytes, expect) in cases {
            let work = tempfile::tempdir().expect("tmp");
            let archive = work.path().join("up.tar");
            std::fs::write(&archive, &bytes).expect("w");
            let into = work.path().join("stage");
            std::fs::create_dir(&into).expect("mkdir");
            let err = unpack(&archive, &into, limits).expect_err(what).to_string();
            assert!(err.contains(expect), "{what}: {err}");
            assert!(!work.path().join("evil.txt").exists(), "{what} escaped");
        }
    }

    #[test]
    fn truncated_gzip_is_refused() {
        let d = tempfile::tempdir().expect("tmp");
        let src = d.path().join("b");
        fixture(&src, 20, "inline");
        let gz = d.path().join("b.tar.gz");
        pack_tar_gz(&src, &gz).expect("pack");
        let bytes = std::fs::read(&gz).expect("r");
        std::fs::write(&gz, &bytes[..bytes.len() - 30]).expect("w");
        let into = d.path().join("stage");
        std::fs::create_dir(&into).expect("mkdir");
        let limits = UnpackLimits {
            max_bytes: 1 << 30,
            max_entries: 1000,
            dim: 4,
        };
        let err = unpack(&gz, &into, limits)
            .expect_err("truncated")
            .to_string();
        assert!(err.contains("truncated or corrupt"), "{err}");
        // The intact archive unpacks to a readable bundle.
        std::fs::write(&gz, &bytes).expect("w");
        let into = d.path().join("stage2");
        std::fs::create_dir(&into).expect("mkdir");
        let root = unpack(&gz, &into, limits).expect("unpack");
        read_bundle(&root, Some(&fp(4)), &ReadOptions::default()).expect("valid");
    }

    /// Unpacks `bytes` (a .tar or .tar.gz) and reads the bundle as an upload is read.
    fn import(bytes: &[u8], limits: UnpackLimits) -> Result<Bundle, CatalogError> {
        let work = tempfile::tempdir().expect("tmp");
        let archive = work.path().join("up.tar");
        std::fs::write(&archive, bytes).expect("w");
        import_file(&archive, work.path(), limits)
    }

    fn import_file(
        archive: &Path,
        work: &Path,
        limits: UnpackLimits,
    ) -> Result<Bundle, CatalogError> {
        let into = work.join("stage");
        std::fs::create_dir_all(&into).expect("mkdir");
        let root = unpack(archive, &into, limits)?;
        let opts = ReadOptions {
            require_manifest: true,
            decode_images: true,
        };
        read_bundle(&root, Some(&fp(4)), &opts)
    }

    fn limits() -> UnpackLimits {
        UnpackLimits::new(1 << 30, 4)
    }

    fn manifest_json(n: usize, embeddings: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "format": FORMAT, "version": "t", "item_count": n,
            "embedder": {"sha256": SHA, "dim": 4}, "embeddings": embeddings,
        }))
        .expect("json")
    }

    fn item_line(id: &str, image: &str) -> String {
        format!(
            "{{\"id\":\"{id}\",\"name\":\"Shirt\",\"group\":\"top\",\"price\":1,\"image\":\"{image}\"}}\n"
        )
    }

    #[test]
    fn an_npy_header_cannot_make_the_reader_allocate_what_it_declares() {
        // Shape (8388608, 256): 8 GiB declared over a 1 KiB body.
        let mut bytes = Vec::new();
        super::super::npy::write_f32_matrix(&mut bytes, 4, &[1.0; 8]).expect("npy");
        let at = bytes
            .windows(6)
            .position(|w| w == b"(2, 4)")
            .expect("shape");
        let mut header = String::from_utf8_lossy(&bytes[10..at]).into_owned();
        header.push_str("(8388608, 256), }");
        let pad = 64 - (10 + header.len() + 1) % 64;
        header.push_str(&" ".repeat(pad));
        header.push('\n');
        let mut bomb = bytes[..8].to_vec();
        bomb.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bomb.extend_from_slice(header.as_bytes());
        bomb.extend_from_slice(&[0u8; 1024]);
        let (res, largest) =
            crate::test_alloc::largest_during(|| super::super::npy::read_f32_matrix(&bomb[..]));
        let err = res.expect_err("bomb");
        assert!(err.contains("truncated"), "{err}");
        assert!(
            largest < 4 << 20,
            "allocated {largest} bytes for a 1 KiB body"
        );
        // In a bundle the shape is checked against the items and the embedder first.
        let d = tempfile::tempdir().expect("tmp");
        fixture(d.path(), 2, "npy");
        std::fs::write(d.path().join("embeddings.npy"), &bomb).expect("w");
        // One worker, measured from inside: the parallel parts run on it too.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("pool");
        let (res, largest) = pool.install(|| {
            crate::test_alloc::largest_during(|| {
                read_bundle(d.path(), Some(&fp(4)), &ReadOptions::default())
            })
        });
        let all = problems(res);
        assert!(
            all.contains("has shape (8388608, 256) but (2, 4) is needed"),
            "{all}"
        );
        assert!(largest < 4 << 20, "allocated {largest} bytes");
    }

    #[test]
    fn a_file_and_a_folder_of_one_name_are_named_not_a_500() {
        let x: &[u8] = b"x";
        for (entries, expect) in [
            (
                [
                    ("x", tar::EntryType::Regular, x),
                    ("x/y", tar::EntryType::Regular, x),
                ],
                "archive entries 'x' and 'x/y' clash",
            ),
            (
                [
                    ("x/y", tar::EntryType::Regular, x),
                    ("x", tar::EntryType::Regular, x),
                ],
                "archive entry 'x' is a file but an earlier entry made 'x' a folder",
            ),
            (
                [
                    ("x", tar::EntryType::Regular, x),
                    ("x", tar::EntryType::Directory, b""),
                ],
                "archive entry 'x' is a folder but an earlier entry made 'x' a file",
            ),
        ] {
            let err = import(&tar_with(&entries), limits()).expect_err(expect);
            assert!(
                matches!(err, CatalogError::Invalid { .. }) && err.to_string().contains(expect),
                "{err}"
            );
        }
    }

    #[test]
    fn two_items_whose_photos_would_share_one_stored_file_are_named() {
        let png = crate::capture::decode::tests::png(8, 8);
        let other = crate::capture::decode::tests::png(9, 9);
        let items = format!(
            "{}{}",
            item_line("a", "images/same.png"),
            item_line("b", "same.png")
        );
        let m = manifest_json(2, "none");
        let bytes = tar_with(&[
            ("manifest.json", tar::EntryType::Regular, &m),
            ("items.jsonl", tar::EntryType::Regular, items.as_bytes()),
            ("images/same.png", tar::EntryType::Regular, &png),
            ("same.png", tar::EntryType::Regular, &other),
        ]);
        let all = problems(import(&bytes, limits()));
        assert!(
            all.contains("item 'b': image 'same.png' and item 'a': image 'images/same.png' are different files"),
            "{all}"
        );
        // One file under two spellings is one photo, not a collision.
        let items = format!(
            "{}{}",
            item_line("a", "images/same.png"),
            item_line("b", "./images/same.png")
        );
        let bytes = tar_with(&[
            ("manifest.json", tar::EntryType::Regular, &m),
            ("items.jsonl", tar::EntryType::Regular, items.as_bytes()),
            ("images/same.png", tar::EntryType::Regular, &png),
        ]);
        import(&bytes, limits()).expect("same file twice");
    }

    #[test]
    fn truncated_photos_are_refused_naming_the_item() {
        let jpeg = crate::capture::decode::tests::jpeg(64, 48);
        let cut = &jpeg[..jpeg.len() * 2 / 3];
        let items = format!(
            "{}{}",
            item_line("ok", "images/a.jpg"),
            item_line("cut", "images/b.jpg")
        );
        for embeddings in ["none", "inline"] {
            let items = if embeddings == "inline" {
                items.replace("\"price\"", "\"embedding\":[1,0,0,0],\"price\"")
            } else {
                items.clone()
            };
            let m = manifest_json(2, embeddings);
            let bytes = tar_with(&[
                ("manifest.json", tar::EntryType::Regular, &m),
                ("items.jsonl", tar::EntryType::Regular, items.as_bytes()),
                ("images/a.jpg", tar::EntryType::Regular, &jpeg),
                ("images/b.jpg", tar::EntryType::Regular, cut),
            ]);
            let all = problems(import(&bytes, limits()));
            assert!(
                all.contains(
                    "item 'cut': image 'images/b.jpg' cannot be decoded (the JPEG is truncated"
                ),
                "{embeddings}: {all}"
            );
            assert!(!all.contains("item 'ok'"), "{all}");
        }
    }

    fn peak_rss_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))?
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    }

    #[test]
    fn decompression_bombs_are_refused_within_300_mb() {
        if !crate::test_alloc::measured_alone(
            module_path!(),
            "decompression_bombs_are_refused_within_300_mb",
        ) {
            return;
        }
        const BOMB: u64 = 512 << 20;
        let m = manifest_json(3, "inline");
        let cases: [(&str, Vec<super::super::synth::Member>, &str); 4] = [
            (
                "items.jsonl of short lines",
                vec![
                    ("manifest.json", m.len() as u64, &m),
                    ("items.jsonl", BOMB, b"{}\n"),
                ],
                "more than the 3 items manifest.json declares can need",
            ),
            (
                "items.jsonl of one endless line",
                vec![
                    ("manifest.json", m.len() as u64, &m),
                    ("items.jsonl", BOMB, b"x"),
                ],
                "line 1 is longer than",
            ),
            (
                "manifest.json",
                vec![("manifest.json", BOMB, b" ")],
                "'manifest.json' is larger than 64 KiB",
            ),
            (
                "items.jsonl before its manifest",
                vec![
                    ("items.jsonl", BOMB, b"{}\n"),
                    ("manifest.json", m.len() as u64, &m),
                ],
                "manifest.json says item_count 3 but items.jsonl has more items",
            ),
        ];
        let work = tempfile::tempdir().expect("tmp");
        for (what, members, expect) in cases {
            let archive = work.path().join("bomb.tar.gz");
            super::super::synth::write_bomb(&archive, &members).expect("bomb");
            let stage = work.path().join(what.replace(' ', "_"));
            let before = peak_rss_kib();
            let t = std::time::Instant::now();
            let err = import_file(&archive, &stage, UnpackLimits::new(3 << 30, 4))
                .expect_err(what)
                .to_string();
            let peak = peak_rss_kib();
            println!(
                "bomb '{what}' ({} KiB compressed, {} MiB unpacked): refused in {:.1} s, peak resident {} MiB (+{} MiB)",
                std::fs::metadata(&archive).map_or(0, |m| m.len()) >> 10,
                BOMB >> 20,
                t.elapsed().as_secs_f64(),
                peak >> 10,
                peak.saturating_sub(before) >> 10
            );
            assert!(err.contains(expect), "{what}: {err}");
            assert!(
                peak.saturating_sub(before) < 300 << 10,
                "{what}: resident memory grew by {} MiB",
                peak.saturating_sub(before) >> 10
            );
            let _ = std::fs::remove_dir_all(&stage);
        }
    }

    /// Fuzz target: mutated bundle archives (plain and gzip) are imported or refused with a
    /// bundle error, never a panic, a write error or a 500, and with bounded memory.
    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn valid_tar() -> Vec<u8> {
            let png = crate::capture::decode::tests::png(8, 8);
            let m = manifest_json(2, "inline");
            let items = format!(
                "{}{}",
                item_line("a", "images/a.png"),
                item_line("b", "images/a.png")
            )
            .replace("\"price\"", "\"embedding\":[1,0,0,0],\"price\"");
            tar_with(&[
                ("manifest.json", tar::EntryType::Regular, &m),
                ("items.jsonl", tar::EntryType::Regular, items.as_bytes()),
                ("images/a.png", tar::EntryType::Regular, &png),
            ])
        }

        fn check(bytes: &[u8]) {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .expect("pool");
            let (res, largest) = pool.install(|| {
                crate::test_alloc::largest_during(|| import(bytes, UnpackLimits::new(1 << 20, 4)))
            });
            match res {
                Ok(b) => assert_eq!(b.items.len(), 2),
                Err(CatalogError::Invalid { problems, .. }) => assert!(!problems.is_empty()),
                Err(CatalogError::EmbedderMismatch { .. }) => {}
                Err(e) => panic!("a hostile archive must be a bundle problem, not: {e}"),
            }
            assert!(
                largest <= 4 << 20,
                "{largest} bytes for a {}-byte archive",
                bytes.len()
            );
        }

        #[test]
        fn the_unmutated_archive_is_valid() {
            import(&valid_tar(), limits()).expect("valid");
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(96))]

            #[test]
            fn mutated_archives(
                edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
                cut in any::<usize>(),
                gzip in any::<bool>(),
            ) {
                let mut bytes = valid_tar();
                for (at, b) in edits {
                    let n = bytes.len();
                    bytes[at % n] = b;
                }
                if gzip {
                    use std::io::Write;
                    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    gz.write_all(&bytes).expect("gz");
                    bytes = gz.finish().expect("gz");
                }
                let keep = bytes.len() - cut % (bytes.len() / 3 + 1);
                check(&bytes[..keep]);
            }

            #[test]
            fn mutated_photos_decode_or_are_refused(
                edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
                cut in any::<usize>(),
                jpeg in any::<bool>(),
            ) {
                let mut bytes = if jpeg {
                    crate::capture::decode::tests::jpeg(24, 16)
                } else {
                    crate::capture::decode::tests::png(24, 16)
                };
                for (at, b) in edits {
                    let n = bytes.len();
                    bytes[at % n] = b;
                }
                let keep = bytes.len() - cut % (bytes.len() / 2 + 1);
                let (res, largest) = crate::test_alloc::largest_during(|| {
                    crate::capture::decode::decode_frame(&bytes[..keep])
                });
                if let Ok(img) = res {
                    prop_assert!(img.width() > 0 && img.height() > 0);
                }
                let cap = crate::capture::decode::MAX_PIXELS as usize * 4 + (64 << 20);
                prop_assert!(largest <= cap, "{} bytes", largest);
            }
        }
    }
}
