//! How item edits become a version: each edit checked (and its photo stored and embedded) in
//! the job's work folder, the active catalog's indexes patched (`Catalog::apply`), the result
//! saved and activated at once. Runs with the writer held.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::Digest;

use super::steps::{fit_for_embedding, load_photo};
use super::{CatalogService, Edit};
use crate::catalog::items::{check_fields, check_vector, normalise};
use crate::catalog::job::{Job, Stage, now_rfc3339};
use crate::catalog::store::{ImageSource, VersionInfo};
use crate::catalog::{Catalog, CatalogError, CatalogMeta, Change, Item};

/// The edits, checked and turned into changes so far.
struct Draft<'a> {
    job: &'a Job,
    /// The active catalog the edits apply to.
    current: &'a Catalog,
    /// The job's work folder, where new photos wait to be saved with the version.
    work: PathBuf,
    changes: Vec<Change>,
    /// New photos by their `images/…` name, written to the work folder.
    new_files: HashMap<String, PathBuf>,
    /// What is wrong with the request, all of it (answered 422 together).
    problems: Vec<String>,
}

impl CatalogService {
    /// Applies item edits to the active version as a new version, activated at once. Unchanged
    /// groups keep their graphs; edited items are searched exactly until their group is rebuilt.
    pub(super) fn edit(
        &self,
        job: &Job,
        edits: Vec<Edit>,
        source: String,
    ) -> Result<VersionInfo, CatalogError> {
        let result = self.edit_inner(job, edits, source);
        job.finish(&result, result.is_ok());
        result
    }

    fn edit_inner(
        &self,
        job: &Job,
        edits: Vec<Edit>,
        source: String,
    ) -> Result<VersionInfo, CatalogError> {
        let store = self.store()?;
        let current = self.shared.load_full();
        if store.info(&current.version).is_err() {
            return Err(CatalogError::NotStored(current.version.clone()));
        }
        job.stage(Stage::Validating, edits.len() as u64);
        let work = store.work_dir().join(job.id());
        std::fs::create_dir_all(&work).map_err(|source| CatalogError::Write {
            path: work.clone(),
            source,
        })?;
        let mut draft = Draft {
            job,
            current: &current,
            work,
            changes: vec![],
            new_files: HashMap::new(),
            problems: vec![],
        };
        for (n, e) in edits.into_iter().enumerate() {
            match e {
                Edit::Remove { id } => {
                    if current.position(&id).is_none() {
                        return Err(CatalogError::NoSuchItem(id));
                    }
                    draft.changes.push(Change::Remove { id });
                }
                Edit::Put {
                    item,
                    embedding,
                    image_data,
                } => self.check_put(&mut draft, item, embedding, image_data)?,
            }
            job.progress(n as u64 + 1);
        }
        let Draft {
            changes,
            new_files,
            problems,
            work,
            ..
        } = draft;
        if !problems.is_empty() {
            return Err(CatalogError::Invalid {
                path: PathBuf::from("request"),
                problems,
            });
        }
        let id = store.next_id()?;
        let meta = CatalogMeta {
            version: id.clone(),
            label: current.label.clone(),
            root: store.version_dir(&id),
            dim: current.dim,
            embedder: current.embedder.clone(),
        };
        job.stage(Stage::Indexing, 0);
        let params = self.cfg.params;
        let next = self.pool()?.install(|| {
            current.apply(meta, changes, &params, &|d, t| {
                job.progress_of(d as u64, t as u64)
            })
        });
        let files = next
            .items
            .iter()
            .map(|it| {
                new_files
                    .get(&it.image)
                    .cloned()
                    .unwrap_or_else(|| current.root.join(&it.image))
            })
            .collect();
        job.stage(Stage::Saving, 0);
        let info = VersionInfo {
            format: String::new(),
            id: id.clone(),
            label: current.label.clone(),
            created: now_rfc3339(),
            source,
            parent: Some(current.version.clone()),
            item_count: next.items.len(),
            embedder: self.cfg.fingerprint.clone(),
            index: params,
            groups: vec![],
            warnings: vec![],
        };
        let info = store.write_version(&next, info, ImageSource::Files(files))?;
        let _ = std::fs::remove_dir_all(&work);
        job.stage(Stage::Activating, 0);
        store.activate(&id, self.cfg.versions_kept)?;
        self.swap(Arc::new(next));
        self.prune();
        Ok(info)
    }

    /// Checks one put: its photo (a new one is decoded and written to `work`, an existing one
    /// must be in the active catalog), its fields and its vector (computed from the photo when
    /// none is given and nothing is wrong so far, in this edit or an earlier one). Problems are
    /// collected; only a photo that cannot be decoded or stored ends the edit at once.
    fn check_put(
        &self,
        draft: &mut Draft,
        mut item: Item,
        embedding: Option<Vec<f32>>,
        image_data: Option<Vec<u8>>,
    ) -> Result<(), CatalogError> {
        let at = format!("item '{}'", item.id);
        let current = draft.current;
        let problems = &mut draft.problems;
        let mut img = None;
        if let Some(bytes) = image_data {
            let (name, path, decoded) = store_photo(&draft.work, &at, &item.id, &bytes)?;
            item.image = format!("images/{name}");
            draft.new_files.insert(item.image.clone(), path);
            img = Some(decoded);
        } else if item.image.is_empty() {
            match current.position(&item.id) {
                Some(i) => item.image = current.items[i].image.clone(),
                None => problems.push(format!("{at}: a new item needs an image (image_base64)")),
            }
        } else if current
            .image_file(item.image.trim_start_matches("images/"))
            .is_none()
        {
            problems.push(format!(
                "{at}: image '{}' is not in the active catalog; send the file as image_base64",
                item.image
            ));
        }
        problems.extend(
            check_fields(&item)
                .into_iter()
                .map(|p| format!("{at}: {p}")),
        );
        let vector = match embedding {
            Some(mut v) => {
                let p = check_vector(&v, self.cfg.fingerprint.dim);
                if p.is_empty() {
                    normalise(&mut v);
                }
                problems.extend(p.into_iter().map(|p| format!("{at}: {p}")));
                v
            }
            None if problems.is_empty() => {
                let img = match img {
                    Some(i) => i,
                    None => {
                        let path = current.root.join(&item.image);
                        load_photo(&path).map_err(|why| CatalogError::StoredImage {
                            item: item.id.clone(),
                            path,
                            why,
                        })?
                    }
                };
                draft.job.stage(Stage::Embedding, 1);
                self.embed(&img, &item.id)?
            }
            None => Vec::new(),
        };
        draft.changes.push(Change::Put { item, vector });
        Ok(())
    }
}

/// Decodes a sent photo and writes it to `work` under a name made of the item id and the
/// photo's digest; returns (name, path, pixels at embedding size).
fn store_photo(
    work: &Path,
    at: &str,
    id: &str,
    bytes: &[u8],
) -> Result<(String, PathBuf, image::RgbImage), CatalogError> {
    let decoded = crate::capture::decode::decode_frame(bytes)
        .map(fit_for_embedding)
        .map_err(|e| CatalogError::Invalid {
            path: PathBuf::from(id),
            problems: vec![format!("{at}: the image cannot be decoded ({e})")],
        })?;
    let ext = match image::guess_format(bytes) {
        Ok(image::ImageFormat::Png) => "png",
        _ => "jpg",
    };
    let digest = hex::encode(sha2::Sha256::digest(bytes));
    let name = format!("{}-{}.{ext}", sanitize(id), &digest[..12]);
    let p = work.join(&name);
    std::fs::write(&p, bytes).map_err(|source| CatalogError::Write {
        path: p.clone(),
        source,
    })?;
    Ok((name, p, decoded))
}

/// A file-name-safe form of an item id.
fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}
