//! A fresh database on the test PostgreSQL server (`KINEMA_TEST_POSTGRES_URL`,
//! default `postgres://postgres@127.0.0.1:5432/postgres`) for servers to share, dropped
//! when the test ends.

/// A fresh database on the test PostgreSQL server, dropped on drop.
pub struct PgDatabase {
    admin_url: String,
    name: String,
    pub url: &'static str,
}

impl PgDatabase {
    pub async fn create() -> PgDatabase {
        use sqlx::{Connection, Executor};
        let admin_url = std::env::var("KINEMA_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
        let name = format!(
            "kinema_e2e_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        );
        let mut conn = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL at {admin_url} is needed ({e}); scripts/ensure-postgres starts it"
                )
            });
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create database");
        let base = admin_url
            .rsplit_once('/')
            .map(|(b, _)| b.to_string())
            .unwrap_or(admin_url.clone());
        // The servers' command lines need a 'static str; one per test is fine.
        let url: &'static str = Box::leak(format!("{base}/{name}").into_boxed_str());
        PgDatabase {
            admin_url,
            name,
            url,
        }
    }

    /// The server's maintenance database, for statements that may not run on the
    /// test database itself (`ALTER DATABASE … ALLOW_CONNECTIONS false`).
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// The test database's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // A thread of its own: drop may run inside the test's runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    use sqlx::{Connection, Executor};
                    if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                        let _ = conn
                            .execute(
                                format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str(),
                            )
                            .await;
                    }
                });
            }
        })
        .join();
    }
}
