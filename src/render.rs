//! Render: handlebars templates from the templates folder → subject, text and optional HTML.
//! Strict mode: a variable a template names but the context lacks is an error, and `postdesk
//! check` renders every template against a sample context so such errors surface before mail
//! goes out. Pure apart from loading the files.
//!
//! Files: `NAME.subject.hbs`, `NAME.txt.hbs`, optional `NAME.html.hbs`; a queue overrides any of
//! them with `QUEUE/NAME.*.hbs`.

use crate::config::Problem;
use crate::reference::one_line;
use handlebars::Handlebars;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Templates every desk needs.
pub const REQUIRED: &[&str] = &["acknowledgement", "too_large"];

/// Templates a desk with agents needs.
pub const AGENT_TEMPLATES: &[&str] =
    &["agent_new_ticket", "agent_customer_reply", "agent_assigned", "agent_escalated", "agent_note", "agent_command_errors", "agent_reply", "alert_too_large", "sla_warning", "sla_breach"];

/// A rendered mail body, ready to compose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
}

/// The loaded template set. Each template is compiled once, when first rendered or at load
/// ([`Templates::load_layers`] compiles and checks them all; [`Templates::load_layers_lazy`],
/// for a one-message `deliver`, only reads them).
pub struct Templates {
    text: Mutex<Handlebars<'static>>,
    html: Mutex<Handlebars<'static>>,
    /// Source of every template by key (`billing/acknowledgement.txt`), text and HTML apart.
    text_src: BTreeMap<String, Source>,
    html_src: BTreeMap<String, Source>,
    dir: PathBuf,
    names: BTreeSet<String>,
}

/// A template file, read when it is compiled.
struct Source {
    file: PathBuf,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates").field("dir", &self.dir).field("names", &self.names).finish()
    }
}

/// Why a render failed.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("no template `{0}` (need {0}.subject.hbs and {0}.txt.hbs)")]
    Missing(String),
    #[error("template `{name}`: {source}")]
    Render { name: String, source: Box<handlebars::RenderError> },
    #[error("template {}: {message}", file.display())]
    Compile { file: PathBuf, message: String },
}

/// The template and partial files of one templates folder (one level of queue folders,
/// `lang/XX/`, `partials/`); `None` (with the problem) when the folder cannot be read.
fn scan(dir: &Path, problems: &mut Vec<Problem>) -> Option<(Vec<PathBuf>, Vec<PathBuf>)> {
    let hbs = |p: &PathBuf| p.extension().is_some_and(|x| x == "hbs");
    let files_in = |d: &Path| -> Vec<PathBuf> { std::fs::read_dir(d).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.is_file()).collect() };
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => {
            problems.push(Problem { file: dir.to_path_buf(), line: None, key: String::new(), message: format!("cannot read templates folder: {e}") });
            return None;
        }
    };
    let (mut partials, mut files) = (Vec::new(), Vec::new());
    for p in rd.flatten().map(|e| e.path()) {
        match p.file_name().and_then(|n| n.to_str()) {
            Some("partials") if p.is_dir() => partials.extend(files_in(&p).into_iter().filter(hbs)),
            // `lang/XX/NAME.*.hbs`: a language's version of any template.
            Some("lang") if p.is_dir() => {
                for l in std::fs::read_dir(&p).into_iter().flatten().flatten().map(|e| e.path()).filter(|l| l.is_dir()) {
                    files.extend(files_in(&l));
                }
            }
            _ if p.is_dir() => files.extend(files_in(&p)),
            _ => files.push(p),
        }
    }
    Some((partials, files))
}

impl Templates {
    /// Load and compile every `*.hbs` under `dir` (one level of queue folders). Returns every
    /// problem found, each naming its file and line.
    pub fn load(dir: &Path) -> Result<Templates, Vec<Problem>> {
        Self::load_layers(dir, None)
    }

    /// [`load`](Self::load) with an override folder: a file there (same name, same sub-folder)
    /// replaces the one in `dir` (the Debian package: `/usr/share/postdesk/templates` overridden
    /// by `/etc/postdesk/templates`). A missing override folder is no problem.
    pub fn load_layers(dir: &Path, overrides: Option<&Path>) -> Result<Templates, Vec<Problem>> {
        let t = Self::read_layers(dir, overrides)?;
        let mut problems: Vec<Problem> = t.text_src.keys().map(|k| (k, false)).chain(t.html_src.keys().map(|k| (k, true))).filter_map(|(k, html)| t.compile(k, html).err()).collect();
        if problems.is_empty() {
            problems = t.require(REQUIRED);
        }
        if problems.is_empty() {
            problems = t.check(); // every template against the sample variables
        }
        if problems.is_empty() { Ok(t) } else { Err(problems) }
    }

    /// Read the templates, compile only the partials; each template compiles when first
    /// rendered (a syntax error then fails that mail as a missing template would). For
    /// `deliver`, which handles one message: the daemon and `check` use [`Self::load_layers`].
    pub fn load_layers_lazy(dir: &Path, overrides: Option<&Path>) -> Result<Templates, Vec<Problem>> {
        let t = Self::read_layers(dir, overrides)?;
        let problems = t.require(REQUIRED);
        if problems.is_empty() { Ok(t) } else { Err(problems) }
    }

    /// The template files of both layers, read; the partials compiled.
    fn read_layers(dir: &Path, overrides: Option<&Path>) -> Result<Templates, Vec<Problem>> {
        let mut text = Handlebars::new();
        text.set_strict_mode(true);
        text.register_escape_fn(handlebars::no_escape);
        let mut html = Handlebars::new();
        html.set_strict_mode(true);
        let mut problems = Vec::new();
        let mut names = BTreeSet::new();
        let (mut text_src, mut html_src) = (BTreeMap::new(), BTreeMap::new());

        // Relative path → file, the override layer's winning.
        let mut partial_files: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
        let mut template_files: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
        for (layer, required) in [(Some(dir), true), (overrides, false)] {
            let Some(layer) = layer else { continue };
            if !required && !layer.is_dir() {
                continue;
            }
            let Some((partials, files)) = scan(layer, &mut problems) else { return Err(problems) };
            for f in partials {
                partial_files.insert(f.strip_prefix(layer).unwrap_or(&f).to_path_buf(), f);
            }
            for f in files {
                template_files.insert(f.strip_prefix(layer).unwrap_or(&f).to_path_buf(), f);
            }
        }
        // `partials/NAME.hbs`: shared snippets, `{{> NAME}}` in any template.
        for f in partial_files.values() {
            let name = f.file_stem().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            match std::fs::read_to_string(f) {
                Ok(src) => {
                    for reg in [&mut text, &mut html] {
                        if let Err(e) = reg.register_partial(&name, &src) {
                            problems.push(Problem { file: f.clone(), line: e.pos().map(|(l, _)| l), key: String::new(), message: e.reason().to_string() });
                            break;
                        }
                    }
                }
                Err(e) => problems.push(Problem { file: f.clone(), line: None, key: String::new(), message: format!("cannot read: {e}") }),
            }
        }
        for (rel, path) in template_files {
            let Some(fname) = path.file_name().and_then(|f| f.to_str()) else { continue };
            let Some(stem) = fname.strip_suffix(".hbs") else { continue };
            // The folder below the templates folder: `billing/`, `lang/de/`, or none.
            let prefix = match rel.parent().and_then(|p| p.to_str()).filter(|p| !p.is_empty()) {
                Some(rel) => format!("{}/", rel.replace('\\', "/")),
                None => String::new(),
            };
            let key = format!("{prefix}{stem}");
            let (base, part) = match stem.rsplit_once('.') {
                Some((b, p @ ("subject" | "txt" | "html"))) => (b, p),
                _ => {
                    problems.push(Problem { file: path.clone(), line: None, key: String::new(), message: "template names end in .subject.hbs, .txt.hbs or .html.hbs".into() });
                    continue;
                }
            };
            let sources = if part == "html" { &mut html_src } else { &mut text_src };
            sources.insert(key, Source { file: path.clone() });
            if prefix.is_empty() {
                names.insert(base.to_string());
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Templates { text: Mutex::new(text), html: Mutex::new(html), text_src, html_src, dir: dir.to_path_buf(), names })
    }

    fn registry(&self, html: bool) -> std::sync::MutexGuard<'_, Handlebars<'static>> {
        let m = if html { &self.html } else { &self.text };
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Compile template `key` unless it is already.
    fn compile(&self, key: &str, html: bool) -> Result<(), Problem> {
        let mut reg = self.registry(html);
        if reg.has_template(key) {
            return Ok(());
        }
        let src = if html { &self.html_src[key] } else { &self.text_src[key] };
        let problem = |line, message| Problem { file: src.file.clone(), line, key: String::new(), message };
        let text = std::fs::read_to_string(&src.file).map_err(|e| problem(None, format!("cannot read: {e}")))?;
        reg.register_template_string(key, &text).map_err(|e| problem(e.pos().map(|(line, _col)| line), e.reason().to_string()))
    }

    /// Check that `names` exist (subject and text part each).
    pub fn require(&self, names: &[&str]) -> Vec<Problem> {
        let mut problems = Vec::new();
        for name in names {
            for part in ["subject", "txt"] {
                if !self.text_src.contains_key(&format!("{name}.{part}")) {
                    problems.push(Problem {
                        file: self.dir.join(format!("{name}.{part}.hbs")),
                        line: None,
                        key: String::new(),
                        message: "required template is missing".into(),
                    });
                }
            }
        }
        problems
    }

    /// Render each template against the documented variables, so strict-mode errors show now.
    pub fn check(&self) -> Vec<Problem> {
        let (t, dir) = (self, &self.dir);
        let mut problems = Vec::new();
        {
            let ctx = sample_context();
            let mut keys: Vec<(String, bool)> = t.text_src.keys().map(|k| (k.clone(), false)).collect();
            keys.extend(t.html_src.keys().map(|k| (k.clone(), true)));
            for (key, is_html) in keys {
                if let Err(p) = t.compile(&key, is_html) {
                    problems.push(p);
                    continue;
                }
                if let Err(e) = t.registry(is_html).render(&key, &ctx) {
                    let part = if is_html { "html" } else { key.rsplit('.').next().unwrap_or("txt") };
                    let stem = if is_html { key.clone() } else { key.rsplit_once('.').map(|(b, _)| b.to_string()).unwrap_or_default() };
                    problems.push(Problem {
                        file: dir.join(format!("{stem}.{part}.hbs")),
                        line: e.line_no,
                        key: String::new(),
                        message: e.to_string(),
                    });
                }
            }
        }
        problems
    }

    /// Names of the desk-wide templates.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    pub fn has(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// Render template `name` for `queue` in `lang` (e.g. `de`), preferring for each part the
    /// queue's override, then the language's (`lang/de/`), then the default.
    pub fn render(&self, name: &str, queue: &str, lang: Option<&str>, ctx: &Value) -> Result<Rendered, RenderError> {
        let lang = lang.map(primary_language);
        let pick = |sources: &BTreeMap<String, Source>, part: &str| -> Option<String> {
            let mut candidates = vec![format!("{queue}/{name}.{part}")];
            if let Some(l) = &lang {
                candidates.push(format!("lang/{l}/{name}.{part}"));
            }
            candidates.push(format!("{name}.{part}"));
            candidates.into_iter().find(|k| sources.contains_key(k))
        };
        let subject_key = pick(&self.text_src, "subject").ok_or_else(|| RenderError::Missing(name.into()))?;
        let text_key = pick(&self.text_src, "txt").ok_or_else(|| RenderError::Missing(name.into()))?;
        let subject = one_line(&self.render_key(&subject_key, false, ctx)?);
        let text = normalize_newlines(&self.render_key(&text_key, false, ctx)?);
        let html = match pick(&self.html_src, "html") {
            Some(k) => Some(self.render_key(&k, true, ctx)?),
            None => None,
        };
        Ok(Rendered { subject, text, html })
    }

    fn render_key(&self, key: &str, html: bool, ctx: &Value) -> Result<String, RenderError> {
        self.compile(key, html).map_err(|p| RenderError::Compile { file: p.file.clone(), message: p.to_string() })?;
        self.registry(html).render(key, ctx).map_err(|e| RenderError::Render { name: key.to_string(), source: Box::new(e) })
    }
}

/// `de-DE` → `de`: the primary subtag of a language tag (RFC 5646), lower-case.
pub fn primary_language(tag: &str) -> String {
    tag.split([',', ';']).next().unwrap_or("").trim().split(['-', '_']).next().unwrap_or("").to_ascii_lowercase()
}

fn normalize_newlines(s: &str) -> String {
    let s = s.replace("\r\n", "\n");
    let trimmed = s.trim_matches('\n');
    format!("{trimmed}\n")
}

/// The variables every template may use, with sample values. Documented in the README.
pub fn sample_context() -> Value {
    json!({
        "desk": { "name": "Example Support" },
        "queue": { "name": "support", "address": "support@example.com", "from_name": "Example Support" },
        "ticket": {
            "id": 1042, "ref": "PD-1042", "subject": "Printer on floor 3 is jammed",
            "status": "new", "priority": "normal", "queue": "support", "owner": "bob@example.com", "tier": 1,
            "type": "incident", "service": "",
            "requester": "alice@example.org", "created_at": "2026-01-01T09:00:00Z",
            "reply_to": "alice@example.org, carol@example.org"
        },
        "message": {
            "from": "alice@example.org", "from_name": "Alice Example",
            "subject": "Printer on floor 3 is jammed", "text": "The printer says PC LOAD LETTER."
        },
        "recipient": { "address": "alice@example.org", "name": "Alice Example" },
        "agent": { "name": "Bob Agent", "email": "bob@example.com" },
        "reply": { "text": "I have ordered a new fuser unit." },
        "errors": ["/priority whenever: unknown priority `whenever`"],
        "sla": { "target": "first response", "due_at": "2026-01-01T13:00:00Z" },
        "approval": { "decision": "approved", "reason": "", "by": "cab@example.com" },
        "service": { "name": "password-reset", "title": "Password reset", "description": "We reset your password.", "missing": ["Username"] },
        "suggestions": [{ "ref": "KB-7", "title": "Reset your own password", "file": "password.md", "excerpt": "Go to https://id.example.com …" }],
        "suggested": true,
        "search": {
            "query": "printer toner", "agent": true, "error": null, "count": 2, "truncated": false, "about": "PD-1042",
            "tickets": [{ "ref": "PD-1042", "subject": "Printer on floor 3 is jammed", "status": "resolved", "snippet": "the *printer* says *toner* low" }],
            "articles": [{ "ref": "KB-7", "title": "Replace the toner", "snippet": "open the cover, replace the *toner*" }]
        },
        "report": { "text": "Postdesk report …", "html": "<p>Postdesk report …</p>" },
        "csat": { "ask": true, "choices": "1, 2, 3, 4, 5", "worst": "1", "best": "5" },
        "oauth": { "name": "mailboxes.support", "account": "support@example.com", "error": "the provider refused the refresh token (invalid_grant)", "login": "postdesk oauth login --mailbox support", "outbound": false },
        "services": [{ "name": "password-reset", "title": "Password reset", "description": "We reset your password.", "required": ["Username"] }],
        "tickets": [{ "ref": "PD-1042", "subject": "Printer on floor 3 is jammed", "status": "open", "updated_at": "2026-01-02T10:00:00Z" }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_override_folder_replaces_templates_one_by_one() {
        let base = dir_with(&[
            ("acknowledgement.subject.hbs", "Received: {{ticket.subject}}"),
            ("acknowledgement.txt.hbs", "We will answer."),
            ("too_large.subject.hbs", "Too large"),
            ("too_large.txt.hbs", "Too large"),
        ]);
        let over = dir_with(&[("acknowledgement.subject.hbs", "Got it: {{ticket.subject}}"), ("billing/acknowledgement.txt.hbs", "Billing will answer.")]);
        let t = Templates::load_layers(base.path(), Some(over.path())).unwrap();
        let ctx = sample_context();
        assert!(t.render("acknowledgement", "support", None, &ctx).unwrap().subject.starts_with("Got it: "));
        assert_eq!(t.render("acknowledgement", "support", None, &ctx).unwrap().text.trim(), "We will answer.");
        assert_eq!(t.render("acknowledgement", "billing", None, &ctx).unwrap().text.trim(), "Billing will answer.");
        let plain = Templates::load_layers(base.path(), Some(&base.path().join("missing"))).unwrap();
        assert!(plain.render("acknowledgement", "support", None, &ctx).unwrap().subject.starts_with("Received: "));
    }

    #[test]
    fn lazy_templates_compile_when_first_rendered() {
        let d = dir_with(&[
            ("acknowledgement.subject.hbs", "Received: {{ticket.subject}}"),
            ("acknowledgement.txt.hbs", "We will answer."),
            ("too_large.subject.hbs", "Too large"),
            ("too_large.txt.hbs", "{{#if x}}unclosed"),
        ]);
        assert!(Templates::load(d.path()).is_err(), "the daemon and check see every template");
        let t = Templates::load_layers_lazy(d.path(), None).unwrap();
        assert!(t.registry(false).get_templates().is_empty(), "nothing compiled before a render");
        assert_eq!(t.render("acknowledgement", "support", None, &sample_context()).unwrap().text, "We will answer.\n");
        assert_eq!(t.registry(false).get_templates().len(), 2, "only what was rendered");
        let e = t.render("too_large", "support", None, &sample_context()).unwrap_err();
        assert!(matches!(e, RenderError::Compile { .. }) && e.to_string().contains("too_large.txt.hbs"), "{e}");
    }

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (n, c) in files {
            let p = d.path().join(n);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, c).unwrap();
        }
        d
    }

    #[test]
    fn renders_with_queue_override_and_no_html_escaping_in_text() {
        let d = dir_with(&[
            ("acknowledgement.subject.hbs", "Received: {{ticket.subject}}"),
            ("acknowledgement.txt.hbs", "Hello {{message.from_name}} <{{message.from}}>"),
            ("billing/acknowledgement.txt.hbs", "Billing got it"),
            ("lang/de/acknowledgement.txt.hbs", "Danke, {{message.from_name}}"),
            ("too_large.subject.hbs", "Too large"),
            ("too_large.txt.hbs", "Too large"),
        ]);
        let t = Templates::load(d.path()).unwrap();
        let r = t.render("acknowledgement", "support", None, &sample_context()).unwrap();
        assert_eq!(r.subject, "Received: Printer on floor 3 is jammed");
        assert_eq!(r.text, "Hello Alice Example <alice@example.org>\n");
        assert_eq!(t.render("acknowledgement", "billing", None, &sample_context()).unwrap().text, "Billing got it\n");
        assert_eq!(t.render("acknowledgement", "support", Some("de-DE"), &sample_context()).unwrap().text, "Danke, Alice Example\n");
        assert_eq!(t.render("acknowledgement", "support", Some("fr"), &sample_context()).unwrap().text, "Hello Alice Example <alice@example.org>\n");
    }

    #[test]
    fn unknown_variables_and_syntax_errors_are_reported_with_file() {
        let d = dir_with(&[
            ("acknowledgement.subject.hbs", "{{ticket.nosuchfield}}"),
            ("acknowledgement.txt.hbs", "line one\n{{#if x}}unclosed"),
        ]);
        let problems = Templates::load(d.path()).unwrap_err();
        let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert!(text.iter().any(|p| p.contains("acknowledgement.txt.hbs")), "{text:?}");
        let d = dir_with(&[
            ("acknowledgement.subject.hbs", "{{ticket.nosuchfield}}"),
            ("acknowledgement.txt.hbs", "ok"),
            ("too_large.subject.hbs", "x"),
            ("too_large.txt.hbs", "x"),
        ]);
        let problems = Templates::load(d.path()).unwrap_err();
        assert!(problems[0].to_string().contains("acknowledgement.subject.hbs"), "{problems:?}");
        assert!(problems[0].message.contains("nosuchfield"), "{problems:?}");
    }
}
