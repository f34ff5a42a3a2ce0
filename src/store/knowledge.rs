//! Knowledge in the store: full-text search over tickets (`article_fts`, written by a trigger in
//! the transaction that writes each article) and published articles (`kb_fts`), solutions and
//! their publication, suggestions recorded on tickets, deflections. docs/KNOWLEDGE.md.

use super::db::{self, Conn, OptionalExtension, params};
use super::{Result, Store, Tx};
use crate::search::Query;
use crate::ticket::TicketId;

use serde::Serialize;
use std::collections::BTreeMap;

/// Where a solution stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KbState {
    /// Recorded on its ticket by an agent, not public.
    Solution,
    /// A knowledge article: customers can find it and it is suggested.
    Published,
    /// Taken back: no longer found or suggested.
    Withdrawn,
}

impl KbState {
    pub fn as_str(self) -> &'static str {
        match self {
            KbState::Solution => "solution",
            KbState::Published => "published",
            KbState::Withdrawn => "withdrawn",
        }
    }
    fn parse(s: &str) -> KbState {
        match s {
            "published" => KbState::Published,
            "withdrawn" => KbState::Withdrawn,
            _ => KbState::Solution,
        }
    }
}

/// A solution or knowledge article.
#[derive(Debug, Clone, Serialize)]
pub struct KbArticle {
    pub id: i64,
    /// The ticket it was learnt from.
    pub ticket: Option<TicketId>,
    pub title: String,
    pub body: String,
    pub state: KbState,
    pub author: String,
    pub created_at: String,
    pub updated_at: String,
    pub published_at: Option<String>,
    pub published_by: Option<String>,
}

/// One search result: a ticket (its best matching message) or a published article.
#[derive(Debug, Clone, Serialize)]
pub struct SearchHit {
    /// `ticket` or `article`.
    pub kind: &'static str,
    /// Ticket id or article id.
    pub id: i64,
    /// Ticket subject or article title.
    pub title: String,
    /// Ticket status or article state.
    pub status: String,
    /// Where the words occur, one line, matches in `*…*`.
    pub snippet: String,
    /// FTS5 bm25 (lower is better).
    pub score: f64,
}

/// A published article suggested for a new ticket.
#[derive(Debug, Clone, Serialize)]
pub struct Suggested {
    pub id: i64,
    pub title: String,
    pub body: String,
    /// 1 = best.
    pub rank: usize,
    /// How many of the ticket's words the article contains.
    pub matched: usize,
}

const KB_SELECT: &str = "SELECT id, ticket_id, title, body, state, author, created_at, updated_at, published_at, published_by FROM kb_articles";

fn kb_row(r: &db::Row<'_>) -> Result<KbArticle> {
    Ok(KbArticle {
        id: r.get(0)?,
        ticket: r.get(1)?,
        title: r.get(2)?,
        body: r.get(3)?,
        state: KbState::parse(&r.get::<_, String>(4)?),
        author: r.get(5)?,
        created_at: r.get(6)?,
        updated_at: r.get(7)?,
        published_at: r.get(8)?,
        published_by: r.get(9)?,
    })
}

/// Tickets whose messages contain every word, best first, one hit per ticket. Ranks first
/// (bm25 over every match, nothing else per row), then reads ticket and snippet for the few
/// shown: `snippet()` in the ranking query would run for every matching message.
fn search_tickets(conn: &Conn, q: &Query, limit: usize) -> Result<Vec<SearchHit>> {
    let expr = if conn.is_pg() { q.text() } else { q.all() };
    let mut rank = conn.prepare_cached(if conn.is_pg() {
        "SELECT id, -ts_rank(fts, plainto_tsquery('postdesk', ?1)) AS score FROM articles WHERE fts @@ plainto_tsquery('postdesk', ?1) ORDER BY score, id LIMIT ?2"
    } else {
        "SELECT rowid, bm25(article_fts, 3.0, 1.0) AS score FROM article_fts WHERE article_fts MATCH ?1 ORDER BY score LIMIT ?2"
    })?;
    let mut ticket_of = conn.prepare_cached("SELECT ticket_id FROM articles WHERE id = ?")?;
    // Several messages of one ticket may match: ask for more rows until `limit` tickets (or all).
    let mut want = limit.saturating_mul(4).max(16);
    let best: Vec<(i64, i64, f64)> = loop {
        let rows: Vec<(i64, f64)> = rank.query_map(params![expr, want as i64], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_>>()?;
        let mut best = Vec::new();
        for (article, score) in &rows {
            let t: i64 = ticket_of.query_row([article], |r| r.get(0))?;
            if !best.iter().any(|(_, id, _)| *id == t) {
                best.push((*article, t, *score));
                if best.len() == limit {
                    break;
                }
            }
        }
        if best.len() == limit || rows.len() < want {
            break best;
        }
        want = want.saturating_mul(4);
    };
    let mut ticket = conn.prepare_cached("SELECT subject, status FROM tickets WHERE id = ?")?;
    let mut snippet = conn.prepare_cached(if conn.is_pg() {
        "SELECT ts_headline('postdesk', left(body_text, 65536), plainto_tsquery('postdesk', ?1), 'StartSel=*, StopSel=*, MaxWords=12, MinWords=4, FragmentDelimiter=\" … \"') FROM articles WHERE id = ?2"
    } else {
        "SELECT snippet(article_fts, -1, '*', '*', ' … ', 12) FROM article_fts WHERE article_fts MATCH ?1 AND rowid = ?2"
    })?;
    let mut out = Vec::with_capacity(best.len());
    for (article, id, score) in best {
        let (title, status): (String, String) = ticket.query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let snip: String = snippet.query_row(params![expr, article], |r| r.get(0)).optional()?.unwrap_or_default();
        out.push(SearchHit { kind: "ticket", id, title, status, snippet: crate::reference::one_line(&snip), score });
    }
    Ok(out)
}

/// Published articles containing every word, best first (ranked first, snippets for the shown).
fn search_kb(conn: &Conn, q: &Query, limit: usize) -> Result<Vec<SearchHit>> {
    let expr = if conn.is_pg() { q.text() } else { q.all() };
    let mut rank = conn.prepare_cached(if conn.is_pg() {
        "SELECT id, title, state, -ts_rank(fts, plainto_tsquery('postdesk', ?1)) AS score FROM kb_articles
         WHERE fts @@ plainto_tsquery('postdesk', ?1) AND state = 'published' ORDER BY score, id LIMIT ?2"
    } else {
        "SELECT k.id, k.title, k.state, bm25(kb_fts, 3.0, 1.0) AS score FROM kb_fts JOIN kb_articles k ON k.id = kb_fts.rowid
         WHERE kb_fts MATCH ?1 AND k.state = 'published' ORDER BY score LIMIT ?2"
    })?;
    let best: Vec<(i64, String, String, f64)> = rank.query_map(params![expr, limit as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?.collect::<Result<_>>()?;
    let mut snippet = conn.prepare_cached(if conn.is_pg() {
        "SELECT ts_headline('postdesk', body, plainto_tsquery('postdesk', ?1), 'StartSel=*, StopSel=*, MaxWords=12, MinWords=4, FragmentDelimiter=\" … \"') FROM kb_articles WHERE id = ?2"
    } else {
        "SELECT snippet(kb_fts, -1, '*', '*', ' … ', 12) FROM kb_fts WHERE kb_fts MATCH ?1 AND rowid = ?2"
    })?;
    let mut out = Vec::with_capacity(best.len());
    for (id, title, status, score) in best {
        let snip: String = snippet.query_row(params![expr, id], |r| r.get(0)).optional()?.unwrap_or_default();
        out.push(SearchHit { kind: "article", id, title, status, snippet: crate::reference::one_line(&snip), score });
    }
    Ok(out)
}

fn kb_article(conn: &Conn, id: i64) -> Result<Option<KbArticle>> {
    conn.prepare_cached(&format!("{KB_SELECT} WHERE id = ?"))?.query_row([id], kb_row).optional()
}

fn knowledge_figures(conn: &Conn, since: &str) -> Result<(u64, u64)> {
    let suggested: i64 = conn.query_row("SELECT COUNT(DISTINCT ticket_id) FROM kb_suggestions WHERE created_at >= ?", [since], |r| r.get(0))?;
    let deflected: i64 = conn.query_row("SELECT COUNT(*) FROM kb_deflections WHERE created_at >= ?", [since], |r| r.get(0))?;
    Ok((suggested as u64, deflected as u64))
}

impl Store {
    /// Tickets matching every word of `q` (agents and admins only: all tickets, notes included).
    pub fn search_tickets(&self, q: &Query, limit: usize) -> Result<Vec<SearchHit>> {
        search_tickets(&*self.lock()?, q, limit)
    }

    /// Published knowledge articles matching every word of `q`.
    pub fn search_kb(&self, q: &Query, limit: usize) -> Result<Vec<SearchHit>> {
        search_kb(&*self.lock()?, q, limit)
    }

    /// Knowledge articles, newest first; `all` includes unpublished solutions and withdrawn ones.
    pub fn kb_articles(&self, all: bool) -> Result<Vec<KbArticle>> {
        let conn = self.lock()?;
        let sql = format!("{KB_SELECT} {} ORDER BY id DESC", if all { "" } else { "WHERE state = 'published'" });
        let rows = conn.prepare(&sql)?.query_map((), kb_row)?.collect::<Result<Vec<_>>>()?;
        Ok(rows)
    }

    pub fn kb_article(&self, id: i64) -> Result<Option<KbArticle>> {
        kb_article(&*self.lock()?, id)
    }

    /// Tickets that got suggestions, and tickets deflected, since `since` (RFC 3339).
    pub fn knowledge_figures(&self, since: &str) -> Result<(u64, u64)> {
        knowledge_figures(&*self.lock()?, since)
    }

    /// The size of the search indexes in bytes (SQLite: FTS5 shadow tables, where `dbstat` can
    /// tell; PostgreSQL: the GIN indexes); `None` otherwise.
    pub fn search_index_bytes(&self) -> Result<Option<u64>> {
        let conn = self.lock()?;
        let sql = if conn.is_pg() {
            "SELECT CAST(pg_relation_size('articles_fts') + pg_relation_size('kb_articles_fts') AS BIGINT)"
        } else {
            "SELECT SUM(pgsize) FROM dbstat WHERE name LIKE 'article_fts%' OR name LIKE 'kb_fts%'"
        };
        let n: Result<i64> = conn.query_row(sql, (), |r| r.get(0));
        Ok(n.ok().map(|n| n as u64))
    }
}

impl Tx<'_> {
    pub fn knowledge_figures(&self, since: &str) -> Result<(u64, u64)> {
        knowledge_figures(&self.conn, since)
    }

    pub fn search_tickets(&self, q: &Query, limit: usize) -> Result<Vec<SearchHit>> {
        search_tickets(&self.conn, q, limit)
    }

    pub fn search_kb(&self, q: &Query, limit: usize) -> Result<Vec<SearchHit>> {
        search_kb(&self.conn, q, limit)
    }

    pub fn kb_article(&self, id: i64) -> Result<Option<KbArticle>> {
        kb_article(&self.conn, id)
    }

    /// The solution recorded on `ticket`, whatever its state.
    pub fn solution_of(&self, ticket: TicketId) -> Result<Option<KbArticle>> {
        self.conn.prepare_cached(&format!("{KB_SELECT} WHERE ticket_id = ?"))?.query_row([ticket], kb_row).optional()
    }

    /// Record (or replace the text of) `ticket`'s solution. A published one stays published with
    /// the new text (the index follows); a withdrawn one becomes a solution again.
    pub fn set_solution(&mut self, ticket: TicketId, title: &str, body: &str, author: &str, now: &str) -> Result<i64> {
        self.conn.query_row(
            "INSERT INTO kb_articles (ticket_id, title, body, state, author, created_at, updated_at) VALUES (?1, ?2, ?3, 'solution', ?4, ?5, ?5)
             ON CONFLICT (ticket_id) DO UPDATE SET body = excluded.body, author = excluded.author, updated_at = excluded.updated_at,
               state = CASE WHEN kb_articles.state = 'withdrawn' THEN 'solution' ELSE kb_articles.state END
             RETURNING id",
            params![ticket, title, body, author, now],
            |r| r.get(0),
        )
    }

    /// Publish article `id` (optionally under a new title). False if there is no such article.
    pub fn publish_kb(&mut self, id: i64, title: Option<&str>, by: &str, now: &str) -> Result<bool> {
        Ok(self.conn.execute(
            "UPDATE kb_articles SET state = 'published', title = coalesce(?2, title), published_at = ?4, published_by = ?3, updated_at = ?4 WHERE id = ?1",
            params![id, title, by, now],
        )? == 1)
    }

    /// Withdraw article `id`. False if there is no such article.
    pub fn withdraw_kb(&mut self, id: i64, now: &str) -> Result<bool> {
        Ok(self.conn.execute("UPDATE kb_articles SET state = 'withdrawn', updated_at = ?2 WHERE id = ?1", params![id, now])? == 1)
    }

    /// Whether any article is published (suggestions cost nothing without one).
    pub fn has_published_kb(&self) -> Result<bool> {
        self.conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM kb_articles WHERE state = 'published')")?.query_row((), |r| r.get(0))
    }

    /// Published articles sharing at least `min_terms` of `terms`, most shared words first, then
    /// by bm25; at most `max`.
    pub fn suggest_kb(&self, terms: &[String], min_terms: usize, max: usize) -> Result<Vec<Suggested>> {
        if terms.is_empty() || max == 0 {
            return Ok(Vec::new());
        }
        // bm25 of the OR of all words orders the candidates; each word's own match set counts
        // the words an article shares (bm25 alone is no confidence: with one published article
        // every IDF is zero).
        let pg = self.conn.is_pg();
        // Terms are letters and digits only (search::suggestion_terms), so `a | b` is a tsquery.
        let term = |t: &String| if pg { t.clone() } else { crate::search::quote(t) };
        let any = terms.iter().map(term).collect::<Vec<_>>().join(if pg { " | " } else { " OR " });
        let mut stmt = self.conn.prepare_cached(if pg {
            "SELECT id, -ts_rank(fts, to_tsquery('postdesk', ?1)) AS score FROM kb_articles WHERE fts @@ to_tsquery('postdesk', ?1) ORDER BY score, id LIMIT 50"
        } else {
            "SELECT rowid, bm25(kb_fts, 3.0, 1.0) AS score FROM kb_fts WHERE kb_fts MATCH ?1 ORDER BY score LIMIT 50"
        })?;
        let candidates: Vec<(i64, f64)> = stmt.query_map([any], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<Vec<_>>>()?;
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let mut matched: BTreeMap<i64, usize> = BTreeMap::new();
        let mut per_term = self.conn.prepare_cached(if pg {
            "SELECT id FROM kb_articles WHERE fts @@ plainto_tsquery('postdesk', ?1)"
        } else {
            "SELECT rowid FROM kb_fts WHERE kb_fts MATCH ?1"
        })?;
        for t in terms {
            for id in per_term.query_map([term(t)], |r| r.get::<_, i64>(0))? {
                *matched.entry(id?).or_default() += 1;
            }
        }
        let mut ranked: Vec<(usize, f64, i64)> = candidates.iter().map(|(id, s)| (matched.get(id).copied().unwrap_or(0), *s, *id)).filter(|(m, _, _)| *m >= min_terms.max(1)).collect();
        ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut out = Vec::new();
        for (m, _, id) in ranked.into_iter().take(max) {
            if let Some(a) = kb_article(&self.conn, id)?.filter(|a| a.state == KbState::Published) {
                out.push(Suggested { id, title: a.title, body: a.body, rank: out.len() + 1, matched: m });
            }
        }
        Ok(out)
    }

    /// Record what a ticket's acknowledgement suggested.
    pub fn record_suggestions(&mut self, ticket: TicketId, s: &[Suggested], now: &str) -> Result<()> {
        let mut stmt = self.conn.prepare_cached("INSERT INTO kb_suggestions (ticket_id, article_id, rank, matched, created_at) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (ticket_id, article_id) DO UPDATE SET rank = excluded.rank, matched = excluded.matched, created_at = excluded.created_at")?;
        for a in s {
            stmt.execute(params![ticket, a.id, a.rank as i64, a.matched as i64, now])?;
        }
        Ok(())
    }

    /// The articles suggested for `ticket`, best first (ids).
    pub fn suggestions_of(&self, ticket: TicketId) -> Result<Vec<i64>> {
        let rows = self.conn.prepare_cached("SELECT article_id FROM kb_suggestions WHERE ticket_id = ? ORDER BY rank")?.query_map([ticket], |r| r.get(0))?.collect::<Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Count `ticket` as deflected (once).
    pub fn record_deflection(&mut self, ticket: TicketId, now: &str) -> Result<()> {
        self.conn.execute("INSERT INTO kb_deflections (ticket_id, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING", params![ticket, now])?;
        Ok(())
    }
}
