//! `postdesk migrate --to postgres://…`: copy an SQLite desk into an empty PostgreSQL database,
//! table by table in foreign-key order, in ONE PostgreSQL transaction (all or nothing), then
//! read both sides again and compare row counts and a SHA-256 of every row's values, in key
//! order. Search indexes are not copied: PostgreSQL's are filled by its triggers as rows arrive.

use super::db::{Conn, Value};
use super::*;
use sha2::{Digest, Sha256};

/// One copied table: rows and the checksum both sides agree on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopiedTable {
    pub table: String,
    pub rows: u64,
    pub sha256: String,
}

/// What the copy is doing, for a progress line on a terminal.
pub enum Progress<'a> {
    Copying { table: &'a str, done: u64, total: u64 },
    Verified(&'a CopiedTable),
}

/// An owned column value (SQLite reads).
#[derive(Debug, Clone)]
enum Owned {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Owned {
    fn value(&self) -> Value<'_> {
        match self {
            Owned::Null => Value::Null,
            Owned::Int(i) => Value::Int(*i),
            Owned::Real(f) => Value::Real(*f),
            Owned::Text(s) => Value::Text(s),
            Owned::Blob(b) => Value::Blob(b),
        }
    }

    /// Feed the value to a checksum: a type tag, then its bytes with their length.
    fn hash(&self, h: &mut Sha256) {
        match self {
            Owned::Null => h.update([0]),
            Owned::Int(i) => {
                h.update([1]);
                h.update(i.to_le_bytes());
            }
            Owned::Real(f) => {
                h.update([2]);
                h.update(f.to_le_bytes());
            }
            Owned::Text(s) => {
                h.update([3]);
                h.update((s.len() as u64).to_le_bytes());
                h.update(s.as_bytes());
            }
            Owned::Blob(b) => {
                h.update([4]);
                h.update((b.len() as u64).to_le_bytes());
                h.update(b);
            }
        }
    }
}

impl Store {
    /// Copy this SQLite desk into the empty PostgreSQL desk `to` and verify it.
    pub fn copy_to(&self, to: &Store, progress: &mut dyn FnMut(Progress<'_>)) -> Result<Vec<CopiedTable>> {
        if self.is_postgres() || !to.is_postgres() {
            return Err(StoreError::Unsupported("migrate copies an SQLite desk into PostgreSQL"));
        }
        // Sent marks still in the sent log go into the outbox first.
        self.fold_sent()?;
        let src = self.lock()?;
        let lite = src.lite().expect("SQLite");
        let dst = to.lock()?;
        let tables = copy_order(lite)?;
        let used: i64 = dst.query_row("SELECT (SELECT count(*) FROM tickets) + (SELECT count(*) FROM outbox) + (SELECT count(*) FROM quarantine)", (), |r| r.get(0))?;
        if used > 0 {
            return Err(StoreError::Unsupported("the PostgreSQL database already holds a desk; migrate into an empty one"));
        }
        // Reading a large desk back for the checksums may take longer than a daemon's statements.
        dst.execute_batch("SET statement_timeout = 0")?;
        dst.begin_write()?;
        let copied = (|| {
            let mut out = Vec::new();
            for t in &tables {
                let cols = common_columns(lite, &dst, t)?;
                if cols.is_empty() {
                    continue;
                }
                let rows = copy_table(lite, &dst, t, &cols, progress)?;
                out.push((t.clone(), cols, rows));
            }
            reset_identities(&dst)?;
            Ok(out)
        })();
        let copied = match copied {
            Ok(c) => {
                dst.execute_batch("COMMIT")?;
                c
            }
            Err(e) => {
                let _ = dst.execute_batch("ROLLBACK");
                return Err(e);
            }
        };
        let mut verified = Vec::new();
        for (t, cols, rows) in copied {
            let a = checksum(&src, &t, &cols)?;
            let b = checksum(&dst, &t, &cols)?;
            if a != b || a.0 != rows {
                return Err(StoreError::Column(format!("table {t}: {} rows (sha256 {}) in SQLite, {} rows (sha256 {}) in PostgreSQL", a.0, a.1, b.0, b.1)));
            }
            let c = CopiedTable { table: t, rows: a.0, sha256: a.1 };
            progress(Progress::Verified(&c));
            verified.push(c);
        }
        Ok(verified)
    }
}

/// The desk's tables, parents before children (foreign keys), the sent log last.
fn copy_order(lite: &rusqlite::Connection) -> Result<Vec<String>> {
    let mut names: Vec<String> = lite
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '%fts%' ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut order = Vec::new();
    while !names.is_empty() {
        let before = names.len();
        let mut i = 0;
        while i < names.len() {
            let parents: Vec<String> =
                lite.prepare(&format!("SELECT \"table\" FROM pragma_foreign_key_list('{}')", names[i]))?.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
            if parents.iter().all(|p| p == &names[i] || order.contains(p) || !names.contains(p)) {
                order.push(names.remove(i));
            } else {
                i += 1;
            }
        }
        if names.len() == before {
            order.append(&mut names); // a cycle: keep going, the copy will say which row fails
        }
    }
    Ok(order)
}

/// Columns both sides have (PostgreSQL's own, like `fts` or the claim columns, are left to it).
fn common_columns(lite: &rusqlite::Connection, pg: &Conn, table: &str) -> Result<Vec<String>> {
    let lite_cols: Vec<String> = lite.prepare(&format!("SELECT name FROM pragma_table_info('{table}') ORDER BY cid"))?.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
    let pg_cols: Vec<String> = pg
        .prepare("SELECT column_name::text FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = ?1")?
        .query_map([table], |r| r.get(0))?
        .collect::<Result<_>>()?;
    Ok(lite_cols.into_iter().filter(|c| pg_cols.contains(c)).collect())
}

fn read_row(r: &rusqlite::Row<'_>, n: usize) -> rusqlite::Result<Vec<Owned>> {
    use rusqlite::types::ValueRef;
    (0..n)
        .map(|i| {
            Ok(match r.get_ref(i)? {
                ValueRef::Null => Owned::Null,
                ValueRef::Integer(v) => Owned::Int(v),
                ValueRef::Real(v) => Owned::Real(v),
                ValueRef::Text(t) => Owned::Text(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Blob(b) => Owned::Blob(b.to_vec()),
            })
        })
        .collect()
}

fn quoted(cols: &[String]) -> String {
    cols.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ")
}

fn copy_table(lite: &rusqlite::Connection, pg: &Conn, table: &str, cols: &[String], progress: &mut dyn FnMut(Progress<'_>)) -> Result<u64> {
    let total: u64 = lite.query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |r| r.get::<_, i64>(0))? as u64;
    let marks = (1..=cols.len()).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
    let mut insert = pg.prepare_cached(&format!("INSERT INTO {table} ({}) VALUES ({marks})", quoted(cols)))?;
    let mut select = lite.prepare(&format!("SELECT {} FROM \"{table}\" ORDER BY {}", quoted(cols), key_order(lite, table)?))?;
    let mut rows = select.query([])?;
    let mut done = 0u64;
    while let Some(r) = rows.next()? {
        let row = read_row(r, cols.len())?;
        let values: Vec<Value<'_>> = row.iter().map(Owned::value).collect();
        insert.execute(values)?;
        done += 1;
        if done.is_multiple_of(500) || done == total {
            progress(Progress::Copying { table, done, total });
        }
    }
    Ok(done)
}

impl super::db::Params for Vec<Value<'_>> {
    fn values(&self) -> Vec<Value<'_>> {
        self.clone()
    }
}

/// The primary key's columns (rowid order for tables without one).
fn key_order(lite: &rusqlite::Connection, table: &str) -> Result<String> {
    let pk: Vec<String> = lite.prepare(&format!("SELECT name FROM pragma_table_info('{table}') WHERE pk > 0 ORDER BY pk"))?.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
    Ok(if pk.is_empty() { "rowid".into() } else { quoted(&pk) })
}

/// Identity columns continue after the copied ids.
fn reset_identities(pg: &Conn) -> Result<()> {
    let tables: Vec<String> = pg
        .prepare("SELECT table_name::text FROM information_schema.columns WHERE table_schema = current_schema() AND column_name = 'id' AND is_identity = 'YES'")?
        .query_map((), |r| r.get(0))?
        .collect::<Result<_>>()?;
    for t in tables {
        pg.execute_batch(&format!("SELECT setval(pg_get_serial_sequence('{t}', 'id'), coalesce((SELECT max(id) FROM {t}), 0) + 1, false)"))?;
    }
    Ok(())
}

/// Rows and SHA-256 of a table's values in key order, read the same way on both sides.
fn checksum(conn: &Conn, table: &str, cols: &[String]) -> Result<(u64, String)> {
    let order = match conn.lite() {
        Some(l) => key_order(l, table)?,
        None => pg_key_order(conn, table)?,
    };
    let mut stmt = conn.prepare(&format!("SELECT {} FROM {table} ORDER BY {order}", quoted(cols)))?;
    let mut h = Sha256::new();
    let mut n = 0u64;
    for row in stmt.query_map((), |r| read_any(r, cols.len()))? {
        for v in row? {
            v.hash(&mut h);
        }
        n += 1;
    }
    Ok((n, hex::encode(h.finalize())))
}

fn pg_key_order(pg: &Conn, table: &str) -> Result<String> {
    let pk: Vec<String> = pg
        .prepare(
            "SELECT a.attname::text FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
             WHERE i.indrelid = to_regclass(?1) AND i.indisprimary ORDER BY array_position(i.indkey::int2[], a.attnum)",
        )?
        .query_map([table], |r| r.get(0))?
        .collect::<Result<_>>()?;
    Ok(if pk.is_empty() { "1".into() } else { quoted(&pk) })
}

/// A row's values as owned values, whatever the backend (NULL, integer, real, text, bytes).
fn read_any(r: &super::db::Row<'_>, n: usize) -> Result<Vec<Owned>> {
    (0..n)
        .map(|i| {
            if let Ok(v) = r.get::<_, Option<i64>>(i) {
                return Ok(v.map_or(Owned::Null, Owned::Int));
            }
            if let Ok(v) = r.get::<_, Option<String>>(i) {
                return Ok(v.map_or(Owned::Null, Owned::Text));
            }
            if let Ok(v) = r.get::<_, Option<Vec<u8>>>(i) {
                return Ok(v.map_or(Owned::Null, Owned::Blob));
            }
            Ok(r.get::<_, Option<f64>>(i)?.map_or(Owned::Null, Owned::Real))
        })
        .collect()
}
