//! The SQLite and PostgreSQL migrations are written twice, once per dialect: after
//! both have run, the two databases must declare the same tables, the same columns
//! (with the same kind of value and the same NOT NULL), and the same indexes.

mod common;

use std::collections::BTreeMap;

use common::{Kind, TestDb};
use sqlx::any::AnyConnectOptions;
use sqlx::{AnyConnection, Connection};

/// table -> column -> (kind of value, NOT NULL)
type Columns = BTreeMap<String, BTreeMap<String, (&'static str, bool)>>;

/// A declared type as the kind of value it holds; both dialects spell these
/// differently (INTEGER / BIGINT, REAL / DOUBLE PRECISION, BLOB / BYTEA).
fn kind_of(declared: &str) -> &'static str {
    let t = declared.to_ascii_lowercase();
    if t.contains("int") {
        "integer"
    } else if t.contains("char") || t.contains("text") {
        "text"
    } else if t.contains("real") || t.contains("double") || t.contains("float") {
        "real"
    } else if t.contains("blob") || t.contains("bytea") {
        "bytes"
    } else {
        panic!("a column type the schema test does not know: {declared:?}")
    }
}

async fn connect(db: &TestDb) -> AnyConnection {
    sqlx::any::install_default_drivers();
    let options: AnyConnectOptions = db.url.parse().expect("url");
    AnyConnection::connect_with(&options)
        .await
        .expect("connect")
}

async fn sqlite_schema(db: &TestDb) -> (Columns, Vec<String>) {
    let mut conn = connect(db).await;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         AND name NOT LIKE '_sqlx%' ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut columns = Columns::new();
    for table in tables {
        // A PRIMARY KEY column is NOT NULL in both (SQLite's INTEGER PRIMARY KEY is the
        // rowid, which cannot be NULL either).
        let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(&format!(
            "SELECT name, type, \"notnull\", pk FROM pragma_table_info('{table}')"
        ))
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let entry = columns.entry(table).or_default();
        for (name, declared, not_null, pk) in rows {
            entry.insert(name, (kind_of(&declared), not_null != 0 || pk != 0));
        }
    }
    let indexes = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    (columns, indexes)
}

async fn postgres_schema(db: &TestDb) -> (Columns, Vec<String>) {
    let mut conn = connect(db).await;
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text \
         FROM information_schema.columns WHERE table_schema = 'public' \
         AND table_name NOT LIKE '_sqlx%' ORDER BY table_name, ordinal_position",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut columns = Columns::new();
    for (table, name, declared, nullable) in rows {
        columns
            .entry(table)
            .or_default()
            .insert(name, (kind_of(&declared), nullable == "NO"));
    }
    // Indexes the migrations create by name (not those behind a PRIMARY KEY or UNIQUE
    // constraint, which each dialect names its own way).
    let indexes = sqlx::query_scalar(
        "SELECT indexname::text FROM pg_indexes i WHERE schemaname = 'public' \
         AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname) \
         ORDER BY indexname",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    (columns, indexes)
}

#[tokio::test]
async fn sqlite_and_postgres_declare_the_same_schema() {
    let sqlite = TestDb::new(Kind::Sqlite, Default::default()).await;
    let postgres = TestDb::new(Kind::Postgres, Default::default()).await;
    let (lite_columns, lite_indexes) = sqlite_schema(&sqlite).await;
    let (pg_columns, pg_indexes) = postgres_schema(&postgres).await;
    sqlite.finish().await;
    postgres.finish().await;

    assert!(lite_columns.contains_key("jobs") && lite_columns.contains_key("ledger_entries"));
    let lite_tables: Vec<_> = lite_columns.keys().collect();
    let pg_tables: Vec<_> = pg_columns.keys().collect();
    assert_eq!(lite_tables, pg_tables, "tables");
    for (table, lite) in &lite_columns {
        assert_eq!(
            lite, &pg_columns[table],
            "columns of {table} (SQLite, then PostgreSQL)"
        );
    }
    assert_eq!(
        lite_indexes, pg_indexes,
        "indexes (SQLite, then PostgreSQL)"
    );
}
