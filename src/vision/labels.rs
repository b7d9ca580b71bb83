//! Label maps: the TF Object Detection API `.pbtxt` form and plain text, and the guard that makes
//! the source project's "all blouses are bombers" bug (labels shifted by one) impossible to ship.
//!
//! Ids are the label map's own 1-based ids everywhere in Vitrine; id 0 is background and never
//! names anything. A detector refuses to start when its map does not agree with its class count.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("cannot read label map {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("label map {path}, line {line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error(
        "label map {path}: id {id} is used twice ('{first}' and '{second}'); ids must be unique"
    )]
    DuplicateId {
        path: PathBuf,
        id: u32,
        first: String,
        second: String,
    },
    #[error(
        "label map {path}: id 0 is reserved for background (item '{name}'); TF OD API label maps start at 1"
    )]
    ZeroId { path: PathBuf, name: String },
    #[error("label map {path} is empty")]
    Empty { path: PathBuf },
}

/// A label map, id → name.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelMap {
    names: BTreeMap<u32, String>,
    source: PathBuf,
}

impl LabelMap {
    pub fn load(path: &Path) -> Result<Self, LabelError> {
        let text = std::fs::read_to_string(path).map_err(|source| LabelError::Read {
            path: path.into(),
            source,
        })?;
        let is_pbtxt = path.extension().is_some_and(|e| e == "pbtxt") || text.contains("item");
        if is_pbtxt {
            Self::parse_pbtxt(&text, path)
        } else {
            Self::parse_plain(&text, path)
        }
    }

    /// One name a line; line k (1-based, blank lines and `#` comments skipped) is id k.
    pub fn parse_plain(text: &str, path: &Path) -> Result<Self, LabelError> {
        let names: Vec<(u32, String)> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .enumerate()
            .map(|(i, name)| (i as u32 + 1, name.to_string()))
            .collect();
        Self::from_pairs(names, path)
    }

    /// The `item { id: 1 name: 'Anorak' display_name: "Anorak" }` form; `display_name` wins over
    /// `name` when both are present since TF exports often put machine ids in `name`.
    pub fn parse_pbtxt(text: &str, path: &Path) -> Result<Self, LabelError> {
        Self::from_pairs(Self::pbtxt_entries(text, path)?, path)
    }

    /// The `(id, name)` items of a pbtxt map in file order, before the checks a map makes (id 0,
    /// duplicates): `vitrine labels check` must read a wrong map to say what is wrong with it.
    pub fn pbtxt_entries(text: &str, path: &Path) -> Result<Vec<(u32, String)>, LabelError> {
        let err = |line: usize, message: String| LabelError::Parse {
            path: path.into(),
            line,
            message,
        };
        let tokens = tokenize(text).map_err(|(line, m)| err(line, m))?;
        let mut pairs = Vec::new();
        let mut i = 0;
        while i < tokens.len() {
            let (line, tok) = &tokens[i];
            match tok.as_str() {
                "item" => {
                    if tokens.get(i + 1).map(|t| t.1.as_str()) != Some("{") {
                        return Err(err(*line, "expected '{' after 'item'".into()));
                    }
                    i += 2;
                    let (mut id, mut name, mut display) = (None, None, None);
                    loop {
                        let Some((l, key)) = tokens.get(i) else {
                            return Err(err(*line, "item is not closed with '}'".into()));
                        };
                        if key == "}" {
                            i += 1;
                            break;
                        }
                        let key = key.trim_end_matches(':').to_string();
                        let mut j = i + 1;
                        if tokens.get(j).map(|t| t.1.as_str()) == Some(":") {
                            j += 1;
                        }
                        let Some((_, value)) = tokens.get(j) else {
                            return Err(err(*l, format!("'{key}' has no value")));
                        };
                        match key.as_str() {
                            "id" => {
                                id = Some(value.parse::<u32>().map_err(|_| {
                                    err(*l, format!("id '{value}' is not a whole number"))
                                })?)
                            }
                            "name" => name = Some(unquote(value)),
                            "display_name" => display = Some(unquote(value)),
                            _ => {} // other fields (keypoints, frequency…) are not ours to judge
                        }
                        i = j + 1;
                    }
                    let id = id.ok_or_else(|| err(*line, "item has no id".into()))?;
                    let name = display
                        .or(name)
                        .ok_or_else(|| err(*line, format!("item {id} has no name")))?;
                    pairs.push((id, name));
                }
                other => return Err(err(*line, format!("expected 'item', found '{other}'"))),
            }
        }
        Ok(pairs)
    }

    fn from_pairs(pairs: Vec<(u32, String)>, path: &Path) -> Result<Self, LabelError> {
        if pairs.is_empty() {
            return Err(LabelError::Empty { path: path.into() });
        }
        let mut names = BTreeMap::new();
        for (id, name) in pairs {
            if id == 0 {
                return Err(LabelError::ZeroId {
                    path: path.into(),
                    name,
                });
            }
            if let Some(first) = names.insert(id, name.clone()) {
                return Err(LabelError::DuplicateId {
                    path: path.into(),
                    id,
                    first,
                    second: name,
                });
            }
        }
        Ok(Self {
            names,
            source: path.into(),
        })
    }

    pub fn name(&self, id: u32) -> Option<&str> {
        self.names.get(&id).map(String::as_str)
    }

    pub fn id_of(&self, name: &str) -> Option<u32> {
        self.names
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(name))
            .map(|(id, _)| *id)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn max_id(&self) -> u32 {
        self.names.keys().next_back().copied().unwrap_or(0)
    }

    pub fn iter(&self) -> impl Iterator<Item = (u32, &str)> {
        self.names.iter().map(|(id, n)| (*id, n.as_str()))
    }

    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Checks the map against a score tensor of `columns` classes. With a background column the
    /// map must name exactly ids `1..columns`; without one, ids `1..=columns` (column j is id j+1).
    /// The message names both numbers and which ids are off, so a shifted map cannot slip through.
    pub fn check_columns(&self, columns: usize, background_column: bool) -> Result<(), String> {
        let expected = if background_column {
            columns.saturating_sub(1)
        } else {
            columns
        };
        let missing: Vec<u32> = (1..=expected as u32)
            .filter(|id| !self.names.contains_key(id))
            .collect();
        let extra: Vec<u32> = self
            .names
            .keys()
            .copied()
            .filter(|id| *id as usize > expected)
            .collect();
        if self.names.len() == expected && missing.is_empty() {
            return Ok(());
        }
        Err(format!(
            "label map {} has {} classes (ids {}..={}) but the model scores {} classes{}{}{}; \
             fix the label map (ids start at 1, 0 is background) or the model's `background_class` setting",
            self.source.display(),
            self.names.len(),
            self.names.keys().next().copied().unwrap_or(0),
            self.max_id(),
            expected,
            if background_column {
                format!(" ({columns} score columns, column 0 background)")
            } else {
                String::new()
            },
            if missing.is_empty() {
                String::new()
            } else {
                format!("; ids missing: {missing:?}")
            },
            if extra.is_empty() {
                String::new()
            } else {
                format!("; ids beyond the model: {extra:?}")
            },
        ))
    }

    /// Ids a detector may return (TF OD API `detection_classes`) that this map does not know.
    pub fn unknown_ids(&self, ids: impl IntoIterator<Item = u32>) -> Vec<u32> {
        let mut v: Vec<u32> = ids
            .into_iter()
            .filter(|id| !self.names.contains_key(id))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

fn unquote(v: &str) -> String {
    v.trim_matches(|c| c == '\'' || c == '"').to_string()
}

/// Splits pbtxt into tokens with their line numbers: braces, colons, quoted strings and words.
fn tokenize(text: &str) -> Result<Vec<(usize, String)>, (usize, String)> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        let mut chars = raw.chars().peekable();
        while let Some(&c) = chars.peek() {
            match c {
                '#' => break,
                c if c.is_whitespace() => {
                    chars.next();
                }
                '{' | '}' | ':' => {
                    out.push((line, c.to_string()));
                    chars.next();
                }
                '\'' | '"' => {
                    chars.next();
                    let mut s = String::from(c);
                    loop {
                        match chars.next() {
                            Some(q) if q == c => break,
                            Some(other) => s.push(other),
                            None => {
                                return Err((line, format!("unterminated string starting {s}")));
                            }
                        }
                    }
                    s.push(c);
                    out.push((line, s));
                }
                _ => {
                    let mut s = String::new();
                    while let Some(&w) = chars.peek() {
                        if w.is_whitespace() || matches!(w, '{' | '}' | ':' | '#') {
                            break;
                        }
                        s.push(w);
                        chars.next();
                    }
                    out.push((line, s));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "test.pbtxt";

    #[test]
    fn parses_pbtxt_with_both_quote_styles_and_display_names() {
        let text = "item {\n  id: 1\n  name: 'Anorak'\n}\nitem { id: 2 name: \"/m/01\" display_name: \"Blazer\" }\n# comment\n";
        let m = LabelMap::parse_pbtxt(text, Path::new(P)).expect("valid map");
        assert_eq!(m.len(), 2);
        assert_eq!(m.name(1), Some("Anorak"));
        assert_eq!(m.name(2), Some("Blazer"));
        assert_eq!(m.id_of("blazer"), Some(2));
    }

    #[test]
    fn plain_text_is_one_based() {
        let m = LabelMap::parse_plain("Person\n\nFootwear\n", Path::new("l.txt")).expect("valid");
        assert_eq!(m.name(1), Some("Person"));
        assert_eq!(m.name(2), Some("Footwear"));
        assert_eq!(m.name(0), None);
    }

    #[test]
    fn duplicate_and_zero_ids_are_refused() {
        let dup = "item { id: 1 name: 'A' } item { id: 1 name: 'B' }";
        assert!(matches!(
            LabelMap::parse_pbtxt(dup, Path::new(P)),
            Err(LabelError::DuplicateId { id: 1, .. })
        ));
        let zero = "item { id: 0 name: 'background' }";
        assert!(matches!(
            LabelMap::parse_pbtxt(zero, Path::new(P)),
            Err(LabelError::ZeroId { .. })
        ));
        let bad = "item { id: one name: 'A' }";
        assert!(matches!(
            LabelMap::parse_pbtxt(bad, Path::new(P)),
            Err(LabelError::Parse { line: 1, .. })
        ));
    }

    #[test]
    fn class_count_guard_catches_the_off_by_one() {
        let m = LabelMap::parse_plain("A\nB\nC\n", Path::new("l.txt")).expect("valid");
        // 4 columns with background = ids 1..3: agrees.
        assert!(m.check_columns(4, true).is_ok());
        // The source project's bug: a 0-based map (background counted as a class) against 3 columns.
        let err = m.check_columns(3, true).expect_err("must refuse");
        assert!(
            err.contains("has 3 classes") && err.contains("scores 2 classes"),
            "{err}"
        );
        assert!(err.contains("ids beyond the model: [3]"), "{err}");
        assert!(m.check_columns(3, false).is_ok());
        // A map numbered from 2 (shifted) never passes even when the count agrees.
        let shifted = LabelMap::parse_pbtxt(
            "item { id: 2 name: 'A' } item { id: 3 name: 'B' }",
            Path::new(P),
        )
        .expect("ok");
        let err = shifted.check_columns(3, true).expect_err("must refuse");
        assert!(err.contains("ids missing: [1]"), "{err}");
    }

    /// Fuzz target: arbitrary and mutated label maps are parsed or refused, never a panic, and
    /// the parser's memory stays a small multiple of the text.
    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        const VALID: &str = "item {\n  id: 1\n  name: 'Anorak'\n}\nitem { id: 2 name: \"/m/01\" display_name: \"Blazer\" }\n# comment\n";

        fn check(text: &str) {
            let (res, largest) = crate::test_alloc::largest_during(|| {
                (
                    LabelMap::parse_pbtxt(text, Path::new(P)).map(|m| m.len()),
                    LabelMap::parse_plain(text, Path::new(P)).map(|m| m.len()),
                )
            });
            for r in [res.0, res.1] {
                if let Err(e) = r {
                    assert!(e.to_string().contains(P), "{e}");
                }
            }
            assert!(
                largest <= 64 * text.len() + 4096,
                "{largest} bytes for a {}-byte map",
                text.len()
            );
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn arbitrary_text(text in "\\PC{0,300}") {
                check(&text);
            }

            #[test]
            fn mutated_maps(edits in proptest::collection::vec((0usize..200, any::<char>()), 1..8)) {
                let mut chars: Vec<char> = VALID.chars().collect();
                for (at, c) in edits {
                    let at = at % (chars.len() + 1);
                    if c.is_ascii_digit() || at == chars.len() {
                        chars.insert(at, c);
                    } else {
                        chars[at] = c;
                    }
                }
                check(&chars.into_iter().collect::<String>());
            }
        }
    }
}
