//! The in-memory store against the conformance suite every backend passes.

async fn fixture() -> Option<wayline_store::MemoryStore> {
    Some(wayline_store::MemoryStore::new())
}

wayline_store::conformance_tests!(fixture());
