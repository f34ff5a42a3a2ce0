//! Service catalog and knowledge base: request types customers can ask for (with the information
//! each needs), matched to new mail by subject keywords; and help articles kept as text files,
//! the best few suggested in the acknowledgement. Pure apart from loading the files.

use crate::config::Problem;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::Path;

/// One request type.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    pub title: String,
    #[serde(default)]
    pub description: String,
    /// Words or phrases in a subject that mean this request (case-insensitive).
    #[serde(default)]
    pub keywords: Vec<String>,
    pub queue: Option<String>,
    pub priority: Option<crate::ticket::Priority>,
    pub sla: Option<String>,
    #[serde(rename = "type")]
    pub ticket_type: Option<String>,
    /// What the requester must tell us ("Username", "Asset tag"); the acknowledgement asks for
    /// each one the mail does not mention.
    #[serde(default)]
    pub required: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    service: Vec<Service>,
}

/// The catalog.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub services: Vec<Service>,
}

impl Catalog {
    /// Load and check a catalog file against the desk's queues and SLA policies.
    pub fn load(path: &Path, queues: &[String], policies: &[String]) -> Result<Catalog, Vec<Problem>> {
        let problem = |line: Option<usize>, key: String, message: String| Problem { file: path.to_path_buf(), line, key, message };
        let text = std::fs::read_to_string(path).map_err(|e| vec![problem(None, String::new(), format!("cannot read: {e}"))])?;
        let file: File = toml_edit::de::from_str(&text).map_err(|e| {
            let line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            vec![problem(line, String::new(), e.message().to_string())]
        })?;
        let mut problems = Vec::new();
        let mut names = BTreeSet::new();
        for (i, s) in file.service.iter().enumerate() {
            let key = format!("service[{}]", s.name);
            if !names.insert(s.name.clone()) {
                problems.push(problem(None, key.clone(), format!("service `{}` is defined twice (entry {})", s.name, i + 1)));
            }
            if let Some(q) = &s.queue
                && !queues.contains(q)
            {
                problems.push(problem(None, format!("{key}.queue"), format!("no queue named `{q}`")));
            }
            if let Some(p) = &s.sla
                && !policies.contains(p)
            {
                problems.push(problem(None, format!("{key}.sla"), format!("no SLA policy named `{p}`")));
            }
        }
        if problems.is_empty() { Ok(Catalog { services: file.service }) } else { Err(problems) }
    }

    /// The service whose keywords the subject mentions (the first in file order).
    pub fn match_subject(&self, subject: &str) -> Option<&Service> {
        let s = subject.to_lowercase();
        self.services.iter().find(|svc| svc.keywords.iter().any(|k| !k.is_empty() && s.contains(&k.to_lowercase())))
    }

    pub fn get(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }
}

impl Service {
    /// The required items `text` does not mention.
    pub fn missing(&self, text: &str) -> Vec<String> {
        let t = text.to_lowercase();
        self.required.iter().filter(|r| !t.contains(&r.to_lowercase())).cloned().collect()
    }
}

/// A help article: a text file whose first line is its title.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Article {
    pub title: String,
    pub file: String,
    pub excerpt: String,
    #[serde(skip)]
    words: BTreeSet<String>,
}

/// The knowledge base.
#[derive(Debug, Clone, Default)]
pub struct Kb {
    pub articles: Vec<Article>,
}

/// Words too common to say what a mail is about (English and German, the template languages).
pub(crate) const STOP_WORDS: &[&str] = &["the", "and", "for", "with", "this", "that", "from", "have", "not", "you", "your", "are", "was", "but", "can", "how", "what", "does", "der", "die", "das", "und", "ist", "nicht"];

fn words(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
        .filter(|w| w.chars().count() >= 3 && !STOP_WORDS.contains(&w.as_str()))
        .collect()
}

impl Kb {
    /// Every `*.txt` / `*.md` file of a folder.
    pub fn load(dir: &Path) -> Result<Kb, Vec<Problem>> {
        let rd = std::fs::read_dir(dir).map_err(|e| vec![Problem { file: dir.to_path_buf(), line: None, key: String::new(), message: format!("cannot read: {e}") }])?;
        let mut files: Vec<_> = rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "txt" || x == "md")).collect();
        files.sort();
        let mut articles = Vec::new();
        for f in files {
            let text = std::fs::read_to_string(&f).map_err(|e| vec![Problem { file: f.clone(), line: None, key: String::new(), message: format!("cannot read: {e}") }])?;
            let title = text.lines().next().unwrap_or("").trim_start_matches('#').trim().to_string();
            let body: String = text.lines().skip(1).collect::<Vec<_>>().join("\n");
            let excerpt: String = body.trim().chars().take(300).collect();
            articles.push(Article { title, file: f.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string(), excerpt, words: words(&text) });
        }
        Ok(Kb { articles })
    }

    /// Up to `n` articles sharing at least two distinct words with the mail, best first.
    pub fn suggest(&self, text: &str, n: usize) -> Vec<&Article> {
        if n == 0 || self.articles.is_empty() {
            return Vec::new(); // no knowledge base: no word set built for every mail
        }
        let q = words(text);
        let mut scored: Vec<(usize, &Article)> = self.articles.iter().map(|a| (a.words.intersection(&q).count(), a)).filter(|(s, _)| *s >= 2).collect();
        scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.file.cmp(&b.1.file)));
        scored.into_iter().take(n).map(|(_, a)| a).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_matches_and_asks_for_missing_information() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("catalog.toml");
        std::fs::write(&p, "[[service]]\nname = \"password-reset\"\ntitle = \"Password reset\"\nkeywords = [\"password\", \"locked out\"]\nrequired = [\"Username\"]\ntype = \"service_request\"\n").unwrap();
        let c = Catalog::load(&p, &["support".into()], &[]).unwrap();
        let s = c.match_subject("I am LOCKED OUT of my account").unwrap();
        assert_eq!(s.name, "password-reset");
        assert_eq!(s.missing("please help"), vec!["Username".to_string()]);
        assert!(s.missing("Username: jdoe").is_empty());
        assert!(c.match_subject("Printer").is_none());
        std::fs::write(&p, "[[service]]\nname = \"x\"\ntitle = \"X\"\nqueue = \"nope\"\n").unwrap();
        assert!(Catalog::load(&p, &["support".into()], &[]).unwrap_err()[0].message.contains("nope"));
        std::fs::write(&p, "[[service]]\nname = \"x\"\ntitle = \"X\"\ncolour = 1\n").unwrap();
        assert!(Catalog::load(&p, &[], &[]).unwrap_err()[0].line.is_some());
    }

    #[test]
    fn knowledge_base_suggests_by_shared_words() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("vpn.md"), "# VPN disconnects every hour\nUpdate the VPN client to 5.2 and disable power saving on the network adapter.").unwrap();
        std::fs::write(dir.path().join("printer.md"), "# Printer jams\nOpen tray 2 and remove the paper.").unwrap();
        let kb = Kb::load(dir.path()).unwrap();
        let s = kb.suggest("My VPN client disconnects all the time", 3);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].title, "VPN disconnects every hour");
        assert!(kb.suggest("Hello", 3).is_empty());
    }
}
