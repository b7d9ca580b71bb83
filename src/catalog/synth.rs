//! Synthetic catalogs for the benchmark and the tests, reproducible from a seed, and the
//! decompression bombs the hostile-upload tests send.
//!
//! Real garment embeddings are not uniform on the sphere: they cluster by kind and style, and a
//! PCA projection (what the shipped embedder ends with) puts most variance in the first
//! components. Uniform random vectors would make HNSW look far worse than it is on real data,
//! clusters of identical points far better, so vectors here are drawn around a few hundred
//! cluster centres with a decaying per-component spread, then normalised. Queries are catalog
//! vectors plus noise, like a shopper's garment resembling (not equalling) a product photo.

use std::path::Path;

use super::items::{EmbedderFingerprint, FORMAT, Item, Manifest};
use super::{CatalogError, bundle};

/// xorshift64* with Box–Muller normals: no extra crate, same numbers on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    pub fn normal(&mut self) -> f32 {
        let u1 = self.uniform().max(1e-7);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

pub fn unit(mut v: Vec<f32>) -> Vec<f32> {
    super::items::normalise(&mut v);
    v
}

/// `n` unit vectors of size `dim` around `clusters` centres.
pub fn clustered_vectors(n: usize, dim: usize, clusters: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(seed);
    let spread: Vec<f32> = (0..dim).map(|j| 1.0 / (1.0 + j as f32).powf(0.5)).collect();
    let centres: Vec<Vec<f32>> = (0..clusters.max(1))
        .map(|_| spread.iter().map(|s| s * rng.normal()).collect())
        .collect();
    (0..n)
        .map(|_| {
            let c = &centres[rng.below(centres.len())];
            unit(
                c.iter()
                    .zip(&spread)
                    .map(|(m, s)| m + 0.6 * s * rng.normal())
                    .collect(),
            )
        })
        .collect()
}

/// A query near `v`: the same garment seen by the camera rather than photographed.
pub fn perturbed(v: &[f32], noise: f32, rng: &mut Rng) -> Vec<f32> {
    unit(
        v.iter()
            .map(|x| x + noise * rng.normal() / (v.len() as f32).sqrt())
            .collect(),
    )
}

/// The groups of the shipped catalog (models/CONTRACTS.md §7) with roughly a store's mix.
pub const GROUPS: [(&str, f32); 5] = [
    ("top", 0.40),
    ("bottom", 0.25),
    ("full-body", 0.15),
    ("footwear", 0.15),
    ("bag", 0.05),
];

pub fn group_for(i: usize, n: usize) -> &'static str {
    let x = (i as f32 + 0.5) / n.max(1) as f32;
    let mut acc = 0.0;
    for (g, share) in GROUPS {
        acc += share;
        if x < acc {
            return g;
        }
    }
    GROUPS[0].0
}

/// How a synthetic bundle carries its embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Embeddings {
    Inline,
    Npy,
    None,
}

/// Writes a bundle of `n` items `<prefix>-<i>` to `dir`: small distinct JPEGs (`image_files` of
/// them, shared round-robin when fewer than `n`), items.jsonl, manifest, and the vectors unless
/// `Embeddings::None`. Returns the vectors (in item order).
#[allow(clippy::too_many_arguments)]
pub fn write_bundle(
    dir: &Path,
    prefix: &str,
    n: usize,
    image_files: usize,
    fingerprint: &EmbedderFingerprint,
    embeddings: Embeddings,
    label: &str,
    seed: u64,
) -> Result<Vec<Vec<f32>>, CatalogError> {
    let img_dir = dir.join("images");
    std::fs::create_dir_all(&img_dir).map_err(|source| CatalogError::Write {
        path: img_dir.clone(),
        source,
    })?;
    let files = image_files.clamp(1, n.max(1));
    let mut rng = Rng::new(seed ^ 0xA5A5);
    for f in 0..files {
        let (r, g, b) = (
            rng.below(256) as u8,
            rng.below(256) as u8,
            rng.below(256) as u8,
        );
        let img = image::RgbImage::from_fn(32, 40, |x, y| {
            image::Rgb([r ^ (x as u8 * 4), g ^ (y as u8 * 3), b])
        });
        let p = img_dir.join(format!("{prefix}-{f}.jpg"));
        img.save(&p).map_err(|e| CatalogError::Write {
            path: p.clone(),
            source: std::io::Error::other(e),
        })?;
    }
    let items: Vec<Item> = (0..n)
        .map(|i| Item {
            id: format!("{prefix}-{i}"),
            name: format!("{prefix} item {i}"),
            group: group_for(i, n).into(),
            category: "Synthetic".into(),
            price: 10.0 + (i % 90) as f64,
            currency: "EUR".into(),
            image: format!("images/{prefix}-{}.jpg", i % files),
            attributes: Default::default(),
        })
        .collect();
    let vectors = clustered_vectors(n, fingerprint.dim, (n / 50).clamp(8, 400), seed);
    let manifest = Manifest {
        format: FORMAT.into(),
        version: label.into(),
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        item_count: n,
        embedder: Some(fingerprint.clone()),
        embeddings: match embeddings {
            Embeddings::Inline => "inline",
            Embeddings::Npy => "npy",
            Embeddings::None => "none",
        }
        .into(),
        embeddings_file: None,
    };
    let with = (embeddings != Embeddings::None).then_some(&vectors[..]);
    bundle::write_bundle(dir, &manifest, &items, with)?;
    Ok(vectors)
}

/// An archive member for [`write_bomb`]: name, declared size, bytes repeated to fill it.
pub type Member<'a> = (&'a str, u64, &'a [u8]);

/// Writes a `.tar.gz` as it streams, never holding it in memory, so a test can make a
/// decompression bomb of any size in a few MiB.
pub fn write_bomb(path: &Path, members: &[Member<'_>]) -> std::io::Result<()> {
    use std::io::Write;
    let f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    for (name, size, fill) in members {
        let mut h = tar::Header::new_gnu();
        h.set_path(name)?;
        h.set_size(*size);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        gz.write_all(h.as_bytes())?;
        let fill: &[u8] = if fill.is_empty() { b"\0" } else { fill };
        // Whole repetitions of `fill` per write, so a short member (a manifest) is exact.
        let unit = fill.len();
        let block: Vec<u8> = fill
            .iter()
            .copied()
            .cycle()
            .take((1 << 20) / unit * unit)
            .collect();
        let mut left = *size;
        while left > 0 {
            let n = left.min(block.len().max(1) as u64) as usize;
            gz.write_all(&block[..n])?;
            left -= n as u64;
        }
        gz.write_all(&vec![0u8; ((512 - size % 512) % 512) as usize])?;
    }
    gz.write_all(&[0u8; 1024])?;
    gz.finish()?.flush()
}
