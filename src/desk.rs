//! Desk: one consistent, immutable snapshot of everything the pipeline consults besides the
//! database — config, templates, signing key, identity. Built by the same code at start-up, on
//! SIGHUP and for `check`/`rules test`; a reload that fails keeps the previous snapshot.

use crate::config::{Config, Problem, Problems};
use crate::guard::Identity;
use crate::reference::RefFormat;
use crate::render::Templates;
use crate::token::Signer;
use std::path::Path;
use std::sync::{Arc, RwLock};

/// Everything a message is evaluated against.
#[derive(Debug)]
pub struct Desk {
    pub config: Config,
    pub templates: Templates,
    pub signer: Signer,
    pub refs: RefFormat,
    pub identity: Identity,
    /// Routing rules (empty when the config names none).
    pub rules: crate::rules::RuleSet,
    /// Configuration items (empty when the config names no inventory).
    pub cis: crate::cis::Inventory,
    pub catalog: crate::catalog::Catalog,
    pub kb: crate::catalog::Kb,
}

/// How to obtain the signing key when the config names none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMode {
    /// Read `data_dir/secret`, creating it on first start (the daemon, `deliver`).
    Persistent,
    /// Read it if present, else use a throwaway key (dry runs and checks write nothing).
    ReadOnly,
}

impl Desk {
    /// Load config, templates and key; every problem at once.
    pub fn load(config_path: &Path, key_mode: KeyMode) -> Result<Desk, Problems> {
        let config = crate::config::load(config_path)?;
        Desk::from_config(config, key_mode)
    }

    /// [`Desk::load`] for `postdesk deliver`, which handles one message: templates compile when
    /// a mail needs them instead of all at start (the daemon and `check` compile and check them
    /// all, so a broken template is reported there).
    pub fn for_one_message(config: Config) -> Result<Desk, Problems> {
        Desk::build(config, KeyMode::Persistent, true)
    }

    pub fn from_config(config: Config, key_mode: KeyMode) -> Result<Desk, Problems> {
        Desk::build(config, key_mode, false)
    }

    fn build(config: Config, key_mode: KeyMode, lazy_templates: bool) -> Result<Desk, Problems> {
        let mut problems = Vec::new();
        let (dir, overrides) = (&config.desk.templates_dir, config.desk.templates_override_dir.as_deref());
        let loaded = if lazy_templates { Templates::load_layers_lazy(dir, overrides) } else { Templates::load_layers(dir, overrides) };
        let templates = match loaded {
            Ok(t) => Some(t),
            Err(p) => {
                problems.extend(p);
                None
            }
        };
        if let Some(t) = &templates {
            if !config.agents.is_empty() {
                problems.extend(t.require(crate::render::AGENT_TEMPLATES));
            }
            if !config.approvers.is_empty() || config.queues.values().any(|q| !q.approvers.is_empty()) {
                problems.extend(t.require(&["approval_request", "approval_outcome", "approval_decided"]));
            }
            if !config.groups.is_empty() {
                problems.extend(t.require(&["group_handoff", "agent_group_reply"]));
            }
            if !config.weekly_report_to.is_empty() {
                problems.extend(t.require(&["weekly_report"]));
            }
            let oauth = config.outbound.oauth2.is_some()
                || config.mailboxes.values().any(|m| matches!(&m.source, crate::config::Source::Imap(i) if i.oauth2.is_some()));
            if oauth && !config.desk.admins.is_empty() {
                problems.extend(t.require(&["oauth_failed"]));
            }
            if config.lifecycle.as_ref().is_some_and(|l| l.remind_pending_after.is_some()) {
                problems.extend(t.require(&["pending_reminder"]));
            }
            if config.knowledge.customer_search {
                problems.extend(t.require(&["search_results"]));
            }
            if config.self_service.is_some() {
                problems.extend(t.require(&["status_list", "customer_closed"]));
                if config.catalog_file.is_some() {
                    problems.extend(t.require(&["catalog_list"]));
                }
            }
            for q in config.queues.values() {
                if q.on_closed == crate::config::OnClosed::Reject && !t.has("closed_notice") {
                    problems.push(Problem {
                        file: config.file.clone(),
                        line: None,
                        key: format!("queues.{}.on_closed", q.name),
                        message: format!("on_closed = \"reject\" needs the template `closed_notice` in {}", config.desk.templates_dir.display()),
                    });
                }
                if q.acknowledge && !t.has(&q.ack_template) {
                    problems.push(Problem {
                        file: config.file.clone(),
                        line: None,
                        key: format!("queues.{}.ack_template", q.name),
                        message: format!("no template `{}` in {}", q.ack_template, config.desk.templates_dir.display()),
                    });
                }
            }
        }
        let key = match (&config.desk.secret, key_mode) {
            (Some(s), _) => Some(s.expose().as_bytes().to_vec()),
            (None, KeyMode::Persistent) => match crate::token::load_or_create_key(None, &config.desk.data_dir) {
                Ok(k) => Some(k),
                Err(e) => {
                    problems.push(Problem {
                        file: config.desk.data_dir.join("secret"),
                        line: None,
                        key: "desk.secret_file".into(),
                        message: format!("cannot read or create the signing key: {e}"),
                    });
                    None
                }
            },
            (None, KeyMode::ReadOnly) => Some(
                std::fs::read_to_string(config.desk.data_dir.join("secret"))
                    .map(|s| s.trim().as_bytes().to_vec())
                    .unwrap_or_else(|_| rand::random::<[u8; 32]>().to_vec()),
            ),
        };
        let catalog = match &config.catalog_file {
            Some(p) => crate::catalog::Catalog::load(p, &config.queues.keys().cloned().collect::<Vec<_>>(), &config.sla.policies.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_else(|e| {
                    problems.extend(e);
                    Default::default()
                }),
            None => Default::default(),
        };
        let kb = match &config.kb {
            Some((dir, _)) => crate::catalog::Kb::load(dir).unwrap_or_else(|e| {
                problems.extend(e);
                Default::default()
            }),
            None => Default::default(),
        };
        let rules = match (&config.rules, &templates) {
            (Some(path), Some(t)) => {
                let known = crate::rules::Known {
                    queues: config.queues.keys().cloned().collect(),
                    agents: config.agents.values().flat_map(|a| [a.email.clone(), a.key.clone()]).collect(),
                    templates: t.names().map(str::to_string).collect(),
                    mailboxes: config.mailboxes.keys().cloned().collect(),
                    ticket_types: Vec::new(),
                    services: catalog.services.iter().map(|s| s.name.clone()).collect(),
                    sla_policies: config.sla.policies.keys().cloned().collect(),
                };
                match crate::rules::load(path, &known) {
                    Ok(r) => Some(r),
                    Err(p) => {
                        problems.extend(p);
                        None
                    }
                }
            }
            (None, _) => Some(crate::rules::RuleSet::empty(&config.file)),
            (Some(_), None) => None,
        };
        let cis = match &config.cis_file {
            Some(p) => crate::cis::Inventory::load(p).unwrap_or_else(|e| {
                problems.extend(e);
                Default::default()
            }),
            None => Default::default(),
        };
        match (templates, key, rules) {
            (Some(templates), Some(key), Some(rules)) if problems.is_empty() => Ok(Desk {
                rules,
                cis,
                catalog,
                kb,
                signer: match &config.desk.previous_secret {
                    Some((prev, until)) => Signer::new(&key, &config.desk.domain).with_previous(prev.expose().as_bytes(), *until),
                    None => Signer::new(&key, &config.desk.domain),
                },
                refs: RefFormat::new(&config.desk.ref_prefix),
                identity: Identity { domain: config.desk.domain.clone(), own_addresses: config.own_addresses() },
                templates,
                config,
            }),
            _ => Err(Problems(problems)),
        }
    }
}

/// The current desk, swapped whole on reload; readers take an `Arc` and keep it for one message.
#[derive(Debug, Clone)]
pub struct DeskHandle(Arc<RwLock<Arc<Desk>>>);

impl DeskHandle {
    pub fn new(desk: Desk) -> Self {
        DeskHandle(Arc::new(RwLock::new(Arc::new(desk))))
    }

    pub fn current(&self) -> Arc<Desk> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn replace(&self, desk: Desk) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(desk);
    }
}
