//! A taxonomy: which dataset categories are merged into one (Anorak and Bomber into Jacket,
//! Romper into Dress), and optionally which catalog group each category belongs to.
//!
//! One file, applied the same way to the three places a category name lives — ground-truth
//! boxes, a detector's label map, and catalog items — so a model trained on merged classes, its
//! evaluation and the store's catalog can never disagree about what "Jacket" means. Read once
//! into a [`Taxonomy`], checked as a whole (every problem at once):
//!
//! ```toml
//! [merge]
//! Jacket = ["Anorak", "Bomber"]
//! Dress = ["Romper"]
//!
//! [groups]          # optional: catalog group of a (merged) category
//! Jacket = "top"
//! ```
//!
//! Source names match without regard to case (DeepFashion writes "Anorak", hand-made files often
//! "anorak"); the merged name is written as the file spells it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::EvalError;
use super::formats::Dataset;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTaxonomy {
    #[serde(default)]
    merge: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    groups: BTreeMap<String, String>,
}

/// `(old id, new id)` for every entry of a label map a taxonomy merged.
pub type IdRemap = Vec<(u32, u32)>;

/// A checked taxonomy.
#[derive(Debug, Clone, PartialEq)]
pub struct Taxonomy {
    /// Lower-cased source name → merged name.
    into: BTreeMap<String, String>,
    /// Lower-cased source name → as the file spells it, for messages.
    spelled: BTreeMap<String, String>,
    /// Lower-cased category → catalog group.
    groups: BTreeMap<String, String>,
    pub source: PathBuf,
}

impl Taxonomy {
    pub fn load(path: &Path) -> Result<Self, EvalError> {
        let text = std::fs::read_to_string(path).map_err(|reason| EvalError::Read {
            path: path.into(),
            reason,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, EvalError> {
        let raw: RawTaxonomy = toml::from_str(text).map_err(|e| EvalError::Invalid {
            path: path.into(),
            problems: vec![e.message().to_string()],
        })?;
        let mut problems = Vec::new();
        let mut into: BTreeMap<String, String> = BTreeMap::new();
        let mut spelled: BTreeMap<String, String> = BTreeMap::new();
        let targets: BTreeSet<String> = raw.merge.keys().map(|t| t.to_lowercase()).collect();
        for (target, sources) in &raw.merge {
            if sources.is_empty() {
                problems.push(format!(
                    "[merge] {target} lists no categories to merge into it"
                ));
            }
            for s in sources {
                let key = s.to_lowercase();
                spelled.insert(key.clone(), s.clone());
                if key != target.to_lowercase() && targets.contains(&key) {
                    problems.push(format!(
                        "'{s}' is merged into '{target}' but is itself a merged category; merge its sources into '{target}' directly"
                    ));
                }
                if let Some(prev) = into.insert(key, target.clone())
                    && prev != *target
                {
                    problems.push(format!(
                        "'{s}' is merged into both '{prev}' and '{target}'; a category can go to one place only"
                    ));
                }
            }
        }
        let mut groups = BTreeMap::new();
        for (cat, group) in &raw.groups {
            if group.trim().is_empty() {
                problems.push(format!("[groups] {cat} has an empty group"));
            }
            if into
                .get(&cat.to_lowercase())
                .is_some_and(|t| !t.eq_ignore_ascii_case(cat))
            {
                problems.push(format!(
                    "[groups] names '{cat}', which is merged away; give the group of '{}' instead",
                    into[&cat.to_lowercase()]
                ));
            }
            groups.insert(cat.to_lowercase(), group.clone());
        }
        if !problems.is_empty() {
            return Err(EvalError::Invalid {
                path: path.into(),
                problems,
            });
        }
        Ok(Self {
            into,
            spelled,
            groups,
            source: path.into(),
        })
    }

    /// The name a category has after merging (itself when the taxonomy does not list it).
    pub fn map<'a>(&'a self, name: &'a str) -> &'a str {
        self.into
            .get(&name.to_lowercase())
            .map(String::as_str)
            .unwrap_or(name)
    }

    /// The catalog group of a category (after merging), when the taxonomy gives one.
    pub fn group(&self, name: &str) -> Option<&str> {
        self.groups
            .get(&self.map(name).to_lowercase())
            .map(String::as_str)
    }

    /// Source names listed in the taxonomy that `names` never uses: usually a typo.
    pub fn unused_sources<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let used: BTreeSet<String> = names.into_iter().map(str::to_lowercase).collect();
        self.into
            .iter()
            .filter(|(s, t)| !used.contains(*s) && s.as_str() != t.to_lowercase())
            .map(|(s, _)| self.spelled.get(s).unwrap_or(s).clone())
            .collect()
    }

    /// Relabels every box; returns how many changed.
    pub fn apply_dataset(&self, ds: &mut Dataset) -> usize {
        let mut changed = 0;
        for b in ds.images.iter_mut().flat_map(|i| i.boxes.iter_mut()) {
            let new = self.map(&b.label);
            if new != b.label {
                b.label = new.to_string();
                changed += 1;
            }
        }
        changed
    }

    /// Merges a label map's entries: the merged names, numbered from 1 in the order of their
    /// lowest old id, and for every old id the new id it becomes (what a training script must use
    /// to relabel its records).
    pub fn apply_labels(&self, entries: &[(u32, String)]) -> (Vec<(u32, String)>, IdRemap) {
        let mut sorted: Vec<&(u32, String)> = entries.iter().collect();
        sorted.sort_by_key(|(id, _)| *id);
        let mut new: Vec<(u32, String)> = Vec::new();
        let mut remap = Vec::new();
        for (old, name) in sorted {
            let merged = self.map(name);
            let id = match new.iter().find(|(_, n)| n.eq_ignore_ascii_case(merged)) {
                Some((id, _)) => *id,
                None => {
                    let id = new.len() as u32 + 1;
                    new.push((id, merged.to_string()));
                    id
                }
            };
            remap.push((*old, id));
        }
        (new, remap)
    }

    /// Rewrites catalog items (`items.jsonl` lines as JSON objects, so fields this module does not
    /// know survive untouched): `category` merged, and `group` set from `[groups]` when the
    /// taxonomy names one. Returns one line per item changed.
    pub fn apply_catalog(&self, items: &mut [serde_json::Value]) -> Vec<String> {
        let mut changes = Vec::new();
        for item in items.iter_mut() {
            let Some(obj) = item.as_object_mut() else {
                continue;
            };
            let id = obj
                .get("id")
                .and_then(|v| v.as_str())
                .unwrap_or("?")
                .to_string();
            let Some(cat) = obj
                .get("category")
                .and_then(|v| v.as_str())
                .map(str::to_string)
            else {
                continue;
            };
            let merged = self.map(&cat).to_string();
            if merged != cat {
                changes.push(format!("item '{id}': category '{cat}' → '{merged}'"));
                obj.insert("category".into(), merged.clone().into());
            }
            if let Some(group) = self.group(&merged) {
                let old = obj.get("group").and_then(|v| v.as_str()).unwrap_or("");
                if old != group {
                    changes.push(format!("item '{id}': group '{old}' → '{group}'"));
                    obj.insert("group".into(), group.into());
                }
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "[merge]\nJacket = [\"Anorak\", \"Bomber\"]\nDress = [\"Romper\"]\n[groups]\nJacket = \"top\"\n";

    #[test]
    fn contradictions_are_all_reported() {
        let bad = "[merge]\nJacket = [\"Anorak\"]\nCoat = [\"anorak\", \"Jacket\"]\nEmpty = []\n[groups]\nAnorak = \"top\"\n";
        let Err(EvalError::Invalid { problems, .. }) = Taxonomy::parse(bad, Path::new("t.toml"))
        else {
            panic!("must be refused");
        };
        let all = problems.join("\n");
        assert!(
            all.contains("merged into both 'Coat' and 'Jacket'"),
            "{all}"
        );
        assert!(
            all.contains("'Jacket' is merged into 'Coat' but is itself a merged"),
            "{all}"
        );
        assert!(all.contains("Empty lists no categories"), "{all}");
        assert!(
            all.contains("[groups] names 'Anorak', which is merged away"),
            "{all}"
        );
    }

    #[test]
    fn label_maps_are_renumbered_from_one_with_a_remap() {
        let t = Taxonomy::parse(T, Path::new("t.toml")).expect("valid");
        let entries: Vec<(u32, String)> = ["Anorak", "Blazer", "Bomber", "Romper", "Dress"]
            .iter()
            .enumerate()
            .map(|(i, n)| (i as u32 + 1, n.to_string()))
            .collect();
        let (new, remap) = t.apply_labels(&entries);
        assert_eq!(
            new,
            vec![
                (1, "Jacket".to_string()),
                (2, "Blazer".to_string()),
                (3, "Dress".to_string())
            ]
        );
        assert_eq!(remap, vec![(1, 1), (2, 2), (3, 1), (4, 3), (5, 3)]);
        assert_eq!(t.group("bomber"), Some("top"));
        assert_eq!(
            t.unused_sources(["Anorak", "Romper"]),
            vec!["Bomber".to_string()]
        );
    }
}
