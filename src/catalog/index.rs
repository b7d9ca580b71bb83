//! One group's similarity index: `hnsw_rs` with the SIMD dot-product distance on unit vectors.
//!
//! `DistDot` is `1 - a·b`, which is the cosine distance only for unit vectors, and its scalar path
//! asserts on anything else, so vectors are normalised before they get here. Parameters are
//! checked before `Hnsw::new`, which exits the process on a bad `max_nb_connection`.

use std::sync::Arc;

use hnsw_rs::prelude::FilterT;
use serde::{Deserialize, Serialize};

use super::Hit;
use super::persist::Graph;

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
/// 100 rather than the usual 200: on 100,000 vectors of 256 it halves the build (the import
/// target is 60 s on 2 cores) at no measurable recall cost (README, "Catalog bundles").
fn efc() -> usize {
    100
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

/// Marks a graph point whose item was removed or replaced since the graph was built.
pub const DEAD: u32 = u32::MAX;

/// One group's searchable items: an HNSW graph (possibly shared with older versions) whose points
/// map to item positions, plus a small overlay of items added or changed since the graph was
/// built, searched exactly. `hnsw_rs` cannot delete, so removed items stay in the graph as
/// [`DEAD`] points and are filtered out until the group is rebuilt.
#[derive(Debug, Clone, Default)]
pub struct GroupIndex {
    graph: Option<Arc<Graph>>,
    /// Graph data id → item position in the catalog, or [`DEAD`].
    members: Vec<u32>,
    dead: usize,
    /// Items outside the graph: (item position, unit vector).
    overlay: Vec<(usize, Vec<f32>)>,
}

impl GroupIndex {
    pub fn build(members: Vec<usize>, vectors: Vec<Vec<f32>>, params: &IndexParams) -> Self {
        Self::build_with_progress(members, &vectors, params, &|_| {})
    }

    pub fn build_with_progress(
        members: Vec<usize>,
        vectors: &[Vec<f32>],
        params: &IndexParams,
        progress: &dyn Fn(usize),
    ) -> Self {
        let graph =
            (!vectors.is_empty()).then(|| Arc::new(Graph::build(vectors, params, progress)));
        Self {
            graph,
            members: members.iter().map(|&m| m as u32).collect(),
            dead: 0,
            overlay: Vec::new(),
        }
    }

    /// Puts together a group from its persisted parts; checks every position is below `items`.
    pub fn from_parts(
        graph: Option<Arc<Graph>>,
        members: Vec<u32>,
        overlay: Vec<(usize, Vec<f32>)>,
        items: usize,
    ) -> Result<Self, String> {
        let points = graph.as_ref().map_or(0, |g| g.points());
        if members.len() != points {
            return Err(format!(
                "{} members for a graph of {points} points",
                members.len()
            ));
        }
        let bad_member = members
            .iter()
            .find(|&&m| m != DEAD && m as usize >= items)
            .map(|&m| m as usize);
        let bad_overlay = overlay.iter().map(|(i, _)| *i).find(|&i| i >= items);
        if let Some(bad) = bad_member.or(bad_overlay) {
            return Err(format!(
                "item position {bad} is out of range ({items} items)"
            ));
        }
        let dead = members.iter().filter(|&&m| m == DEAD).count();
        Ok(Self {
            graph,
            members,
            dead,
            overlay,
        })
    }

    pub fn graph(&self) -> Option<&Arc<Graph>> {
        self.graph.as_ref()
    }

    pub fn members(&self) -> &[u32] {
        &self.members
    }

    pub fn overlay(&self) -> &[(usize, Vec<f32>)] {
        &self.overlay
    }

    /// Live items in this group.
    pub fn len(&self) -> usize {
        self.members.len() - self.dead + self.overlay.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when enough of the group lives outside the graph that a rebuild pays off: dead points
    /// slow every search through the filter, overlay items are scanned one by one.
    pub fn wants_rebuild(&self) -> bool {
        let stale = self.dead + self.overlay.len();
        stale > 0 && stale > 64.max(self.members.len() / 20)
    }

    /// The same group with item positions renumbered by `map` (None: the item is gone) and
    /// `added` appended to the overlay. The graph is shared, not copied.
    pub fn remap(
        &self,
        map: &dyn Fn(usize) -> Option<usize>,
        added: Vec<(usize, Vec<f32>)>,
    ) -> Self {
        let members: Vec<u32> = self
            .members
            .iter()
            .map(|&m| {
                if m == DEAD {
                    DEAD
                } else {
                    map(m as usize).map_or(DEAD, |n| n as u32)
                }
            })
            .collect();
        let mut overlay: Vec<(usize, Vec<f32>)> = self
            .overlay
            .iter()
            .filter_map(|(i, v)| map(*i).map(|n| (n, v.clone())))
            .collect();
        overlay.extend(added);
        Self {
            graph: self.graph.clone(),
            dead: members.iter().filter(|&&m| m == DEAD).count(),
            members,
            overlay,
        }
    }

    /// Every live item with its vector (copies; for rebuilds and exact search).
    pub fn live_vectors(&self) -> Vec<(usize, Vec<f32>)> {
        let mut out: Vec<(usize, Vec<f32>)> = match &self.graph {
            Some(g) => g
                .vectors()
                .into_iter()
                .zip(&self.members)
                .filter(|(_, m)| **m != DEAD)
                .map(|(v, &m)| (m as usize, v))
                .collect(),
            None => Vec::new(),
        };
        out.extend(self.overlay.iter().cloned());
        out
    }

    /// A fresh graph over the live items, overlay and dead points folded in.
    pub fn rebuild(&self, params: &IndexParams, progress: &dyn Fn(usize)) -> Self {
        let (members, vectors): (Vec<usize>, Vec<Vec<f32>>) =
            self.live_vectors().into_iter().unzip();
        Self::build_with_progress(members, &vectors, params, progress)
    }

    pub fn search(&self, query: &[f32], k: usize, ef: usize) -> Vec<Hit> {
        if k == 0 {
            return Vec::new();
        }
        let mut hits: Vec<Hit> = Vec::with_capacity(k + self.overlay.len());
        if let Some(g) = &self.graph {
            let members = &self.members;
            let alive = |id: &usize| members.get(*id).is_some_and(|m| *m != DEAD);
            let filter: Option<&dyn FilterT> = if self.dead > 0 { Some(&alive) } else { None };
            hits.extend(g.search(query, k, ef, filter).into_iter().filter_map(|n| {
                let m = *self.members.get(n.d_id)?;
                (m != DEAD).then_some(Hit {
                    item: m as usize,
                    similarity: 1.0 - n.distance,
                })
            }));
        }
        hits.extend(self.overlay.iter().map(|(item, v)| Hit {
            item: *item,
            similarity: dot(v, query),
        }));
        sort_hits(&mut hits);
        hits.truncate(k);
        hits
    }

    pub fn search_exact(&self, query: &[f32], k: usize) -> Vec<Hit> {
        exact_top_k(&self.live_vectors(), query, k)
    }
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn sort_hits(hits: &mut [Hit]) {
    hits.sort_by(|a, b| {
        b.similarity
            .total_cmp(&a.similarity)
            .then(a.item.cmp(&b.item))
    });
}

/// Brute force over `(item, vector)` pairs: the reference that recall is measured against.
pub fn exact_top_k(vectors: &[(usize, Vec<f32>)], query: &[f32], k: usize) -> Vec<Hit> {
    let mut hits: Vec<Hit> = vectors
        .iter()
        .map(|(item, v)| Hit {
            item: *item,
            similarity: dot(v, query),
        })
        .collect();
    sort_hits(&mut hits);
    hits.truncate(k);
    hits
}

#[cfg(test)]
pub(crate) mod tests {
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
