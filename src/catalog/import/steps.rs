//! How a bundle becomes a version: unpack (archives) → validate → embed (images-only bundles)
//! → index → save → activate. Runs with the writer held, on the thread that calls it; the
//! parsing and index building spread over the import pool.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{CatalogService, ImportInput, ImportRequest};
use crate::catalog::bundle::{self, Bundle, ReadOptions, UnpackLimits};
use crate::catalog::items::normalise;
use crate::catalog::job::{Job, Stage, now_rfc3339};
use crate::catalog::store::{ImageSource, VersionInfo};
use crate::catalog::{CatalogError, CatalogMeta, Item, Manifest, failpoint};
use crate::vision::embedder::Embedder;

/// Hears whether the bundle passed validation, as soon as that is known.
pub(super) type Verdict = tokio::sync::oneshot::Sender<Result<(), CatalogError>>;

/// A bundle's folder, read to import.
struct Opened {
    dir: PathBuf,
    /// The folder is the import's own (unpacked from an archive): its images may be moved.
    owned: bool,
    source: String,
}

impl CatalogService {
    /// Imports a bundle as a new version (and activates it when asked), with the writer held.
    /// `validated` hears the outcome of unpacking and validation as soon as it is known, so an
    /// upload can be answered 4xx for a bad bundle and 202 for a good one while the rest runs
    /// on.
    pub(super) fn run_import(
        &self,
        job: &Job,
        req: ImportRequest,
        validated: Option<Verdict>,
    ) -> Result<VersionInfo, CatalogError> {
        let mut validated = validated;
        let activate = req.activate;
        let input = req.input.clone();
        let result = self.import_inner(job, req, &mut validated);
        if let (Ok(store), ImportInput::Archive { path, owned: true }) = (self.store(), &input) {
            let _ = std::fs::remove_file(path);
            let _ = std::fs::remove_dir_all(store.work_dir().join(job.id()));
        }
        job.finish(&result, activate);
        if let Err(e) = &result {
            tracing::warn!(job = %job.id(), error = %e.summary(), "catalog import failed; the active catalog is unchanged");
        }
        // Told last, so whoever hears of the failure finds the job finished and its files gone.
        if let (Some(tx), Err(e)) = (validated.take(), &result) {
            let _ = tx.send(Err(e.clone_shallow()));
        }
        result
    }

    fn import_inner(
        &self,
        job: &Job,
        req: ImportRequest,
        validated: &mut Option<Verdict>,
    ) -> Result<VersionInfo, CatalogError> {
        let store = self.store()?;
        let opened = self.open_bundle(job, &req)?;
        let bundle = self.validate(job, &opened.dir, &req.input)?;
        failpoint("validated");
        if let Some(tx) = validated.take() {
            let _ = tx.send(Ok(()));
        }
        let Bundle {
            manifest,
            items,
            vectors,
            mut warnings,
            ..
        } = bundle;
        let vectors = match vectors {
            Some(v) => v,
            None => self.embed_images(job, &opened.dir, &items)?,
        };

        let fp = &self.cfg.fingerprint;
        let id = store.next_id()?;
        let label = req.label.unwrap_or_else(|| manifest.version.clone());
        let meta = CatalogMeta {
            version: id.clone(),
            label: label.clone(),
            root: store.version_dir(&id),
            dim: fp.dim,
            embedder: Some(fp.clone()),
        };
        job.stage(Stage::Indexing, items.len() as u64);
        let params = self.cfg.params;
        // Graphs HQ built into the bundle are loaded when they prove to be these items' own.
        let (catalog, prebuilt) = self.pool()?.install(|| {
            crate::catalog::prebuilt::build_or_load(
                &opened.dir,
                meta,
                items,
                vectors,
                &params,
                &|done, _| job.progress(done as u64),
            )
        });
        warnings.extend(prebuilt.warning());
        failpoint("indexed");
        job.stage(Stage::Saving, 0);
        let info = VersionInfo {
            format: String::new(),
            id: id.clone(),
            label,
            created: now_rfc3339(),
            source: opened.source,
            parent: None,
            item_count: catalog.items.len(),
            embedder: fp.clone(),
            index: params,
            groups: vec![],
            warnings,
        };
        let images = ImageSource::Bundle {
            dir: &opened.dir,
            owned: opened.owned,
        };
        let info = store.write_version(&catalog, info, images)?;
        if req.activate {
            job.stage(Stage::Activating, 0);
            store.activate(&id, self.cfg.versions_kept)?;
            failpoint("activated");
            self.swap(Arc::new(catalog));
        }
        self.prune();
        Ok(info)
    }

    /// The bundle's folder: a folder as it is, an archive unpacked into the job's work folder.
    fn open_bundle(&self, job: &Job, req: &ImportRequest) -> Result<Opened, CatalogError> {
        let source = req.source.clone();
        match &req.input {
            ImportInput::Folder(d) => Ok(Opened {
                dir: d.clone(),
                owned: false,
                source: source.unwrap_or_else(|| format!("folder {}", d.display())),
            }),
            ImportInput::Archive { path, .. } => {
                job.stage(Stage::Unpacking, 0);
                let into = self.store()?.work_dir().join(job.id());
                std::fs::create_dir_all(&into).map_err(|source| CatalogError::Write {
                    path: into.clone(),
                    source,
                })?;
                let limits = UnpackLimits::new(self.cfg.unpack_limit, self.cfg.fingerprint.dim);
                let root = bundle::unpack(path, &into, limits)?;
                failpoint("unpacked");
                Ok(Opened {
                    dir: root,
                    owned: true,
                    source: source.unwrap_or_else(|| "upload".into()),
                })
            }
        }
    }

    /// Reads and checks the whole bundle (decoding its photos when it carries images only).
    fn validate(&self, job: &Job, dir: &Path, input: &ImportInput) -> Result<Bundle, CatalogError> {
        job.stage(Stage::Validating, 0);
        let fp = &self.cfg.fingerprint;
        let peek = Manifest::load_optional(dir).ok().flatten();
        let images_only = peek.as_ref().is_some_and(|m| m.embeddings == "none");
        let opts = ReadOptions {
            decode_images: images_only,
            require_manifest: matches!(input, ImportInput::Archive { .. }),
        };
        let bundle = self
            .pool()?
            .install(|| bundle::read_bundle(dir, Some(fp), &opts))?;
        if bundle.vectors.is_none() && self.cfg.embedder.is_none() {
            return Err(CatalogError::Invalid {
                path: dir.into(),
                problems: vec!["this bundle carries images only and no embedder is configured to compute its embeddings".into()],
            });
        }
        Ok(bundle)
    }

    /// Embeds bundle images with the import's own session (built on first use, on this thread).
    fn embed_images(
        &self,
        job: &Job,
        dir: &Path,
        items: &[Item],
    ) -> Result<Vec<Vec<f32>>, CatalogError> {
        job.stage(Stage::Embedding, items.len() as u64);
        let mut out = Vec::with_capacity(items.len());
        for (i, it) in items.iter().enumerate() {
            let img = load_photo(&dir.join(&it.image)).map_err(|e| CatalogError::Invalid {
                path: dir.into(),
                problems: vec![format!(
                    "item '{}': image '{}' cannot be decoded ({e})",
                    it.id, it.image
                )],
            })?;
            out.push(self.embed(&img, &it.id)?);
            job.progress(i as u64 + 1);
        }
        Ok(out)
    }

    /// One photo's stored vector: the embedding fused with its colour by the running recipe.
    pub(super) fn embed(&self, img: &image::RgbImage, id: &str) -> Result<Vec<f32>, CatalogError> {
        let src = self.cfg.embedder.as_ref().ok_or(CatalogError::NoEmbedder)?;
        let mut slot = self.embedder.lock().unwrap_or_else(|p| p.into_inner());
        let emb = match &mut *slot {
            Some(e) => e,
            empty => {
                // One thread: the import must not take cores from the live pipeline's sessions.
                let mut session = src.session.clone();
                session.intra_threads = 1;
                let e = Embedder::build(&src.spec, &session, src.library.as_deref())
                    .map_err(|e| CatalogError::EmbedderStart(e.to_string()))?;
                empty.insert(e)
            }
        };
        let mut v = emb.embed_image(img).map_err(|e| CatalogError::Embedding {
            item: id.into(),
            why: e.to_string(),
        })?;
        normalise(&mut v);
        Ok(src.recipe.fuse_photo(img, v))
    }
}

/// Product photos are scaled to this long side before embedding. The embedder sees a few
/// hundred pixels, and its crop buffer keeps the size of the largest image it was given: a
/// 10000×10000 photo would hold 300 MB for the life of the import's session.
const EMBED_MAX_SIDE: u32 = 2048;

/// Reads and decodes a product photo (strictly: a truncated one is an error) at embedding size.
pub(super) fn load_photo(path: &Path) -> Result<image::RgbImage, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    crate::capture::decode::decode_frame(&bytes).map(fit_for_embedding)
}

/// Scales a photo down to [`EMBED_MAX_SIDE`] at once, so the full-size pixels are given back
/// before the embedder copies them. Smaller photos pass untouched, embedded exactly as the
/// reference does.
pub(super) fn fit_for_embedding(img: image::RgbImage) -> image::RgbImage {
    let (w, h) = img.dimensions();
    let long = w.max(h);
    if long <= EMBED_MAX_SIDE {
        return img;
    }
    let scale = EMBED_MAX_SIDE as f64 / long as f64;
    let nw = ((w as f64 * scale).round() as u32).clamp(1, EMBED_MAX_SIDE);
    let nh = ((h as f64 * scale).round() as u32).clamp(1, EMBED_MAX_SIDE);
    let mut out = vec![0u8; nw as usize * nh as usize * 3];
    crate::vision::resize::PillowResizer::default().resize(img.as_raw(), w, h, &mut out, nw, nh);
    drop(img);
    image::RgbImage::from_raw(nw, nh, out).unwrap_or_default()
}
