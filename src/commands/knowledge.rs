//! `tickets search` and `kb list/show/publish/withdraw`: the search index and the knowledge
//! articles from the command line (docs/KNOWLEDGE.md).

use super::{clock, open_for_reading};
use crate::search::{Query, kb_ref, parse_kb_ref};
use crate::store::KbState;
use serde_json::json;
use std::path::Path;

/// Most results `tickets search --limit` may ask for.
pub const MAX_LIMIT: usize = 1000;

/// `postdesk tickets search QUERY`: tickets whose messages (and notes) contain every word, and
/// published articles, best first (bm25).
pub fn tickets_search(config: &Path, query: &str, limit: usize, json: bool) -> anyhow::Result<i32> {
    let q = Query::parse(query)?;
    if limit == 0 || limit > MAX_LIMIT {
        anyhow::bail!("--limit must be between 1 and {MAX_LIMIT}");
    }
    let (refs, store) = open_for_reading(config)?;
    let tickets = store.search_tickets(&q, limit)?;
    let articles = store.search_kb(&q, limit)?;
    if json {
        let out = json!({
            "query": q.text(),
            "truncated": q.truncated,
            "tickets": tickets.iter().map(|h| json!({ "id": h.id, "ref": refs.format(h.id), "subject": h.title, "status": h.status, "snippet": h.snippet, "score": h.score })).collect::<Vec<_>>(),
            "articles": articles.iter().map(|h| json!({ "id": h.id, "ref": kb_ref(h.id), "title": h.title, "snippet": h.snippet, "score": h.score })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(0);
    }
    if q.truncated {
        eprintln!("postdesk: a long query: searched for its first {} word(s) only: {}", q.terms.len(), q.text());
    }
    println!("{:<10} {:<9} SUBJECT / SNIPPET", "REF", "STATUS");
    for h in &tickets {
        println!("{:<10} {:<9} {}", refs.format(h.id), h.status, crate::reference::one_line(&h.title));
        println!("{:<20} {}", "", h.snippet);
    }
    for h in &articles {
        println!("{:<10} {:<9} {}", kb_ref(h.id), h.status, crate::reference::one_line(&h.title));
        println!("{:<20} {}", "", h.snippet);
    }
    if tickets.is_empty() && articles.is_empty() {
        println!("(nothing contains all of: {})", q.text());
    }
    Ok(0)
}

/// `postdesk kb list [--all]`: published articles (with `--all` also unpublished solutions and
/// withdrawn articles), newest first.
pub fn kb_list(config: &Path, all: bool, json: bool) -> anyhow::Result<i32> {
    let (refs, store) = open_for_reading(config)?;
    let list = store.kb_articles(all)?;
    if json {
        let out: Vec<_> = list
            .iter()
            .map(|a| json!({ "id": a.id, "ref": kb_ref(a.id), "title": a.title, "state": a.state, "ticket": a.ticket.map(|t| refs.format(t)), "author": a.author, "created_at": a.created_at, "updated_at": a.updated_at, "published_at": a.published_at, "published_by": a.published_by }))
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(0);
    }
    println!("{:<8} {:<10} {:<10} {:<20} TITLE", "REF", "STATE", "TICKET", "UPDATED");
    for a in &list {
        println!("{:<8} {:<10} {:<10} {:<20} {}", kb_ref(a.id), a.state.as_str(), a.ticket.map(|t| refs.format(t)).unwrap_or_default(), a.updated_at, crate::reference::one_line(&a.title));
    }
    Ok(0)
}

fn article_id(id: &str) -> anyhow::Result<i64> {
    parse_kb_ref(id).ok_or_else(|| anyhow::anyhow!("`{id}` is not an article id or reference (e.g. 7 or KB-7)"))
}

/// `postdesk kb show ID`: one article with its text.
pub fn kb_show(config: &Path, id: &str, json: bool) -> anyhow::Result<i32> {
    let id = article_id(id)?;
    let (refs, store) = open_for_reading(config)?;
    let Some(a) = store.kb_article(id)? else { anyhow::bail!("no article {}", kb_ref(id)) };
    if json {
        let mut v = serde_json::to_value(&a)?;
        v["ref"] = json!(kb_ref(a.id));
        v["ticket"] = json!(a.ticket.map(|t| refs.format(t)));
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    println!("{} {}", kb_ref(a.id), a.title);
    println!("  state {}  ticket {}  by {}  updated {}", a.state.as_str(), a.ticket.map(|t| refs.format(t)).unwrap_or_else(|| "-".into()), a.author, a.updated_at);
    println!();
    println!("{}", a.body);
    Ok(0)
}

/// `postdesk kb publish ID [--title T]` and `postdesk kb withdraw ID`.
pub fn kb_set(config: &Path, id: &str, publish: bool, title: Option<&str>) -> anyhow::Result<i32> {
    let id = article_id(id)?;
    let (_, store) = open_for_reading(config)?;
    let now = crate::pipeline::Now::at(clock().now());
    let title = title.map(crate::reference::sender_text).filter(|t| !t.is_empty());
    let mut tx = store.begin()?;
    let Some(a) = tx.kb_article(id)? else { anyhow::bail!("no article {}", kb_ref(id)) };
    if publish {
        tx.publish_kb(id, title.as_deref(), "admin (command line)", &now.s)?;
    } else if a.state != KbState::Published {
        anyhow::bail!("{} is not published ({})", kb_ref(id), a.state.as_str());
    } else {
        tx.withdraw_kb(id, &now.s)?;
    }
    if let Some(t) = a.ticket {
        tx.event(t, if publish { "published" } else { "withdrawn" }, &format!("{} {} from the command line", kb_ref(id), if publish { "published" } else { "withdrawn" }), &now.s)?;
    }
    tx.commit()?;
    println!("{}: {}", kb_ref(id), if publish { "published" } else { "withdrawn" });
    Ok(0)
}
