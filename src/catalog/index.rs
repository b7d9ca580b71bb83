//! One group's similarity index: `hnsw_rs` with the SIMD dot-product distance on unit vectors.
//!
//! `DistDot` is `1 - a·b`, which is the cosine distance only for unit vectors, and its scalar path
//! asserts on anything else, so vectors are normalised before they get here. Parameters are
//! checked before `Hnsw::new`, which exits the process on a bad `max_nb_connection`.

use hnsw_rs::prelude::{DistDot, Hnsw};
use serde::{Deserialize, Serialize};

use super::Hit;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexParams {
    /// Links per node (HNSW's M).
    #[serde(default = "m")]
    pub max_connections: usize,
    #[serde(default = "efc")]
    pub ef_construction: usize,
    /// Candidate list size at query time; higher is slower and closer to exact.
    #[serde(default = "efs")]
    pub ef_search: usize,
}

fn m() -> usize {
    16
}
fn efc() -> usize {
    200
}
fn efs() -> usize {
    64
}

impl Default for IndexParams {
    fn default() -> Self {
        Self {
            max_connections: m(),
            ef_construction: efc(),
            ef_search: efs(),
        }
    }
}

impl IndexParams {
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !(2..=256).contains(&self.max_connections) {
            p.push(format!(
                "catalog.index.max_connections = {} must be between 2 and 256",
                self.max_connections
            ));
        }
        if self.ef_construction < self.max_connections || self.ef_construction > 4096 {
            p.push(format!(
                "catalog.index.ef_construction = {} must be between max_connections and 4096",
                self.ef_construction
            ));
        }
        if !(1..=4096).contains(&self.ef_search) {
            p.push(format!(
                "catalog.index.ef_search = {} must be between 1 and 4096",
                self.ef_search
            ));
        }
        p
    }
}

pub struct GroupIndex {
    /// Item positions in the catalog, by data id in the graph.
    members: Vec<usize>,
    vectors: Vec<Vec<f32>>,
    hnsw: Hnsw<'static, f32, DistDot>,
}

impl GroupIndex {
    pub fn build(members: Vec<usize>, vectors: Vec<Vec<f32>>, params: &IndexParams) -> Self {
        let n = vectors.len().max(1);
        let layers = 16.min((n as f32).ln().trunc() as usize).max(1);
        let hnsw = Hnsw::<f32, DistDot>::new(
            params.max_connections.clamp(2, 256),
            n,
            layers,
            params.ef_construction,
            DistDot {},
        );
        let data: Vec<(&Vec<f32>, usize)> =
            vectors.iter().enumerate().map(|(i, v)| (v, i)).collect();
        hnsw.parallel_insert(&data);
        Self {
            members,
            vectors,
            hnsw,
        }
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn search(&self, query: &[f32], k: usize, ef: usize) -> Vec<Hit> {
        if self.members.is_empty() || k == 0 {
            return Vec::new();
        }
        let mut hits: Vec<Hit> = self
            .hnsw
            .search(query, k, ef.max(k))
            .into_iter()
            .filter_map(|n| {
                self.members.get(n.d_id).map(|&item| Hit {
                    item,
                    similarity: 1.0 - n.distance,
                })
            })
            .collect();
        hits.sort_by(|a, b| {
            b.similarity
                .total_cmp(&a.similarity)
                .then(a.item.cmp(&b.item))
        });
        hits
    }

    pub fn search_exact(&self, query: &[f32], k: usize) -> Vec<Hit> {
        let mut hits: Vec<Hit> = self
            .vectors
            .iter()
            .zip(&self.members)
            .map(|(v, &item)| Hit {
                item,
                similarity: v.iter().zip(query).map(|(a, b)| a * b).sum(),
            })
            .collect();
        hits.sort_by(|a, b| {
            b.similarity
                .total_cmp(&a.similarity)
                .then(a.item.cmp(&b.item))
        });
        hits.truncate(k);
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small xorshift so the test needs no extra crate and prints a seed it can be re-run with.
    pub(crate) fn random_unit_vectors(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut s = seed.max(1);
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f32 / (1u64 << 53) as f32 - 0.5
        };
        (0..n)
            .map(|_| {
                let mut v: Vec<f32> = (0..dim).map(|_| next()).collect();
                super::super::items::normalise(&mut v);
                v
            })
            .collect()
    }

    #[test]
    fn hnsw_recall_at_10_against_exact_search() {
        let seed = 20261126;
        println!("recall test seed = {seed}");
        let (n, dim, q) = (3000, 64, 100);
        let vectors = random_unit_vectors(n + q, dim, seed);
        let (data, queries) = vectors.split_at(n);
        let idx = GroupIndex::build((0..n).collect(), data.to_vec(), &IndexParams::default());
        let mut found = 0;
        for query in queries {
            let exact: Vec<usize> = idx.search_exact(query, 10).iter().map(|h| h.item).collect();
            let approx = idx.search(query, 10, 64);
            found += approx.iter().filter(|h| exact.contains(&h.item)).count();
        }
        let recall = found as f64 / (q * 10) as f64;
        println!("recall@10 = {recall:.4}");
        assert!(
            recall >= 0.95,
            "recall@10 {recall} below 0.95 (seed {seed})"
        );
    }

    #[test]
    fn similarities_are_cosines_and_sorted() {
        let v = vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![0.6, 0.8]];
        let idx = GroupIndex::build(vec![10, 11, 12], v, &IndexParams::default());
        let hits = idx.search(&[1.0, 0.0], 3, 16);
        assert_eq!(
            hits.iter().map(|h| h.item).collect::<Vec<_>>(),
            vec![10, 12, 11]
        );
        assert!((hits[1].similarity - 0.6).abs() < 1e-5);
        assert!(
            IndexParams {
                max_connections: 300,
                ..Default::default()
            }
            .problems()
            .iter()
            .any(|p| p.contains("max_connections = 300"))
        );
    }
}
