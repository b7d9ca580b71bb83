//! Label-map tools: write a TF Object Detection API label map from DeepFashion's category list,
//! and check a map against a model's class count and against a dataset's categories.
//!
//! The source project trained with labels shifted by one (its map numbered from 0, so every
//! Blouse came out as a Blazer). [`LabelMap`] already refuses such a map when a detector starts;
//! these checks run earlier — before training, or on a map someone hands over — and say *what*
//! is wrong: which ids are off, by how much, and which names the dataset has that the map lacks.
//! A map is read leniently here ([`read_entries`]) so that a wrong one can be explained rather
//! than merely refused.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Serialize;

use super::EvalError;
use super::formats::DfCategory;
use crate::vision::labels::LabelMap;

/// The `(id, name)` entries of a label map file (pbtxt or plain text) in file order, without the
/// strict checks, so id 0 and duplicates can be reported instead of stopping the read.
pub fn read_entries(path: &Path) -> Result<Vec<(u32, String)>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|reason| EvalError::Read {
        path: path.into(),
        reason,
    })?;
    // The same rule as LabelMap::load, so both read a file the same way.
    let is_pbtxt = path.extension().is_some_and(|e| e == "pbtxt") || text.contains("item");
    if is_pbtxt {
        Ok(LabelMap::pbtxt_entries(&text, path)?)
    } else {
        Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .enumerate()
            .map(|(i, n)| (i as u32 + 1, n.to_string()))
            .collect())
    }
}

/// The pbtxt text of a map, ids as given (the TF OD API form `create_tf_record` scripts read).
pub fn to_pbtxt(entries: &[(u32, String)]) -> String {
    let mut s = String::new();
    for (id, name) in entries {
        // pbtxt readers here (and TF's for plain names) take either quote and no escapes: use
        // the quote the name does not contain.
        let quoted = if name.contains('\'') {
            format!("\"{}\"", name.replace('"', "'"))
        } else {
            format!("'{name}'")
        };
        s.push_str(&format!("item {{\n  id: {id}\n  name: {quoted}\n}}\n"));
    }
    s
}

/// A label map for DeepFashion's categories: id k is row k of `list_category_cloth.txt`, which is
/// what `list_category_img.txt`'s `category_label` means, so records need no renumbering.
pub fn from_deepfashion(categories: &[DfCategory]) -> Vec<(u32, String)> {
    categories.iter().map(|c| (c.id, c.name.clone())).collect()
}

/// The outcome of a check: problems make `vitrine labels check` fail, notes do not.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LabelCheck {
    pub problems: Vec<String>,
    pub notes: Vec<String>,
    /// Ids the map gives a different name than the dataset, with both names.
    pub offending_ids: Vec<OffendingId>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OffendingId {
    /// The category's id in the dataset.
    pub dataset_id: u32,
    pub dataset_name: String,
    /// The id the map gives that name, if any.
    pub map_id: Option<u32>,
    /// The name the map gives the dataset's id, if any.
    pub map_name_at_dataset_id: Option<String>,
}

impl LabelCheck {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    fn merge(&mut self, other: LabelCheck) {
        self.problems.extend(other.problems);
        self.notes.extend(other.notes);
        self.offending_ids.extend(other.offending_ids);
    }
}

/// The map's own shape: ids from 1, unique ids and names, no gaps.
pub fn check_structure(entries: &[(u32, String)]) -> LabelCheck {
    let mut c = LabelCheck::default();
    if entries.is_empty() {
        c.problems.push("the label map is empty".into());
        return c;
    }
    if let Some((_, name)) = entries.iter().find(|(id, _)| *id == 0) {
        c.problems.push(format!(
            "id 0 ('{name}') is background in the TF Object Detection API; ids start at 1. A map numbered from 0 shifts every label by one"
        ));
    }
    let mut by_id: BTreeMap<u32, &str> = BTreeMap::new();
    let mut by_name: HashMap<String, u32> = HashMap::new();
    for (id, name) in entries {
        if let Some(first) = by_id.insert(*id, name) {
            c.problems
                .push(format!("id {id} is used twice ('{first}' and '{name}')"));
        }
        if let Some(other) = by_name.insert(name.to_lowercase(), *id) {
            c.problems
                .push(format!("'{name}' has two ids ({other} and {id})"));
        }
    }
    let lo = by_id.keys().next().copied().unwrap_or(0).max(1);
    let hi = by_id.keys().next_back().copied().unwrap_or(0);
    let gaps: Vec<u32> = (lo..=hi).filter(|i| !by_id.contains_key(i)).collect();
    if !gaps.is_empty() {
        c.problems.push(format!(
            "ids {gaps:?} are missing between {lo} and {hi}; a model's class columns are contiguous"
        ));
    }
    c
}

/// The map against a model with `columns` score columns (with or without a background column):
/// [`LabelMap::check_columns`], the guard the detector itself runs at start-up.
pub fn check_against_model(
    entries: &[(u32, String)],
    path: &Path,
    columns: usize,
    background_column: bool,
) -> LabelCheck {
    let mut c = LabelCheck::default();
    let classes = if background_column {
        columns.saturating_sub(1)
    } else {
        columns
    };
    if entries.iter().any(|(id, _)| *id == 0) {
        let n = entries.len();
        c.problems.push(if n == classes {
            format!(
                "the map numbers its {n} classes from 0; the model scores {classes} classes{}, so numbered from 1 it would agree — as it is, every label is off by one",
                if background_column { " after its background column" } else { "" }
            )
        } else {
            format!("the map numbers its {n} classes from 0 and the model scores {classes}")
        });
        return c;
    }
    // The same guard the detector runs at start-up, on the strict form of the map (written out
    // and read back, since LabelMap is only built by parsing).
    match LabelMap::parse_pbtxt(&to_pbtxt(entries), path) {
        Ok(map) => match map.check_columns(columns, background_column) {
            Err(e) => c.problems.push(e),
            Ok(()) => c.notes.push(format!(
                "the map's {} classes agree with the model's {classes}",
                map.len()
            )),
        },
        Err(e) => c.problems.push(e.to_string()),
    }
    c
}

/// The map against a dataset whose categories carry ids (DeepFashion's `category_label`,
/// DeepFashion2's `category_id`): every dataset id must name the same category in the map. When
/// all disagreeing names sit at one constant offset, the report says so — that is the off-by-one.
pub fn check_against_numbered(entries: &[(u32, String)], dataset: &[(u32, String)]) -> LabelCheck {
    let mut c = LabelCheck::default();
    let by_id: HashMap<u32, &str> = entries.iter().map(|(i, n)| (*i, n.as_str())).collect();
    let by_name: HashMap<String, u32> = entries
        .iter()
        .map(|(i, n)| (n.to_lowercase(), *i))
        .collect();
    let mut offsets: Vec<i64> = Vec::new();
    for (id, name) in dataset {
        let at = by_id.get(id).copied();
        if at.is_some_and(|m| m.eq_ignore_ascii_case(name)) {
            continue;
        }
        let map_id = by_name.get(&name.to_lowercase()).copied();
        if let Some(m) = map_id {
            offsets.push(m as i64 - *id as i64);
        }
        c.offending_ids.push(OffendingId {
            dataset_id: *id,
            dataset_name: name.clone(),
            map_id,
            map_name_at_dataset_id: at.map(str::to_string),
        });
    }
    if c.offending_ids.is_empty() {
        c.notes.push(format!(
            "all {} dataset categories have the same id in the map",
            dataset.len()
        ));
        return c;
    }
    offsets.sort_unstable();
    offsets.dedup();
    let lines: Vec<String> = c
        .offending_ids
        .iter()
        .take(10)
        .map(|o| {
            format!(
                "'{}' is id {} in the dataset but {} in the map{}",
                o.dataset_name,
                o.dataset_id,
                o.map_id
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| "absent".into()),
                o.map_name_at_dataset_id
                    .as_deref()
                    .map(|n| format!(" (map id {} is '{n}')", o.dataset_id))
                    .unwrap_or_default()
            )
        })
        .collect();
    let n = c.offending_ids.len();
    let head = match offsets.as_slice() {
        [d] if c.offending_ids.iter().all(|o| o.map_id.is_some()) => format!(
            "the map is shifted by {d:+} against the dataset: all {n} disagreeing categories sit {} place{} {} (ids {})",
            d.abs(),
            if d.abs() == 1 { "" } else { "s" },
            if *d < 0 { "lower" } else { "higher" },
            c.offending_ids
                .iter()
                .map(|o| o.dataset_id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => format!("{n} dataset categories have another id (or none) in the map"),
    };
    c.problems.push(format!(
        "{head}:\n    {}{}",
        lines.join("\n    "),
        if n > 10 {
            format!("\n    … and {} more", n - 10)
        } else {
            String::new()
        }
    ));
    c
}

/// The map against a dataset that names its categories (JSONL): every name must be in the map.
pub fn check_against_names(
    entries: &[(u32, String)],
    counts: &BTreeMap<String, usize>,
) -> LabelCheck {
    let mut c = LabelCheck::default();
    let known: HashMap<String, u32> = entries
        .iter()
        .map(|(i, n)| (n.to_lowercase(), *i))
        .collect();
    let missing: Vec<String> = counts
        .iter()
        .filter(|(n, _)| !known.contains_key(&n.to_lowercase()))
        .map(|(n, k)| format!("'{n}' ({k} boxes)"))
        .collect();
    if !missing.is_empty() {
        c.problems.push(format!(
            "the dataset's categories {} are not in the map: a model trained with it never learns them",
            missing.join(", ")
        ));
    }
    let used: std::collections::HashSet<String> = counts.keys().map(|n| n.to_lowercase()).collect();
    let unused: Vec<String> = entries
        .iter()
        .filter(|(_, n)| !used.contains(&n.to_lowercase()))
        .map(|(i, n)| format!("{i} '{n}'"))
        .collect();
    if !unused.is_empty() {
        c.notes.push(format!(
            "map entries with no box in the dataset: {}",
            unused.join(", ")
        ));
    }
    c
}

/// Runs the structural check and then the given ones, collected into one report.
pub fn combine(parts: impl IntoIterator<Item = LabelCheck>) -> LabelCheck {
    let mut all = LabelCheck::default();
    for p in parts {
        all.merge(p);
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str], from: u32) -> Vec<(u32, String)> {
        v.iter()
            .enumerate()
            .map(|(i, n)| (i as u32 + from, n.to_string()))
            .collect()
    }

    #[test]
    fn pbtxt_round_trips_through_the_label_map_parser() {
        let e = names(&["Anorak", "Blazer", "Tee's"], 1);
        let map = LabelMap::parse_pbtxt(&to_pbtxt(&e), Path::new("m.pbtxt")).expect("valid");
        assert_eq!(map.name(3), Some("Tee's"));
        assert_eq!(map.len(), 3);
    }

    #[test]
    fn a_zero_based_map_is_reported_as_a_shift_with_its_ids() {
        let dataset = names(&["Anorak", "Blazer", "Blouse"], 1);
        let map = names(&["Anorak", "Blazer", "Blouse"], 0);
        let c = combine([
            check_structure(&map),
            check_against_numbered(&map, &dataset),
        ]);
        let all = c.problems.join("\n");
        assert!(all.contains("id 0 ('Anorak') is background"), "{all}");
        assert!(all.contains("shifted by -1"), "{all}");
        assert!(all.contains("(ids 1, 2, 3)"), "{all}");
        assert!(
            all.contains("'Blouse' is id 3 in the dataset but 2 in the map"),
            "{all}"
        );
        assert_eq!(c.offending_ids.len(), 3);
    }
}
