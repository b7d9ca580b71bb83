//! One HNSW graph (`hnsw_rs`, dot distance on unit vectors), built in memory or reloaded from its
//! dump, and written to disk.
//!
//! `hnsw_rs` quirks handled here, once:
//! - A reloaded index borrows the `HnswIo` that read it for its whole life. [`Graph`] owns both
//!   with `self_cell`, so a reload costs no leak and dropping the graph frees everything.
//! - Loading and dumping `assert!`/`panic!` on corrupt or unwritable files; both run under
//!   `catch_unwind` and come back as [`CatalogError`]s, so a bad dump never takes the daemon down.
//! - A dump may pick a random-suffixed name instead of the one asked for; the name it returns is
//!   the one recorded in the version's metadata.
//! - There is no delete: callers filter dead ids at search time and rebuild now and then.
//!
//! Graphs are immutable once built and shared (`Arc`) between catalog versions that did not change
//! them, so an edit of one item neither rebuilds nor copies the other groups.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hnsw_rs::prelude::{AnnT, DistDot, FilterT, Hnsw, HnswIo, Neighbour};

use super::{CatalogError, IndexParams};

type DotHnsw<'a> = Hnsw<'a, f32, DistDot>;

self_cell::self_cell!(
    /// An index reloaded from disk together with the reader it borrows from.
    struct Reloaded {
        owner: HnswIo,
        #[not_covariant]
        dependent: DotHnsw,
    }
);

enum Inner {
    Built(DotHnsw<'static>),
    Reloaded(Reloaded),
}

/// Points inserted per `parallel_insert` call: small enough for a steady progress bar, large
/// enough that rayon's fork/join overhead stays negligible.
const INSERT_CHUNK: usize = 2048;

pub struct Graph {
    inner: Inner,
    points: usize,
    dim: usize,
    /// Where this graph's dump already lies (folder, basename), so a new version can hard-link
    /// the files instead of writing them again.
    files: Mutex<Option<(PathBuf, String)>>,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("points", &self.points)
            .field("dim", &self.dim)
            .finish()
    }
}

/// hnsw_rs reports its dump failures as text (or panics): a write error naming the graph file.
fn dump_failed(dir: &Path, basename: &str, why: String) -> CatalogError {
    CatalogError::Write {
        path: dir.join(format!("{basename}.hnsw.graph")),
        source: std::io::Error::other(why),
    }
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

impl Graph {
    /// Builds a graph over unit `vectors` (data id = position). Runs on the calling thread's rayon
    /// pool; `progress` gets the number inserted so far.
    pub fn build(vectors: &[Vec<f32>], params: &IndexParams, progress: &dyn Fn(usize)) -> Self {
        let n = vectors.len().max(1);
        // hnsw_rs only dumps graphs made with its maximum of 16 layers; levels are drawn with
        // scale 1/ln(M) anyway, so the cap changes nothing for catalog sizes.
        let hnsw = DotHnsw::new(
            params.max_connections.clamp(2, 256),
            n,
            16,
            params.ef_construction.max(1),
            DistDot {},
        );
        let data: Vec<(&Vec<f32>, usize)> =
            vectors.iter().enumerate().map(|(i, v)| (v, i)).collect();
        let mut done = 0;
        for chunk in data.chunks(INSERT_CHUNK) {
            hnsw.parallel_insert(chunk);
            done += chunk.len();
            progress(done);
        }
        Self {
            inner: Inner::Built(hnsw),
            points: vectors.len(),
            dim: vectors.first().map_or(0, Vec::len),
            files: Mutex::new(None),
        }
    }

    pub fn points(&self) -> usize {
        self.points
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    fn with<R>(&self, f: impl for<'a> FnOnce(&DotHnsw<'a>) -> R) -> R {
        match &self.inner {
            Inner::Built(h) => f(h),
            Inner::Reloaded(r) => r.with_dependent(|_, h| f(h)),
        }
    }

    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        filter: Option<&dyn FilterT>,
    ) -> Vec<Neighbour> {
        if self.points == 0 {
            return Vec::new();
        }
        self.with(|h| h.search_filter(query, k, ef.max(k), filter))
    }

    /// Every point's vector by data id (copies; for exact search and rebuilds, never per frame).
    pub fn vectors(&self) -> Vec<Vec<f32>> {
        let mut out = vec![Vec::new(); self.points];
        self.with(|h| {
            for p in h.get_point_indexation() {
                if let Some(slot) = out.get_mut(p.get_origin_id()) {
                    *slot = p.get_v().to_vec();
                }
            }
        });
        out
    }

    /// Writes `dir/<basename>.hnsw.{graph,data}` and fsyncs both; returns the basename used.
    pub fn dump(&self, dir: &Path, basename: &str) -> Result<String, CatalogError> {
        let written = catch_unwind(AssertUnwindSafe(|| {
            self.with(|h| h.file_dump(dir, basename))
        }))
        .map_err(|p| dump_failed(dir, basename, panic_text(p)))?
        .map_err(|e| dump_failed(dir, basename, e.to_string()))?;
        for ext in ["hnsw.graph", "hnsw.data"] {
            let path = dir.join(format!("{written}.{ext}"));
            let f = std::fs::File::open(&path).map_err(|source| CatalogError::Write {
                path: path.clone(),
                source,
            })?;
            f.sync_all()
                .map_err(|source| CatalogError::Write { path, source })?;
        }
        self.remember(dir, &written);
        Ok(written)
    }

    /// Puts this graph's files into `dir` under `basename`: hard links to a dump that already
    /// exists (dumps never change), else a fresh dump. Returns the basename used.
    pub fn link_or_dump(&self, dir: &Path, basename: &str) -> Result<String, CatalogError> {
        let known = self.files.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some((src_dir, src_name)) = known {
            let linked = ["hnsw.graph", "hnsw.data"].iter().try_for_each(|ext| {
                std::fs::hard_link(
                    src_dir.join(format!("{src_name}.{ext}")),
                    dir.join(format!("{basename}.{ext}")),
                )
            });
            if linked.is_ok() {
                return Ok(basename.to_string());
            }
            for ext in ["hnsw.graph", "hnsw.data"] {
                let _ = std::fs::remove_file(dir.join(format!("{basename}.{ext}")));
            }
        }
        self.dump(dir, basename)
    }

    /// Records where a dump of this graph lies.
    pub fn remember(&self, dir: &Path, basename: &str) {
        *self.files.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((dir.to_path_buf(), basename.to_string()));
    }

    /// Reloads `dir/<basename>.hnsw.*`, checking it holds `points` vectors of size `dim`.
    pub fn load(
        dir: &Path,
        basename: &str,
        points: usize,
        dim: usize,
    ) -> Result<Self, CatalogError> {
        let what = dir.join(basename);
        let bad = |m: String| CatalogError::Invalid {
            path: what.clone(),
            problems: vec![m],
        };
        for ext in ["hnsw.graph", "hnsw.data"] {
            let p = dir.join(format!("{basename}.{ext}"));
            if !p.is_file() {
                return Err(bad(format!("index file {} is missing", p.display())));
            }
        }
        let io = HnswIo::new(dir, basename);
        let reloaded = catch_unwind(AssertUnwindSafe(|| {
            Reloaded::try_new(io, |io| io.load_hnsw_with_dist::<f32, DistDot>(DistDot {}))
        }))
        .map_err(|p| bad(format!("index is corrupt: {}", panic_text(p))))?
        .map_err(|e| bad(format!("index cannot be read: {e}")))?;
        let (n, d) = reloaded.with_dependent(|_, h| {
            (
                h.get_nb_point(),
                h.get_point_indexation().get_data_dimension(),
            )
        });
        if n != points || (n > 0 && d != dim) {
            return Err(bad(format!(
                "index holds {n} points of size {d} but the version says {points} of size {dim}"
            )));
        }
        let g = Self {
            inner: Inner::Reloaded(reloaded),
            points,
            dim,
            files: Mutex::new(None),
        };
        g.remember(dir, basename);
        Ok(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::index::tests::random_unit_vectors;

    #[test]
    fn dump_reload_and_redump_keep_the_same_answers() {
        let dir = tempfile::tempdir().expect("tmp");
        let vecs = random_unit_vectors(500, 16, 7);
        let g = Graph::build(&vecs, &IndexParams::default(), &|_| {});
        let name = g.dump(dir.path(), "top").expect("dump");
        let r = Graph::load(dir.path(), &name, 500, 16).expect("reload");
        let ids = |g: &Graph| -> Vec<usize> {
            g.search(&vecs[3], 5, 64, None)
                .iter()
                .map(|n| n.d_id)
                .collect()
        };
        assert_eq!(ids(&g), ids(&r));
        assert_eq!(r.vectors()[42], vecs[42]);
        // A reloaded graph written elsewhere is linked, not re-dumped.
        let other = tempfile::tempdir().expect("tmp");
        assert_eq!(r.link_or_dump(other.path(), "top").expect("link"), "top");
        let again = Graph::load(other.path(), "top", 500, 16).expect("reload link");
        assert_eq!(ids(&again), ids(&g));
        // Wrong expectations and corrupt files are errors, not panics.
        assert!(Graph::load(dir.path(), &name, 499, 16).is_err());
        std::fs::write(dir.path().join(format!("{name}.hnsw.data")), b"garbage").expect("w");
        let err = Graph::load(dir.path(), &name, 500, 16).expect_err("corrupt");
        assert!(err.to_string().contains("index"), "{err}");
    }

    #[test]
    fn reloading_many_times_does_not_grow_memory() {
        // Each reload is dropped with its HnswIo: no leak per catalog swap.
        if !crate::test_alloc::measured_alone(
            module_path!(),
            "reloading_many_times_does_not_grow_memory",
        ) {
            return;
        }
        let dir = tempfile::tempdir().expect("tmp");
        let vecs = random_unit_vectors(2000, 32, 9);
        let name = Graph::build(&vecs, &IndexParams::default(), &|_| {})
            .dump(dir.path(), "g")
            .expect("dump");
        let rss = || -> usize {
            std::fs::read_to_string("/proc/self/statm")
                .ok()
                .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
                .unwrap_or(0)
        };
        for _ in 0..5 {
            drop(Graph::load(dir.path(), &name, 2000, 32).expect("load"));
        }
        let before = rss();
        for _ in 0..30 {
            drop(Graph::load(dir.path(), &name, 2000, 32).expect("load"));
        }
        let grown_pages = rss().saturating_sub(before);
        // One reload holds ~0.5 MB of vectors plus the graph; 30 leaked would be > 15 MB.
        assert!(
            grown_pages * 4096 < 8 << 20,
            "resident memory grew by {} KiB over 30 reloads",
            grown_pages * 4
        );
    }
}
