//! Class-name tables: label files and Ultralytics metadata.

use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Labels(BTreeMap<u32, String>);

#[derive(Debug, thiserror::Error)]
#[error("labels file {path}: {reason}")]
pub struct LabelsError {
    pub path: String,
    pub reason: String,
}

impl Labels {
    /// Reads a labels file: either `ID NAME` per line (TFLite's `coco_labels.txt`, whose ids
    /// have gaps) or one `NAME` per line, numbered from 0.
    pub fn from_file(path: &Path) -> Result<Self, LabelsError> {
        let text = std::fs::read_to_string(path).map_err(|e| LabelsError {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Self::parse(&text))
    }

    pub fn parse(text: &str) -> Self {
        let mut map = BTreeMap::new();
        for (i, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
            let line = line.trim();
            let (id, name) = match line.split_once(char::is_whitespace) {
                Some((id, name)) if id.parse::<u32>().is_ok() => {
                    (id.parse().unwrap_or(i as u32), name.trim())
                }
                _ => (i as u32, line),
            };
            map.insert(id, name.to_string());
        }
        Self(map)
    }

    /// Parses Ultralytics' `names` metadata, a Python dict literal:
    /// `{0: 'person', 1: 'bicycle', ...}`.
    pub fn from_ultralytics(names: &str) -> Option<Self> {
        let body = names.trim().strip_prefix('{')?.strip_suffix('}')?;
        let mut map = BTreeMap::new();
        let mut rest = body;
        while !rest.trim().is_empty() {
            let (id, after) = rest.split_once(':')?;
            let id: u32 = id.trim().trim_start_matches(',').trim().parse().ok()?;
            let after = after.trim_start();
            let quote = after.chars().next()?;
            if quote != '\'' && quote != '"' {
                return None;
            }
            let end = after[1..].find(quote)? + 1;
            map.insert(id, after[1..end].to_string());
            rest = &after[end + 1..];
        }
        Some(Self(map))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The name of `id`, or `class N` for ids the table lacks.
    /// Whether a class of this name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.0.values().any(|n| n == name)
    }

    pub fn name(&self, id: u32) -> String {
        self.0
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("class {id}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_id_and_plain_files() {
        let l = Labels::parse("0  person\n2  car\n");
        assert_eq!(l.name(2), "car");
        assert_eq!(l.name(1), "class 1");
        let l = Labels::parse("cat\ndog\n");
        assert_eq!(l.name(1), "dog");
    }

    #[test]
    fn parses_ultralytics_names() {
        let l = Labels::from_ultralytics("{0: 'person', 1: \"traffic light\", 2: 'car'}").unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!(l.name(1), "traffic light");
        assert!(Labels::from_ultralytics("not a dict").is_none());
    }
}
