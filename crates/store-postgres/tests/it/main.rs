//! The PostgreSQL store against a real server: the conformance suite every backend passes,
//! and what only a shared server can get wrong.
//!
//! The server comes from `WAYLINE_TEST_POSTGRES_URL` (for example
//! `postgres://postgres@127.0.0.1:5432/test`). Without it the tests skip, saying so on
//! stderr, unless `WAYLINE_REQUIRE_POSTGRES=1` (CI), which makes that a failure. Each test
//! works in a schema of its own with a random name, dropped at the end.

mod postgres;

use std::future::Future;
use std::hash::{BuildHasher, RandomState};

use wayline_store::conformance::Fixture;
use wayline_store_postgres::{Options, PostgresStore};

/// The test server's URL, or `None` (skip) when none is configured.
fn server() -> Option<String> {
    match std::env::var("WAYLINE_TEST_POSTGRES_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ if std::env::var("WAYLINE_REQUIRE_POSTGRES").as_deref() == Ok("1") => panic!(
            "WAYLINE_REQUIRE_POSTGRES=1 but WAYLINE_TEST_POSTGRES_URL is not set; \
             point it at a server, e.g. postgres://postgres@127.0.0.1:5432/test"
        ),
        _ => {
            eprintln!(
                "SKIPPED: WAYLINE_TEST_POSTGRES_URL is not set, so the PostgreSQL tests did not run \
                 (set it, e.g. to postgres://postgres@127.0.0.1:5432/test; WAYLINE_REQUIRE_POSTGRES=1 makes this a failure)"
            );
            None
        }
    }
}

/// A fresh schema name nobody else uses.
fn random_schema() -> String {
    format!("wayline_test_{:016x}", RandomState::new().hash_one(std::process::id()))
}

/// A direct connection for the tests' own statements (dropping schemas, terminating
/// backends). Its driver task ends when the returned client is dropped.
async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test server");
    #[allow(clippy::disallowed_methods)]
    tokio::spawn(connection);
    client
}

async fn drop_schema(url: &str, schema: &str) {
    admin(url)
        .await
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await
        .expect("drop the test schema");
}

/// A store in a schema of its own, dropped afterwards.
struct Schema {
    store: PostgresStore,
    url: String,
    schema: String,
}

impl Fixture for Schema {
    type Store = PostgresStore;

    fn store(&self) -> PostgresStore {
        self.store.clone()
    }

    async fn teardown(self) {
        drop_schema(&self.url, &self.schema).await;
    }
}

async fn fixture() -> Option<Schema> {
    let url = server()?;
    let schema = random_schema();
    let store =
        PostgresStore::connect(&url, Options { schema: schema.clone(), ..Options::default() })
            .await
            .unwrap_or_else(|error| panic!("connect to {url}: {error}"));
    Some(Schema { store, url, schema })
}

/// Runs `body`, then drops `schema`, also when `body` panics.
async fn in_schema(url: &str, schema: &str, body: impl Future<Output = ()>) {
    /// Only the teardown matters here; the store handed to the case is unused.
    struct Cleanup {
        url: String,
        schema: String,
    }

    impl Fixture for Cleanup {
        type Store = wayline_store::MemoryStore;

        fn store(&self) -> wayline_store::MemoryStore {
            wayline_store::MemoryStore::new()
        }

        async fn teardown(self) {
            drop_schema(&self.url, &self.schema).await;
        }
    }

    let cleanup = Cleanup { url: url.to_owned(), schema: schema.to_owned() };
    wayline_store::conformance::check(Some(cleanup), |_| body).await;
}

mod conformance {
    use super::fixture;

    wayline_store::conformance_tests!(fixture());
}
