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
    EmbedderFingerprint, EmbeddingSource, FORMAT, Item, Manifest, cap_problems, check_fields,
    check_vector, normalise,
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
    let (manifest, counted) = match Manifest::load_optional(dir)? {
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
    };
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

    let items_path = dir.join("items.jsonl");
    let text = std::fs::read_to_string(&items_path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            invalid(dir, vec!["items.jsonl is missing".into()])
        } else {
            CatalogError::Read {
                path: items_path.clone(),
                source: e,
            }
        }
    })?;
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| (n + 1, l))
        .collect();
    if counted && lines.len() != manifest.item_count {
        problems.push(format!(
            "manifest.json says item_count {} but items.jsonl has {} items (a truncated upload?)",
            manifest.item_count,
            lines.len()
        ));
    }
    if lines.is_empty() {
        problems.push("items.jsonl holds no items".into());
        return Err(invalid(dir, problems));
    }

    // Rows are parsed and checked in parallel (on the caller's rayon pool); each yields its item,
    // its inline embedding and its problems.
    let parsed: Vec<Row> = lines
        .par_iter()
        .map(|&(n, line)| parse_row(n, line, &source, dim))
        .collect();
    let mut items = Vec::with_capacity(parsed.len());
    let mut inline = Vec::new();
    let mut seen = HashSet::with_capacity(parsed.len());
    for ((n, _), (item, emb, row_problems)) in lines.iter().zip(parsed) {
        problems.extend(row_problems);
        if let Some(it) = item {
            if !seen.insert(it.id.clone()) {
                problems.push(format!(
                    "items.jsonl line {n}, item '{}': duplicate id",
                    it.id
                ));
            }
            items.push(it);
            inline.push(emb);
        }
    }

    // Images: inside the bundle, regular files, and readable as images.
    let image_problems: Vec<String> = items
        .par_iter()
        .filter_map(|it| check_image(dir, it, opts.decode_images).err())
        .collect();
    problems.extend(image_problems);

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
    if !problems.is_empty() {
        return Err(invalid(dir, problems));
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
    if decode {
        reader
            .decode()
            .map(|_| ())
            .map_err(|e| format!("{at} cannot be decoded ({e})"))
    } else {
        match reader.into_dimensions() {
            Ok((w, h)) if w > 0 && h > 0 => Ok(()),
            Ok(_) => Err(format!("{at} has no pixels")),
            Err(e) => Err(format!("{at} cannot be decoded ({e})")),
        }
    }
}

fn read_npy(
    dir: &Path,
    file: &str,
    items: &[Item],
    dim: usize,
) -> Result<Vec<Vec<f32>>, Vec<String>> {
    let path = dir.join(file);
    let f = std::fs::File::open(&path).map_err(|e| vec![format!("{file} cannot be read ({e})")])?;
    let (rows, cols, data) = super::npy::read_f32_matrix(std::io::BufReader::new(f))
        .map_err(|e| vec![format!("{file}: {e}")])?;
    if rows != items.len() || cols != dim {
        return Err(vec![format!(
            "{file} has shape ({rows}, {cols}) but ({}, {dim}) is needed: one row per item, in items.jsonl order, of the embedder's size",
            items.len()
        )]);
    }
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
    pub max_bytes: u64,
    pub max_entries: usize,
}

/// Unpacks a `.tar` or `.tar.gz` (told apart by content, not name) into the empty folder `into`
/// and returns the bundle's folder: `into` itself, or the single folder the archive wraps it in.
pub fn unpack(archive: &Path, into: &Path, limits: UnpackLimits) -> Result<PathBuf, CatalogError> {
    let bad = |m: String| invalid(archive, vec![m]);
    let mut file = std::fs::File::open(archive).map_err(|source| CatalogError::Read {
        path: archive.into(),
        source,
    })?;
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic).map_err(|source| CatalogError::Read {
        path: archive.into(),
        source,
    })?;
    let file = std::fs::File::open(archive).map_err(|source| CatalogError::Read {
        path: archive.into(),
        source,
    })?;
    let reader: Box<dyn Read> = if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)))
    } else {
        Box::new(std::io::BufReader::new(file))
    };
    let mut tar = tar::Archive::new(reader);
    let corrupt = |e: std::io::Error| {
        bad(format!(
            "the archive is truncated or corrupt ({e}); upload a complete .tar or .tar.gz"
        ))
    };
    let mut total: u64 = 0;
    let mut count = 0usize;
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
        let mut rel = PathBuf::new();
        for c in name.components() {
            match c {
                Component::Normal(p) => rel.push(p),
                Component::CurDir => {}
                Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                    return Err(bad(format!(
                        "archive entry '{shown}' points outside the bundle folder; bundles may only hold relative paths without '..'"
                    )));
                }
            }
        }
        if rel.as_os_str().is_empty() {
            continue;
        }
        let dest = into.join(&rel);
        if kind.is_dir() {
            std::fs::create_dir_all(&dest).map_err(|source| CatalogError::Write {
                path: dest.clone(),
                source,
            })?;
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
            std::fs::create_dir_all(parent).map_err(|source| CatalogError::Write {
                path: parent.into(),
                source,
            })?;
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
        let copied = std::io::copy(&mut (&mut entry).take(left + 1), &mut out).map_err(corrupt)?;
        total += copied;
        if copied > left {
            return Err(bad(format!(
                "the archive unpacks to more than {} MiB",
                limits.max_bytes >> 20
            )));
        }
    }
    // Reading the rest checks gzip's length and CRC trailer: a cut-off .tar.gz fails here even
    // when it was cut between two entries.
    std::io::copy(&mut tar.into_inner(), &mut std::io::sink()).map_err(corrupt)?;

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
        _ => Err(bad(
            "the archive has no manifest.json at its top (or inside one top folder)".into(),
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
        let mut v = serde_json::to_value(it).map_err(|e| CatalogError::Other(e.to_string()))?;
        if let (Some(vs), false, Some(obj)) = (vectors, npy, v.as_object_mut()) {
            obj.insert("embedding".into(), serde_json::json!(vs[i]));
        }
        serde_json::to_writer(&mut w, &v).map_err(|e| CatalogError::Other(e.to_string()))?;
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
    let m = serde_json::to_vec_pretty(manifest).map_err(|e| CatalogError::Other(e.to_string()))?;
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
}
