//! A temporary folder deleted with everything in it when dropped: where the tools unpack, stage
//! and pack (`catalog publish`, `catalog verify`, the benches). `tempfile` is a test dependency;
//! this is the little of it the library needs.

use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// Creates `TMPDIR/vitrine-<what>-<pid>-<nanos>`: unique per process and call.
    pub fn new(what: &str) -> Result<Self, (PathBuf, std::io::Error)> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let p =
            std::env::temp_dir().join(format!("vitrine-{what}-{}-{nanos:x}", std::process::id()));
        match std::fs::create_dir_all(&p) {
            Ok(()) => Ok(Self(p)),
            Err(e) => Err((p, e)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_is_its_own_folder_and_goes_with_its_files() {
        let (a, b) = (ScratchDir::new("t").unwrap(), ScratchDir::new("t").unwrap());
        assert_ne!(a.path(), b.path());
        std::fs::create_dir_all(a.join("x/y")).unwrap();
        std::fs::write(a.join("x/y/f"), b"data").unwrap();
        let p = a.path().to_path_buf();
        drop(a);
        assert!(!p.exists());
        assert!(b.path().is_dir());
    }
}
