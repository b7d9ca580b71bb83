//! `vitrine eval retrieval`: recall@k of the embedder and the catalog index, from ground-truth
//! pairs of a query photo (a shopper's or consumer's crop) and the catalog item it shows.
//!
//! Pairs and a loaded [`Catalog`] enter, with a function that embeds a query (the real embedder
//! in the CLI); a [`RetrievalReport`] leaves. A query is a hit at k when one of the k most similar
//! items *is* its item: the item's `id` equals the pair's item, or its `attributes.item_id` does —
//! so a catalog may hold several photos of one item (DeepFashion's shop images) under distinct ids.
//! Each query searches its pair's `group`, or every group merged by similarity when it has none.
//! Recall is reported twice: through the HNSW index as the daemon searches, and by exact search,
//! so an embedder problem and an index problem do not hide behind each other.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use super::EvalError;
use super::formats::RetrievalPair;
use crate::catalog::{Catalog, Hit};

#[derive(Debug, Clone, PartialEq)]
pub struct RetrievalOptions {
    /// The k of recall@k, ascending.
    pub ks: Vec<usize>,
    /// HNSW candidate list size (the config's `catalog.index.ef_search`).
    pub ef: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetrievalReport {
    pub queries: usize,
    /// Queries scored (their item is in the catalog).
    pub evaluated: usize,
    /// Items named by pairs that no catalog item carries; those queries are left out.
    pub unknown_items: Vec<String>,
    /// recall@k through the index.
    pub recall: BTreeMap<usize, f64>,
    /// recall@k by exact search.
    pub recall_exact: BTreeMap<usize, f64>,
}

/// The identities a catalog item answers to.
fn item_keys(item: &crate::catalog::Item) -> Vec<String> {
    let mut keys = vec![item.id.clone()];
    match item.attributes.get("item_id") {
        Some(serde_json::Value::String(s)) => keys.push(s.clone()),
        Some(v @ serde_json::Value::Number(_)) => keys.push(v.to_string()),
        _ => {}
    }
    keys
}

/// The `k` most similar items across `groups`, merged by similarity.
fn search(
    catalog: &Catalog,
    groups: &[String],
    query: &[f32],
    k: usize,
    ef: Option<usize>,
) -> Vec<Hit> {
    let mut hits: Vec<Hit> = groups
        .iter()
        .flat_map(|g| match ef {
            Some(ef) => catalog.search(g, query, k, ef),
            None => catalog.search_exact(g, query, k),
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

/// Scores every pair. `embed` turns a pair's query into a unit vector of the catalog's dimension.
pub fn evaluate(
    pairs: &[RetrievalPair],
    catalog: &Catalog,
    mut embed: impl FnMut(&RetrievalPair) -> Result<Vec<f32>, EvalError>,
    opts: &RetrievalOptions,
) -> Result<RetrievalReport, EvalError> {
    let kmax = opts.ks.iter().copied().max().unwrap_or(0);
    if kmax == 0 {
        return Err(EvalError::Usage("--k needs at least one k ≥ 1".into()));
    }
    let all_groups: Vec<String> = catalog.groups().map(|(g, _)| g.to_string()).collect();
    let bad_groups: HashSet<&str> = pairs
        .iter()
        .filter_map(|p| p.group.as_deref())
        .filter(|g| !catalog.has_group(g))
        .collect();
    if !bad_groups.is_empty() {
        let mut b: Vec<&str> = bad_groups.into_iter().collect();
        b.sort();
        return Err(EvalError::Usage(format!(
            "pairs name catalog groups {b:?} that the catalog lacks (it has: {})",
            all_groups.join(", ")
        )));
    }
    let mut owners: HashMap<String, HashSet<usize>> = HashMap::new();
    for (i, item) in catalog.items.iter().enumerate() {
        for k in item_keys(item) {
            owners.entry(k).or_default().insert(i);
        }
    }
    let mut unknown: Vec<String> = Vec::new();
    let mut hits: BTreeMap<usize, usize> = opts.ks.iter().map(|k| (*k, 0)).collect();
    let mut hits_exact = hits.clone();
    let mut evaluated = 0usize;
    for pair in pairs {
        let Some(answers) = owners.get(&pair.item) else {
            unknown.push(pair.item.clone());
            continue;
        };
        let v = embed(pair)?;
        if v.len() != catalog.dim {
            return Err(EvalError::Usage(format!(
                "the embedder gives {} values but the catalog holds {}-d vectors; rebuild the catalog with this embedder",
                v.len(),
                catalog.dim
            )));
        }
        let groups = match &pair.group {
            Some(g) => std::slice::from_ref(g),
            None => all_groups.as_slice(),
        };
        evaluated += 1;
        for (ef, tally) in [(Some(opts.ef), &mut hits), (None, &mut hits_exact)] {
            let found = search(catalog, groups, &v, kmax, ef);
            let rank = found.iter().position(|h| answers.contains(&h.item));
            for (k, n) in tally.iter_mut() {
                if rank.is_some_and(|r| r < *k) {
                    *n += 1;
                }
            }
        }
    }
    let rate = |t: BTreeMap<usize, usize>| {
        t.into_iter()
            .map(|(k, n)| {
                (
                    k,
                    if evaluated == 0 {
                        f64::NAN
                    } else {
                        n as f64 / evaluated as f64
                    },
                )
            })
            .collect()
    };
    unknown.sort();
    unknown.dedup();
    Ok(RetrievalReport {
        queries: pairs.len(),
        evaluated,
        unknown_items: unknown,
        recall: rate(hits),
        recall_exact: rate(hits_exact),
    })
}

impl std::fmt::Display for RetrievalReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} queries, {} scored{}",
            self.queries,
            self.evaluated,
            if self.unknown_items.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} item(s) absent from the catalog, their queries left out (first: {})",
                    self.unknown_items.len(),
                    self.unknown_items
                        .iter()
                        .take(5)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        )?;
        writeln!(f, "{:>6}  {:>9}  {:>9}", "k", "recall", "exact")?;
        for (k, r) in &self.recall {
            let e = self.recall_exact.get(k).copied().unwrap_or(f64::NAN);
            writeln!(f, "{k:>6}  {r:>9.4}  {e:>9.4}")?;
        }
        Ok(())
    }
}
