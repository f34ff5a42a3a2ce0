//! Configuration items: the inventory an admin exports to CSV (`name,type,owner,…`; further
//! columns become attributes), and finding the CIs a message mentions (whole-word, case-insensitive
//! names such as host names and asset tags). Pure apart from reading the file.

use crate::config::Problem;
use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// One configuration item.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Ci {
    pub name: String,
    #[serde(rename = "type")]
    pub ci_type: String,
    pub owner: String,
    pub attributes: BTreeMap<String, String>,
}

/// The inventory, with a matcher over the names.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub items: Vec<Ci>,
    matcher: Option<AhoCorasick>,
}

impl Inventory {
    /// Read a CSV file with a header row; `name` is required, `type` and `owner` optional.
    pub fn load(path: &Path) -> Result<Inventory, Vec<Problem>> {
        let problem = |line: Option<usize>, message: String| Problem { file: path.to_path_buf(), line, key: String::new(), message };
        let mut rdr = csv::ReaderBuilder::new().trim(csv::Trim::All).flexible(true).from_path(path).map_err(|e| vec![problem(None, e.to_string())])?;
        let headers: Vec<String> = rdr.headers().map_err(|e| vec![problem(Some(1), e.to_string())])?.iter().map(|h| h.to_ascii_lowercase()).collect();
        let Some(name_col) = headers.iter().position(|h| h == "name") else {
            return Err(vec![problem(Some(1), "the header row needs a `name` column".into())]);
        };
        let mut items = Vec::new();
        let mut problems = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, rec) in rdr.records().enumerate() {
            let line = i + 2;
            let rec = match rec {
                Ok(r) => r,
                Err(e) => {
                    problems.push(problem(Some(line), e.to_string()));
                    continue;
                }
            };
            let get = |col: &str| headers.iter().position(|h| h == col).and_then(|c| rec.get(c)).unwrap_or("").to_string();
            let name = rec.get(name_col).unwrap_or("").to_string();
            if name.is_empty() {
                problems.push(problem(Some(line), "empty name".into()));
                continue;
            }
            if !seen.insert(name.to_ascii_lowercase()) {
                problems.push(problem(Some(line), format!("`{name}` appears twice")));
                continue;
            }
            let attributes = headers
                .iter()
                .enumerate()
                .filter(|(_, h)| !["name", "type", "owner"].contains(&h.as_str()))
                .filter_map(|(c, h)| rec.get(c).filter(|v| !v.is_empty()).map(|v| (h.clone(), v.to_string())))
                .collect();
            items.push(Ci { name, ci_type: get("type"), owner: get("owner"), attributes });
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Inventory::new(items))
    }

    pub fn new(items: Vec<Ci>) -> Inventory {
        let matcher = (!items.is_empty())
            .then(|| AhoCorasickBuilder::new().ascii_case_insensitive(true).match_kind(MatchKind::LeftmostLongest).build(items.iter().map(|c| c.name.as_str())).ok())
            .flatten();
        Inventory { items, matcher }
    }

    pub fn get(&self, name: &str) -> Option<&Ci> {
        self.items.iter().find(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// The CIs named in `text` as whole words, in order of first mention.
    pub fn mentioned(&self, text: &str) -> Vec<&Ci> {
        let Some(m) = &self.matcher else { return Vec::new() };
        let bytes = text.as_bytes();
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
        let mut out: Vec<&Ci> = Vec::new();
        for hit in m.find_iter(text) {
            let before = hit.start().checked_sub(1).map(|i| bytes[i]);
            let after = bytes.get(hit.end()).copied();
            if before.is_some_and(word) || after.is_some_and(word) {
                continue;
            }
            let ci = &self.items[hit.pattern().as_usize()];
            if !out.iter().any(|c| c.name == ci.name) {
                out.push(ci);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_csv_and_finds_whole_word_mentions() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cis.csv");
        std::fs::write(&p, "name,type,owner,location\nweb01,server,ops@example.com,rack 3\nPRN-0042,printer,facilities@example.com,floor 3\ndb01,server,,\n").unwrap();
        let inv = Inventory::load(&p).unwrap();
        assert_eq!(inv.items.len(), 3);
        assert_eq!(inv.get("WEB01").unwrap().attributes["location"], "rack 3");
        let found: Vec<&str> = inv.mentioned("Printer prn-0042 on floor 3 and web01 are down; web012 is fine; db01.").iter().map(|c| c.name.as_str()).collect();
        assert_eq!(found, vec!["PRN-0042", "web01", "db01"]);
        std::fs::write(&p, "host,type\nweb01,server\n").unwrap();
        assert!(Inventory::load(&p).unwrap_err()[0].message.contains("`name` column"));
        std::fs::write(&p, "name\nweb01\nWEB01\n").unwrap();
        assert_eq!(Inventory::load(&p).unwrap_err()[0].line, Some(3));
    }
}
