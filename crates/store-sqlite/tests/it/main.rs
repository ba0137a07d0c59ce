//! The SQLite store against real files: the conformance suite every backend passes, and what
//! only a file shared by several processes can get wrong.

mod sqlite;

use wayline_store::conformance::Fixture;
use wayline_store_sqlite::{Options, SqliteStore};

/// A store on a fresh file in a temporary directory, removed afterwards.
struct TempStore {
    store: SqliteStore,
    _dir: tempfile::TempDir,
}

impl Fixture for TempStore {
    type Store = SqliteStore;

    fn store(&self) -> SqliteStore {
        self.store.clone()
    }

    async fn teardown(self) {}
}

async fn fixture() -> Option<TempStore> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store =
        SqliteStore::open(dir.path().join("wayline.db"), Options::default()).await.expect("open");
    Some(TempStore { store, _dir: dir })
}

mod conformance {
    use super::fixture;

    wayline_store::conformance_tests!(fixture());
}
