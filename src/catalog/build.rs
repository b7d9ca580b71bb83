//! `vitrine catalog build`: product photos + item metadata → a catalog folder with embeddings
//! computed by the running embedder and `[similarity]` recipe (the photo's colour from its
//! non-background pixels), so the catalog and the camera side always share one model and recipe.

use std::io::{BufRead, Write};
use std::path::Path;

use super::CatalogError;
use super::items::{EmbedderFingerprint, FORMAT, Item, ItemLine, Manifest};
use crate::vision::embedder::Embedder;
use crate::vision::fusion::Recipe;

/// Builds `out/` (items.jsonl, manifest.json, images/) from `meta` (JSONL items whose `image` is
/// relative to `images`). Every unreadable image is reported at once; nothing is written then.
pub fn build_catalog(
    embedder: &mut Embedder,
    recipe: &Recipe,
    images: &Path,
    meta: &Path,
    out: &Path,
    version: &str,
    mut progress: impl FnMut(usize, usize),
) -> Result<usize, CatalogError> {
    let text = std::fs::File::open(meta).map_err(|source| CatalogError::Read {
        path: meta.into(),
        source,
    })?;
    let mut items: Vec<Item> = Vec::new();
    let mut problems = Vec::new();
    for (n, line) in std::io::BufReader::new(text).lines().enumerate() {
        let line = line.map_err(|source| CatalogError::Read {
            path: meta.into(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Item>(&line) {
            Ok(it) => items.push(it),
            Err(e) => problems.push(format!("line {}: {e}", n + 1)),
        }
    }
    let mut lines = Vec::with_capacity(items.len());
    let total = items.len();
    for (i, it) in items.into_iter().enumerate() {
        let src = images.join(&it.image);
        let img = match crate::capture::replay::read_image(&src) {
            Ok(img) => img,
            Err(e) => {
                problems.push(format!("item '{}': {e}", it.id));
                continue;
            }
        };
        let embedding = embedder
            .embed_image(&img)
            .map_err(|e| CatalogError::Embedding {
                item: it.id.clone(),
                why: e.to_string(),
            })?;
        let embedding = recipe.fuse_photo(&img, embedding);
        lines.push((
            ItemLine {
                item: it,
                embedding: Some(embedding),
            },
            src,
        ));
        progress(i + 1, total);
    }
    if !problems.is_empty() {
        return Err(CatalogError::Invalid {
            path: meta.into(),
            problems,
        });
    }
    let img_dir = out.join("images");
    std::fs::create_dir_all(&img_dir).map_err(|source| CatalogError::Write {
        path: img_dir.clone(),
        source,
    })?;
    let mut body = Vec::new();
    for (line, src) in &mut lines {
        let file_name = Path::new(&line.item.image)
            .file_name()
            .map(|f| f.to_owned())
            .unwrap_or_default();
        let dst = img_dir.join(&file_name);
        std::fs::copy(&*src, &dst).map_err(|source| CatalogError::Write {
            path: dst.clone(),
            source,
        })?;
        line.item.image = format!("images/{}", file_name.to_string_lossy());
        serde_json::to_writer(&mut body, &line).map_err(|e| CatalogError::Write {
            path: out.join("items.jsonl"),
            source: e.into(),
        })?;
        body.push(b'\n');
    }
    let manifest = Manifest {
        format: FORMAT.into(),
        version: version.into(),
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        item_count: lines.len(),
        embedder: Some(EmbedderFingerprint::running(embedder.spec(), recipe)),
        embeddings: "inline".into(),
        embeddings_file: None,
    };
    write_atomic(&out.join("items.jsonl"), &body)?;
    let m = serde_json::to_vec_pretty(&manifest).map_err(|e| CatalogError::Write {
        path: out.join("manifest.json"),
        source: e.into(),
    })?;
    write_atomic(&out.join("manifest.json"), &m)?;
    Ok(lines.len())
}

/// Writes a file so that a crash leaves either the old or the new content: temp file, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CatalogError> {
    let tmp = path.with_extension("tmp");
    let err = |source| CatalogError::Write {
        path: path.into(),
        source,
    };
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    if let Some(dir) = path.parent().and_then(|d| std::fs::File::open(d).ok()) {
        let _ = dir.sync_all();
    }
    Ok(())
}
