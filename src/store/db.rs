//! One connection to either backend, with the handful of calls the domain code needs: prepared
//! (and cached) statements, positional parameters, typed columns. The domain SQL is written once
//! in the dialect both databases speak (`ON CONFLICT`, `RETURNING`, `coalesce`, `?N` parameters,
//! which PostgreSQL sees as `$N`); the few places that differ ask [`Conn::is_pg`].
//!
//! PostgreSQL runs through tokio-postgres: the connection's I/O lives on a small runtime of the
//! store's own, and the calls here wait for their answers with `futures::executor::block_on`,
//! which needs no runtime — so the store stays synchronous and callable from anywhere, like
//! SQLite (the daemon calls it from its tasks and from blocking threads alike).

use super::{Result, StoreError};
use std::cell::RefCell;
use std::collections::HashMap;

/// A parameter value, borrowed from the caller.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a str),
    Blob(&'a [u8]),
}

/// Something that can be bound to a `?N` parameter on both backends.
pub trait Param {
    fn value(&self) -> Value<'_>;
}

macro_rules! int_param {
    ($($t:ty),*) => {$(
        impl Param for $t {
            fn value(&self) -> Value<'_> {
                Value::Int(*self as i64)
            }
        }
    )*};
}
int_param!(i64, i32, u32, u16, u8, usize, u64);

impl Param for bool {
    fn value(&self) -> Value<'_> {
        Value::Int(*self as i64)
    }
}
impl Param for f64 {
    fn value(&self) -> Value<'_> {
        Value::Real(*self)
    }
}
impl Param for str {
    fn value(&self) -> Value<'_> {
        Value::Text(self)
    }
}
impl Param for String {
    fn value(&self) -> Value<'_> {
        Value::Text(self)
    }
}
impl Param for std::borrow::Cow<'_, str> {
    fn value(&self) -> Value<'_> {
        Value::Text(self)
    }
}
impl Param for [u8] {
    fn value(&self) -> Value<'_> {
        Value::Blob(self)
    }
}
impl Param for Vec<u8> {
    fn value(&self) -> Value<'_> {
        Value::Blob(self)
    }
}
impl<T: Param + ?Sized> Param for &T {
    fn value(&self) -> Value<'_> {
        (**self).value()
    }
}
impl<T: Param> Param for Option<T> {
    fn value(&self) -> Value<'_> {
        match self {
            Some(v) => v.value(),
            None => Value::Null,
        }
    }
}

/// The parameters of one statement.
pub trait Params {
    fn values(&self) -> Vec<Value<'_>>;
}
impl Params for () {
    fn values(&self) -> Vec<Value<'_>> {
        Vec::new()
    }
}
impl<T: Param, const N: usize> Params for [T; N] {
    fn values(&self) -> Vec<Value<'_>> {
        self.iter().map(Param::value).collect()
    }
}
impl Params for &[&dyn Param] {
    fn values(&self) -> Vec<Value<'_>> {
        self.iter().map(|p| p.value()).collect()
    }
}
impl<T: Param> Params for Vec<T> {
    fn values(&self) -> Vec<Value<'_>> {
        self.iter().map(Param::value).collect()
    }
}

/// `params![a, b, c]`: parameters of mixed types.
macro_rules! params {
    ($($p:expr),* $(,)?) => {
        &[$(&$p as &dyn $crate::store::db::Param),*] as &[&dyn $crate::store::db::Param]
    };
}
pub(crate) use params;

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match *self {
            Value::Null => ValueRef::Null,
            Value::Int(i) => ValueRef::Integer(i),
            Value::Real(f) => ValueRef::Real(f),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

impl postgres_types::ToSql for Value<'_> {
    fn to_sql(&self, ty: &postgres_types::Type, out: &mut bytes::BytesMut) -> std::result::Result<postgres_types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use postgres_types::{IsNull, Type};
        match *self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(i)?.to_sql(ty, out),
                Type::BOOL => (i != 0).to_sql(ty, out),
                Type::FLOAT8 => (i as f64).to_sql(ty, out),
                Type::FLOAT4 => (i as f32).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => i.to_string().as_str().to_sql(ty, out),
                _ => Err(format!("integer parameter for a {ty} column").into()),
            },
            Value::Real(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                Type::FLOAT4 => (f as f32).to_sql(ty, out),
                _ => Err(format!("real parameter for a {ty} column").into()),
            },
            // PostgreSQL text cannot hold NUL (SQLite can): a decoded mail with one keeps the
            // rest of its text, the NUL shown as U+FFFD.
            Value::Text(s) if s.contains('\0') => s.replace('\0', "\u{FFFD}").as_str().to_sql(ty, out),
            Value::Text(s) => s.to_sql(ty, out),
            Value::Blob(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(_: &postgres_types::Type) -> bool {
        true
    }

    postgres_types::to_sql_checked!();
}

/// A column type both backends read the same way. Integers are BIGINT on PostgreSQL (0/1 for
/// flags), as SQLite stores them.
pub trait Col: Sized {
    fn lite(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Self>;
    fn pg(r: &tokio_postgres::Row, i: usize) -> Result<Self>;
}

fn pg_int(r: &tokio_postgres::Row, i: usize) -> Result<Option<i64>> {
    use postgres_types::Type;
    Ok(match *r.columns()[i].type_() {
        Type::INT4 => r.try_get::<_, Option<i32>>(i)?.map(i64::from),
        Type::INT2 => r.try_get::<_, Option<i16>>(i)?.map(i64::from),
        Type::BOOL => r.try_get::<_, Option<bool>>(i)?.map(i64::from),
        _ => r.try_get::<_, Option<i64>>(i)?,
    })
}

fn bad_column(r: &tokio_postgres::Row, i: usize, problem: &str) -> StoreError {
    StoreError::Column(format!("column {} ({}): {problem}", r.columns()[i].name(), r.columns()[i].type_()))
}

macro_rules! int_col {
    ($($t:ty),*) => {$(
        impl Col for $t {
            fn lite(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Self> {
                r.get(i)
            }
            fn pg(r: &tokio_postgres::Row, i: usize) -> Result<Self> {
                let v = pg_int(r, i)?.ok_or_else(|| bad_column(r, i, "NULL"))?;
                <$t>::try_from(v).map_err(|_| bad_column(r, i, "out of range"))
            }
        }
    )*};
}
int_col!(i64, i32, u32, u16, u8, u64, usize);

impl Col for bool {
    fn lite(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Self> {
        r.get(i)
    }
    fn pg(r: &tokio_postgres::Row, i: usize) -> Result<Self> {
        Ok(pg_int(r, i)?.ok_or_else(|| bad_column(r, i, "NULL"))? != 0)
    }
}
impl Col for f64 {
    fn lite(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Self> {
        r.get(i)
    }
    fn pg(r: &tokio_postgres::Row, i: usize) -> Result<Self> {
        use postgres_types::Type;
        match *r.columns()[i].type_() {
            Type::FLOAT4 => Ok(r.try_get::<_, f32>(i)? as f64),
            Type::INT8 | Type::INT4 | Type::INT2 => Ok(pg_int(r, i)?.ok_or_else(|| bad_column(r, i, "NULL"))? as f64),
            _ => Ok(r.try_get(i)?),
        }
    }
}
impl Col for String {
    fn lite(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Self> {
        r.get(i)
    }
    fn pg(r: &tokio_postgres::Row, i: usize) -> Result<Self> {
        Ok(r.try_get(i)?)
    }
}
impl Col for Vec<u8> {
    fn lite(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Self> {
        r.get(i)
    }
    fn pg(r: &tokio_postgres::Row, i: usize) -> Result<Self> {
        Ok(r.try_get(i)?)
    }
}
impl<T: Col> Col for Option<T> {
    fn lite(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Self> {
        match r.get_ref(i)? {
            rusqlite::types::ValueRef::Null => Ok(None),
            _ => T::lite(r, i).map(Some),
        }
    }
    fn pg(r: &tokio_postgres::Row, i: usize) -> Result<Self> {
        match r.try_get::<_, Option<RawValue>>(i)? {
            None => Ok(None),
            Some(_) => T::pg(r, i).map(Some),
        }
    }
}

/// Any non-NULL value, to tell NULL apart without knowing the type.
struct RawValue;
impl<'a> postgres_types::FromSql<'a> for RawValue {
    fn from_sql(_: &postgres_types::Type, _: &'a [u8]) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawValue)
    }
    fn accepts(_: &postgres_types::Type) -> bool {
        true
    }
}

/// A column number (from 0).
pub trait RowIndex {
    fn index(self) -> usize;
}
impl RowIndex for usize {
    fn index(self) -> usize {
        self
    }
}

/// One result row.
pub enum Row<'a> {
    Lite(&'a rusqlite::Row<'a>),
    Pg(&'a tokio_postgres::Row),
}

impl Row<'_> {
    /// Column `i` (from 0). `r.get::<_, T>(i)` as with rusqlite.
    pub fn get<I: RowIndex, T: Col>(&self, i: I) -> Result<T> {
        let i = i.index();
        match self {
            Row::Lite(r) => Ok(T::lite(r, i)?),
            Row::Pg(r) => T::pg(r, i),
        }
    }
}

/// A connection to SQLite or PostgreSQL.
pub enum Conn {
    Lite(rusqlite::Connection),
    Pg(PgConn),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_pg() { "Conn::Pg" } else { "Conn::Lite" })
    }
}

/// A prepared statement of either backend.
pub enum Stmt<'c> {
    Lite(rusqlite::CachedStatement<'c>),
    Lone(rusqlite::Statement<'c>),
    Pg(&'c PgConn, tokio_postgres::Statement),
}

impl Conn {
    pub fn is_pg(&self) -> bool {
        matches!(self, Conn::Pg(_))
    }

    /// The SQLite connection (SQLite-only features: online backup, pragmas).
    pub fn lite(&self) -> Option<&rusqlite::Connection> {
        match self {
            Conn::Lite(c) => Some(c),
            Conn::Pg(_) => None,
        }
    }

    /// A statement prepared once per connection.
    pub fn prepare_cached(&self, sql: &str) -> Result<Stmt<'_>> {
        match self {
            Conn::Lite(c) => Ok(Stmt::Lite(c.prepare_cached(sql)?)),
            Conn::Pg(p) => Ok(Stmt::Pg(p, p.prepare(sql, true)?)),
        }
    }

    /// A statement used once (built text, e.g. a filter with a variable number of terms).
    pub fn prepare(&self, sql: &str) -> Result<Stmt<'_>> {
        match self {
            Conn::Lite(c) => Ok(Stmt::Lone(c.prepare(sql)?)),
            Conn::Pg(p) => Ok(Stmt::Pg(p, p.prepare(sql, false)?)),
        }
    }

    pub fn execute<P: Params>(&self, sql: &str, p: P) -> Result<usize> {
        self.prepare_cached(sql)?.execute(p)
    }

    pub fn query_row<P: Params, T>(&self, sql: &str, p: P, f: impl FnOnce(&Row<'_>) -> Result<T>) -> Result<T> {
        self.prepare_cached(sql)?.query_row(p, f)
    }

    /// Several statements without parameters (BEGIN, COMMIT, schema).
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        match self {
            Conn::Lite(c) => Ok(c.execute_batch(sql)?),
            Conn::Pg(p) => p.batch(sql),
        }
    }

    /// Start the write transaction: SQLite's write lock (`BEGIN IMMEDIATE`); on PostgreSQL a
    /// transaction holding the desk's write lock (an advisory transaction lock), so writers
    /// take turns across nodes as they do in one SQLite file, and every read-then-write in a
    /// transaction (threading, dedupe, ticket numbers) sees the previous writer's commit.
    pub fn begin_write(&self) -> Result<()> {
        match self {
            Conn::Lite(c) => Ok(c.execute_batch("BEGIN IMMEDIATE")?),
            Conn::Pg(p) => p.batch(&format!("BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})")),
        }
    }
}

/// The advisory lock key of the desk's write transactions ("PDWRITE" in ASCII).
pub const WRITE_LOCK: i64 = 0x50_44_57_52_49_54_45;

impl Stmt<'_> {
    pub fn execute<P: Params>(&mut self, p: P) -> Result<usize> {
        let v = p.values();
        match self {
            Stmt::Lite(s) => Ok(s.execute(rusqlite::params_from_iter(v.iter()))?),
            Stmt::Lone(s) => Ok(s.execute(rusqlite::params_from_iter(v.iter()))?),
            Stmt::Pg(c, s) => c.execute(s, &v),
        }
    }

    /// Exactly one row is expected: none is `StoreError::NoRows` (see [`OptionalExtension`]).
    pub fn query_row<P: Params, T>(&mut self, p: P, f: impl FnOnce(&Row<'_>) -> Result<T>) -> Result<T> {
        let v = p.values();
        match self {
            Stmt::Lite(s) => lite_first(s, &v, f),
            Stmt::Lone(s) => lite_first(s, &v, f),
            Stmt::Pg(c, s) => {
                let rows = c.query(s, &v)?;
                let r = rows.first().ok_or(StoreError::NoRows)?;
                f(&Row::Pg(r))
            }
        }
    }

    /// Every row, mapped; read whole before returning.
    pub fn query_map<P: Params, T>(&mut self, p: P, mut f: impl FnMut(&Row<'_>) -> Result<T>) -> Result<std::vec::IntoIter<Result<T>>> {
        let v = p.values();
        let out: Vec<Result<T>> = match self {
            Stmt::Lite(s) => lite_all(s, &v, f)?,
            Stmt::Lone(s) => lite_all(s, &v, f)?,
            Stmt::Pg(c, s) => c.query(s, &v)?.iter().map(|r| f(&Row::Pg(r))).collect(),
        };
        Ok(out.into_iter())
    }
}

fn lite_first<T>(s: &mut rusqlite::Statement<'_>, v: &[Value<'_>], f: impl FnOnce(&Row<'_>) -> Result<T>) -> Result<T> {
    let mut rows = s.query(rusqlite::params_from_iter(v.iter()))?;
    match rows.next()? {
        Some(r) => f(&Row::Lite(r)),
        None => Err(StoreError::NoRows),
    }
}

fn lite_all<T>(s: &mut rusqlite::Statement<'_>, v: &[Value<'_>], mut f: impl FnMut(&Row<'_>) -> Result<T>) -> Result<Vec<Result<T>>> {
    let mut rows = s.query(rusqlite::params_from_iter(v.iter()))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(f(&Row::Lite(r)));
    }
    Ok(out)
}

/// `.optional()` on a one-row query: no row is `None`.
pub trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>>;
}
impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(StoreError::NoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A PostgreSQL connection: the client, its I/O task on the store's runtime, and the
/// statements prepared on it.
pub struct PgConn {
    client: tokio_postgres::Client,
    cache: RefCell<HashMap<String, tokio_postgres::Statement>>,
}

/// The runtime that drives every PostgreSQL connection's socket (one thread).
fn pg_runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("postdesk-pg")
            .enable_all()
            .build()
            .expect("a thread for the PostgreSQL connections")
    })
}

/// A connection's socket I/O, until it ends.
async fn drive(connection: impl std::future::Future<Output = std::result::Result<(), tokio_postgres::Error>>) {
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "PostgreSQL connection ended");
    }
}

/// How long connecting may take before it counts as the database being unreachable.
const PG_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl PgConn {
    pub fn connect(url: &str) -> std::result::Result<PgConn, tokio_postgres::Error> {
        let mut config: tokio_postgres::Config = url.parse()?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(PG_CONNECT_TIMEOUT);
        }
        // A dead peer behind a silent network (a cut cable, a killed VM) is found within about
        // 30 s: keepalives, and a limit on unacknowledged data.
        config
            .keepalives(true)
            .keepalives_idle(std::time::Duration::from_secs(10))
            .keepalives_interval(std::time::Duration::from_secs(5))
            .keepalives_retries(3)
            .tcp_user_timeout(std::time::Duration::from_secs(30));
        // The server ends a session that sits in an open transaction (a node cut off or stopped
        // mid-write) so its write lock and lease row go to the others; no statement of ours runs
        // for minutes.
        if config.get_options().is_none() {
            config.options("-c idle_in_transaction_session_timeout=10s -c statement_timeout=300s");
        }
        config.application_name("postdesk");
        // TLS as the URL's sslmode says (`prefer` by default: TLS when the server offers it;
        // `require` refuses a server without it), verified against the system's roots.
        let tls = crate::intake::tls::client_config(None).map(tokio_postgres_rustls::MakeRustlsConnect::new);
        let task = pg_runtime().spawn(async move {
            let client = match tls {
                Ok(tls) => {
                    let (client, connection) = config.connect(tls).await?;
                    tokio::spawn(drive(connection));
                    client
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no TLS settings for PostgreSQL; connecting without TLS");
                    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
                    tokio::spawn(drive(connection));
                    client
                }
            };
            Ok::<_, tokio_postgres::Error>(client)
        });
        let client = futures::executor::block_on(task).expect("the PostgreSQL connect task does not panic")?;
        Ok(PgConn { client, cache: RefCell::new(HashMap::new()) })
    }

    /// The connection is gone (server restarted, network cut): open a new one.
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    fn prepare(&self, sql: &str, cache: bool) -> Result<tokio_postgres::Statement> {
        if let Some(s) = self.cache.borrow().get(sql) {
            return Ok(s.clone());
        }
        let s = futures::executor::block_on(self.client.prepare(&dollar_params(sql)))?;
        if cache {
            self.cache.borrow_mut().insert(sql.to_string(), s.clone());
        }
        Ok(s)
    }

    fn execute(&self, s: &tokio_postgres::Statement, v: &[Value<'_>]) -> Result<usize> {
        let args: Vec<&(dyn postgres_types::ToSql + Sync)> = v.iter().map(|x| x as _).collect();
        Ok(futures::executor::block_on(self.client.execute(s, &args))? as usize)
    }

    fn query(&self, s: &tokio_postgres::Statement, v: &[Value<'_>]) -> Result<Vec<tokio_postgres::Row>> {
        let args: Vec<&(dyn postgres_types::ToSql + Sync)> = v.iter().map(|x| x as _).collect();
        Ok(futures::executor::block_on(self.client.query(s, &args))?)
    }

    fn batch(&self, sql: &str) -> Result<()> {
        Ok(futures::executor::block_on(self.client.batch_execute(sql))?)
    }
}

/// SQLite's `?N` and `?` parameters as PostgreSQL's `$N` (a bare `?` is one more than the
/// largest number so far, as in SQLite). Quoted text and identifiers are left alone.
pub fn dollar_params(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let (mut max, mut quote) = (0u32, None::<char>);
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => {
                quote = None;
                out.push(c);
            }
            (Some(_), c) => out.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                out.push(c);
            }
            (None, '?') => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                let n = digits.parse().unwrap_or(max + 1);
                max = max.max(n);
                out.push('$');
                out.push_str(&n.to_string());
            }
            (None, c) => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_numbered_as_sqlite_numbers_them() {
        assert_eq!(dollar_params("SELECT ?, ?"), "SELECT $1, $2");
        assert_eq!(dollar_params("UPDATE t SET a = ?2 WHERE id = ?1 AND b = ?"), "UPDATE t SET a = $2 WHERE id = $1 AND b = $3");
        assert_eq!(dollar_params("SELECT '?', \"x?\" FROM t WHERE a = ?"), "SELECT '?', \"x?\" FROM t WHERE a = $1");
        assert_eq!(dollar_params("SELECT 'it''s ?' WHERE a = ?"), "SELECT 'it''s ?' WHERE a = $1");
    }

    #[test]
    fn sqlite_rows_read_through_the_common_types() {
        let c = Conn::Lite(rusqlite::Connection::open_in_memory().unwrap());
        c.execute_batch("CREATE TABLE t (a INTEGER, b TEXT, c BLOB)").unwrap();
        c.execute("INSERT INTO t VALUES (?1, ?2, ?3)", params![7i64, "x", b"yz".as_slice()]).unwrap();
        c.execute("INSERT INTO t VALUES (?1, ?2, ?3)", params![None::<i64>, None::<String>, None::<Vec<u8>>]).unwrap();
        type Nullable = (Option<i64>, Option<String>, Option<Vec<u8>>);
        let rows: Vec<Nullable> =
            c.prepare_cached("SELECT a, b, c FROM t ORDER BY rowid").unwrap().query_map((), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().collect::<Result<_>>().unwrap();
        assert_eq!(rows, vec![(Some(7), Some("x".into()), Some(b"yz".to_vec())), (None, None, None)]);
        assert!(matches!(c.query_row("SELECT a FROM t WHERE a = 99", (), |r| r.get::<_, i64>(0)), Err(StoreError::NoRows)));
        assert_eq!(c.query_row("SELECT a FROM t WHERE a = 99", (), |r| r.get::<_, i64>(0)).optional().unwrap(), None);
    }
}
