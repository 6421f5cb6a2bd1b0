//! Stores for tests on both backends: a SQLite file in a temp dir, and a fresh
//! database on the PostgreSQL server at `KINEMA_TEST_POSTGRES_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`), dropped afterwards.

use kinema_params::GenerationParams;
use std::collections::BTreeMap;

use kinema_store::{JobPriority, NewJob, Store, StorePolicy};
use sqlx::{Connection, Executor, PgConnection};

#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Sqlite,
    Postgres,
}

pub struct TestDb {
    pub store: Store,
    /// The database's URL, for tests that reach past the store.
    #[allow(dead_code)]
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg_database: Option<String>,
}

pub fn postgres_admin_url() -> String {
    std::env::var("KINEMA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

fn with_database(admin_url: &str, database: &str) -> String {
    match admin_url.rfind('/') {
        Some(i) if admin_url[..i].contains("://") && admin_url[i..].len() > 1 => {
            format!("{}/{database}", &admin_url[..i])
        }
        _ => format!("{}/{database}", admin_url.trim_end_matches('/')),
    }
}

impl TestDb {
    pub async fn new(kind: Kind, policy: StorePolicy) -> TestDb {
        match kind {
            Kind::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let path = dir.path().join("k.db");
                let store = Store::open_sqlite(&path, policy)
                    .await
                    .expect("open sqlite");
                let url = format!("sqlite://{}", path.display());
                TestDb {
                    store,
                    url,
                    _dir: Some(dir),
                    pg_database: None,
                }
            }
            Kind::Postgres => {
                let admin = postgres_admin_url();
                let database = format!("kinema_test_{}", uuid_like());
                let mut conn = PgConnection::connect(&admin).await.unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL at {admin} is needed by the store tests ({e}); start it \
                         (scripts/test does) or point KINEMA_TEST_POSTGRES_URL at one"
                    )
                });
                conn.execute(format!("CREATE DATABASE {database}").as_str())
                    .await
                    .expect("create test database");
                let url = with_database(&admin, &database);
                let store = Store::open(&url, policy).await.expect("open postgres");
                TestDb {
                    store,
                    url,
                    _dir: None,
                    pg_database: Some(database),
                }
            }
        }
    }

    /// Closes the store and drops a PostgreSQL test database.
    pub async fn finish(self) {
        self.store.close().await;
        if let Some(database) = self.pg_database {
            if let Ok(mut conn) = PgConnection::connect(&postgres_admin_url()).await {
                let _ = conn
                    .execute(format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)").as_str())
                    .await;
            }
        }
    }
}

fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}_{:x}", std::process::id(), nanos ^ (rand_u64() as u128))
}

fn rand_u64() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

/// Runs each named `async fn(Fixture)` scenario as two tests, `sqlite` and `postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($($scenario:ident),+ $(,)?) => {
        $(
            mod $scenario {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let db = super::common::TestDb::new(super::common::Kind::Sqlite, Default::default()).await;
                    super::$scenario(super::Fixture::new(&db).await).await;
                    db.finish().await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let db = super::common::TestDb::new(super::common::Kind::Postgres, Default::default()).await;
                    super::$scenario(super::Fixture::new(&db).await).await;
                    db.finish().await;
                }
            }
        )+
    };
}

/// The smallest job of the test model for `account`, quoted `quote` credits.
#[allow(dead_code)]
pub fn new_job(account: &str, quote: i64) -> NewJob {
    NewJob {
        account_id: account.to_string(),
        external_id: None,
        idempotency_key: None,
        request_hash: "h".into(),
        params: GenerationParams {
            model: "testsrc".into(),
            prompt: "a fox".into(),
            negative_prompt: String::new(),
            width: 64,
            height: 64,
            num_frames: 9,
            fps: 8,
            steps: 4,
            guidance_scale: 5.0,
            seed: 1,
            output: "mp4".into(),
            preview: None,
            ..GenerationParams::default()
        },
        callback_url: String::new(),
        metadata: BTreeMap::new(),
        quote,
        member_id: None,
        priority: JobPriority::Normal,
        batch_key: None,
    }
}
