//! The conformance suite: behaviour every [`Store`] backend must show.
//!
//! Each case is a public async function taking an empty store. A backend's test binary runs
//! them all, each as its own test, with [`conformance_tests!`](crate::conformance_tests):
//!
//! ```
//! // tests/it/main.rs of a backend (here the in-memory store, its own fixture):
//! async fn fixture() -> Option<wayline_store::MemoryStore> {
//!     Some(wayline_store::MemoryStore::new())
//! }
//!
//! wayline_store::conformance_tests!(fixture());
//! # fn main() {}
//! ```
//!
//! A [`Fixture`] owns what a store needs (a temporary file, a database schema) and cleans it
//! up after the case, whether it passed or not. A setup returning `None` skips the case (it
//! should say why on stderr).
//!
//! Times are fixed values: the store never reads a clock; lease expiry is decided by the `now`
//! the caller passes.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use wayline_journal::Status;
use wayline_journal::{Actor, ErrorClass, ErrorInfo, Outcome, StopReason};
use wayline_journal::{Event, EventKind, Time};

use crate::{
    Action, Commit, Error, ExecutionRecord, Filter, Lease, LogLine, NewExecution, Request, Store,
    Summary, TokenRecord,
};

/// What a backend's tests provide for each case: a store, and cleanup afterwards.
pub trait Fixture: Send + 'static {
    type Store: Store;

    /// A handle on the (empty) store under test.
    fn store(&self) -> Self::Store;

    /// Releases what the fixture holds (drops a schema, deletes a file). Runs after the case
    /// even when it failed.
    fn teardown(self) -> impl Future<Output = ()> + Send;
}

/// Fixtures that need no cleanup: the store itself.
impl Fixture for crate::MemoryStore {
    type Store = crate::MemoryStore;

    fn store(&self) -> crate::MemoryStore {
        self.clone()
    }

    async fn teardown(self) {}
}

/// Runs one case against a fixture (`None`: skipped), tearing the fixture down afterwards and
/// then re-raising the case's panic, if any.
pub async fn check<F, C, Fut>(fixture: Option<F>, case: C)
where
    F: Fixture,
    C: FnOnce(F::Store) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(fixture) = fixture else { return };
    let outcome = CatchUnwind(Box::pin(case(fixture.store()))).await;
    fixture.teardown().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Expands to one `#[tokio::test]` per conformance case. `$setup` is an expression evaluating
/// to a future of `Option<impl Fixture>`; it is evaluated once per test.
#[macro_export]
macro_rules! conformance_tests {
    ($setup:expr) => {
        $crate::conformance_tests!(@cases $setup;
            create_get_events_round_trip,
            create_checks_its_events,
            appends_continue_the_journal,
            events_are_ordered_and_paged,
            group_commit_fences_each_execution,
            acquire_refuses_a_held_lease,
            expired_lease_is_taken_over_and_the_stale_owner_is_fenced,
            renew_extends_and_release_frees,
            dead_owner_is_taken_over_at_once,
            concurrent_appenders_exactly_one_wins,
            concurrent_acquirers_exactly_one_wins,
            resolve_exact_prefix_ambiguous_missing,
            list_filters_newest_first,
            commits_update_the_summary,
            requests_are_handled_by_commits,
            logs_are_numbered_filtered_and_paged,
            gc_removes_only_old_finished_executions,
            changed_wakes_on_commit_and_request,
            changed_returns_by_the_timeout,
            idempotency_keys_name_one_execution,
            tokens_are_added_found_listed_and_revoked,
            workflow_versions_grow_only_when_the_source_changes,
        );
    };
    (@cases $setup:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                $crate::conformance::check($setup.await, $crate::conformance::$case).await;
            }
        )*
    };
}

// ---------------------------------------------------------------------------------------------
// Cases.

/// A created execution reads back exactly: its record and its events, equal to what a JSON
/// round trip of them gives.
pub async fn create_get_events_round_trip<S: Store>(store: S) {
    let events = vec![
        created(1, "release"),
        event(2, EventKind::Started),
        event(
            3,
            EventKind::AttemptSucceeded {
                item: None,
                step: "build".into(),
                attempt: 1,
                compensation: false,
                outputs: object(json!({
                    "nested": { "list": [1, 2.5, -3, null, true, "x"], "big": u64::MAX },
                    "text": "quotes \" and \\ backslashes, newline\n, tab\t, nul \u{0}, emoji 🚀, ünïcödé",
                    "z_first_in_order": 1,
                    "a_second": 2,
                })),
            },
        ),
        event(
            4,
            EventKind::AttemptFailed {
                item: None,
                step: "test".into(),
                attempt: 2,
                compensation: true,
                error: ErrorInfo::new(ErrorClass::Lost, "the owner died"),
                outputs: Map::new(),
                terminal: false,
            },
        ),
    ];
    let lease = store.create(new_execution("e1", "release", at(0)), events.clone()).await.unwrap();
    assert_eq!(
        lease,
        Lease { execution: "e1".into(), owner: "engine-a".into(), token: lease.token }
    );

    let record = store.get("e1").await.unwrap();
    assert_eq!(
        record,
        ExecutionRecord {
            id: "e1".into(),
            workflow: "release".into(),
            status: Status::Pending,
            created_at: at(0),
            started_at: None,
            finished_at: None,
            last_seq: 4,
            owner: Some("engine-a".into()),
            lease_until: Some(at(30)),
            error: None,
        }
    );

    let stored = store.events("e1", 0, 100).await.unwrap();
    assert_eq!(stored, events);
    let round_tripped: Vec<Event> = events
        .iter()
        .map(|e| serde_json::from_str(&serde_json::to_string(e).unwrap()).unwrap())
        .collect();
    assert_eq!(stored, round_tripped);
    // Key order inside outputs survives (users read outputs in the order steps wrote them).
    let EventKind::AttemptSucceeded { outputs, .. } = &stored[2].kind else {
        panic!("{:?}", stored[2])
    };
    let keys: Vec<&str> = outputs.keys().map(String::as_str).collect();
    assert_eq!(keys, ["nested", "text", "z_first_in_order", "a_second"]);

    // The same id again: refused, the first one untouched.
    let again = store.create(new_execution("e1", "other", at(5)), vec![created(1, "other")]).await;
    assert_eq!(again, Err(Error::Exists("e1".into())));
    assert_eq!(store.get("e1").await.unwrap(), record);
    assert_eq!(store.events("e1", 0, 100).await.unwrap(), events);

    // An execution may start with an empty journal.
    store.create(new_execution("e2", "release", at(1)), Vec::new()).await.unwrap();
    assert_eq!(store.get("e2").await.unwrap().last_seq, 0);
    assert_eq!(store.events("e2", 0, 100).await.unwrap(), Vec::<Event>::new());

    assert_eq!(store.get("nope").await, Err(Error::NotFound("nope".into())));
    assert_eq!(store.events("nope", 0, 10).await, Err(Error::NotFound("nope".into())));
}

/// `create` refuses a journal that does not start at 1 or has gaps, and creates nothing.
pub async fn create_checks_its_events<S: Store>(store: S) {
    let late = store.create(new_execution("e1", "w", at(0)), vec![created(2, "w")]).await;
    assert!(matches!(late, Err(Error::Fenced { .. })), "{late:?}");
    let gap = store
        .create(
            new_execution("e1", "w", at(0)),
            vec![created(1, "w"), event(3, EventKind::Started)],
        )
        .await;
    assert!(matches!(gap, Err(Error::Fenced { .. })), "{gap:?}");
    assert_eq!(store.get("e1").await, Err(Error::NotFound("e1".into())));
    assert_eq!(store.list(Filter::default()).await.unwrap(), Vec::new());
}

/// Commits continue the journal; a duplicate or a gap is refused with `Fenced` and stores
/// nothing of that commit.
pub async fn appends_continue_the_journal<S: Store>(store: S) {
    let lease = store.create(new_execution("e1", "w", at(0)), vec![created(1, "w")]).await.unwrap();
    let ok = store.commit(vec![commit(&lease, steps(2, 3), running(at(1)))]).await.unwrap();
    assert_eq!(ok, vec![Ok(())]);
    assert_eq!(store.get("e1").await.unwrap().last_seq, 4);

    let finished = Summary {
        status: Status::Failed,
        started_at: Some(at(1)),
        finished_at: Some(at(9)),
        error: Some("must not be stored".into()),
    };
    let rejected = [
        ("duplicate", steps(4, 1)),
        ("overlap", steps(3, 3)),
        ("gap", steps(6, 1)),
        ("gap inside", vec![step_event(5, "a"), step_event(7, "b")]),
        ("restart", steps(1, 1)),
    ];
    for (what, events) in rejected {
        let results = store.commit(vec![commit(&lease, events, finished.clone())]).await.unwrap();
        assert!(matches!(results.as_slice(), [Err(Error::Fenced { .. })]), "{what}: {results:?}");
    }
    let record = store.get("e1").await.unwrap();
    assert_eq!(record.last_seq, 4);
    assert_eq!(record.status, Status::Running, "a refused commit must not touch the summary");
    assert_eq!(record.error, None);
    assert_eq!(seqs(&store.events("e1", 0, 100).await.unwrap()), [1, 2, 3, 4]);

    // The journal goes on after refusals; an empty commit only updates the summary.
    let ok = store.commit(vec![commit(&lease, steps(5, 2), running(at(1)))]).await.unwrap();
    assert_eq!(ok, vec![Ok(())]);
    let ok = store.commit(vec![commit(&lease, Vec::new(), paused(at(1)))]).await.unwrap();
    assert_eq!(ok, vec![Ok(())]);
    let record = store.get("e1").await.unwrap();
    assert_eq!((record.last_seq, record.status), (6, Status::Paused));
    assert_eq!(seqs(&store.events("e1", 0, 100).await.unwrap()), [1, 2, 3, 4, 5, 6]);

    // A commit for an execution that does not exist.
    let ghost = Lease { execution: "ghost".into(), owner: "engine-a".into(), token: 1 };
    let results = store.commit(vec![commit(&ghost, steps(1, 1), running(at(1)))]).await.unwrap();
    assert_eq!(results, vec![Err(Error::NotFound("ghost".into()))]);
    assert_eq!(store.commit(Vec::new()).await.unwrap(), Vec::new());
}

/// Events come back in sequence order, paged by `after` and `limit`.
pub async fn events_are_ordered_and_paged<S: Store>(store: S) {
    let lease = store.create(new_execution("e1", "w", at(0)), vec![created(1, "w")]).await.unwrap();
    // Many small commits, so that storage order and sequence order could differ.
    for first in (2..=25).step_by(3) {
        let count = 3.min(26 - first);
        let results =
            store.commit(vec![commit(&lease, steps(first, count), running(at(1)))]).await.unwrap();
        assert_eq!(results, vec![Ok(())]);
    }
    let other = store.create(new_execution("e2", "w", at(0)), vec![created(1, "w")]).await.unwrap();
    store.commit(vec![commit(&other, steps(2, 5), running(at(1)))]).await.unwrap();

    let all = store.events("e1", 0, 1000).await.unwrap();
    assert_eq!(seqs(&all), (1..=25).collect::<Vec<u64>>());
    assert_eq!(seqs(&store.events("e1", 0, 10).await.unwrap()), (1..=10).collect::<Vec<u64>>());
    assert_eq!(seqs(&store.events("e1", 10, 10).await.unwrap()), (11..=20).collect::<Vec<u64>>());
    assert_eq!(seqs(&store.events("e1", 20, 10).await.unwrap()), (21..=25).collect::<Vec<u64>>());
    assert_eq!(store.events("e1", 25, 10).await.unwrap(), Vec::new());
    assert_eq!(store.events("e1", 1000, 10).await.unwrap(), Vec::new());
    assert_eq!(store.events("e1", 0, 0).await.unwrap(), Vec::new());
    assert_eq!(seqs(&store.events("e2", 3, 100).await.unwrap()), [4, 5, 6]);

    // Paging by the last seen sequence number reads everything exactly once.
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = store.events("e1", after, 7).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        paged.extend(page);
    }
    assert_eq!(paged, all);
}

/// One batch with several executions: each commit is fenced on its own, the others land.
pub async fn group_commit_fences_each_execution<S: Store>(store: S) {
    let a = store.create(new_execution("a", "w", at(0)), vec![created(1, "w")]).await.unwrap();
    let b = store.create(new_execution("b", "w", at(0)), vec![created(1, "w")]).await.unwrap();
    let c = store.create(new_execution("c", "w", at(0)), vec![created(1, "w")]).await.unwrap();
    let d = store.create(new_execution("d", "w", at(0)), vec![created(1, "w")]).await.unwrap();
    let stale_d = Lease { token: d.token + 100, ..d.clone() };

    let results = store
        .commit(vec![
            commit(&a, steps(2, 2), running(at(1))),
            commit(&b, steps(3, 1), running(at(1))), // gap: refused
            commit(&c, steps(2, 3), running(at(1))),
            commit(&a, steps(4, 1), paused(at(1))), // continues the first commit of `a`
            commit(&stale_d, steps(2, 1), running(at(1))), // wrong token: refused
            commit(&c, steps(4, 1), running(at(1))), // duplicates seq 4 of `c`: refused
        ])
        .await
        .unwrap();
    assert_eq!(results.len(), 6);
    assert_eq!(results[0], Ok(()));
    assert!(matches!(results[1], Err(Error::Fenced { .. })), "{:?}", results[1]);
    assert_eq!(results[2], Ok(()));
    assert_eq!(results[3], Ok(()));
    assert!(matches!(results[4], Err(Error::Fenced { .. })), "{:?}", results[4]);
    assert!(matches!(results[5], Err(Error::Fenced { .. })), "{:?}", results[5]);

    let a_record = store.get("a").await.unwrap();
    assert_eq!((a_record.last_seq, a_record.status), (4, Status::Paused));
    assert_eq!(seqs(&store.events("a", 0, 100).await.unwrap()), [1, 2, 3, 4]);
    let b_record = store.get("b").await.unwrap();
    assert_eq!((b_record.last_seq, b_record.status), (1, Status::Pending));
    let c_record = store.get("c").await.unwrap();
    assert_eq!((c_record.last_seq, c_record.status), (4, Status::Running));
    let c_events = store.events("c", 0, 100).await.unwrap();
    assert_eq!(c_events[3], step_event(4, "s4"), "the refused duplicate must not replace event 4");
    assert_eq!(store.get("d").await.unwrap().last_seq, 1);

    // The fenced executions still accept a correct commit.
    let results = store
        .commit(vec![
            commit(&b, steps(2, 1), running(at(2))),
            commit(&d, steps(2, 1), running(at(2))),
        ])
        .await
        .unwrap();
    assert_eq!(results, vec![Ok(()), Ok(())]);
}

/// A held lease cannot be acquired, not even by its owner asking again.
pub async fn acquire_refuses_a_held_lease<S: Store>(store: S) {
    let lease = store.create(new_execution("e1", "w", at(0)), vec![created(1, "w")]).await.unwrap();
    let held = store.acquire("e1", "engine-b", TTL, at(10), None).await;
    assert_eq!(
        held,
        Err(Error::Held { execution: "e1".into(), owner: "engine-a".into(), until: at(30) })
    );
    let again = store.acquire("e1", "engine-a", TTL, at(10), None).await;
    assert!(matches!(again, Err(Error::Held { .. })), "{again:?}");
    // Just before expiry it is still held.
    let held =
        store.acquire("e1", "engine-b", TTL, Time::from_micros(at(30).as_micros() - 1), None).await;
    assert!(matches!(held, Err(Error::Held { .. })), "{held:?}");
    let record = store.get("e1").await.unwrap();
    assert_eq!((record.owner.as_deref(), record.lease_until), (Some("engine-a"), Some(at(30))));
    // The owner still commits.
    let results = store.commit(vec![commit(&lease, steps(2, 1), running(at(10)))]).await.unwrap();
    assert_eq!(results, vec![Ok(())]);

    let missing = store.acquire("nope", "engine-b", TTL, at(10), None).await;
    assert_eq!(missing, Err(Error::NotFound("nope".into())));
}

/// After expiry another owner takes the lease; the stale owner's commit, renewal and release
/// are refused, and its requests to the journal leave no trace.
pub async fn expired_lease_is_taken_over_and_the_stale_owner_is_fenced<S: Store>(store: S) {
    let old = store.create(new_execution("e1", "w", at(0)), vec![created(1, "w")]).await.unwrap();
    store.commit(vec![commit(&old, steps(2, 1), running(at(1)))]).await.unwrap();

    // Expired exactly at `lease_until`.
    let new = store.acquire("e1", "engine-b", TTL, at(30), None).await.unwrap();
    assert_eq!((new.execution.as_str(), new.owner.as_str()), ("e1", "engine-b"));
    assert!(new.token > old.token, "tokens must grow: {} then {}", old.token, new.token);
    let record = store.get("e1").await.unwrap();
    assert_eq!((record.owner.as_deref(), record.lease_until), (Some("engine-b"), Some(at(60))));

    let results = store.commit(vec![commit(&old, steps(3, 1), failed(at(31)))]).await.unwrap();
    assert!(matches!(results.as_slice(), [Err(Error::Fenced { .. })]), "{results:?}");
    assert_eq!(store.renew(vec![old.clone()], TTL, at(31)).await.unwrap(), vec![false]);
    store.release(old.clone()).await.unwrap();

    let record = store.get("e1").await.unwrap();
    assert_eq!(
        record.owner.as_deref(),
        Some("engine-b"),
        "a stale release must not free the lease"
    );
    assert_eq!(record.lease_until, Some(at(60)), "a stale renewal must not move the lease");
    assert_eq!((record.last_seq, record.status), (2, Status::Running));

    // The same owner name with an old token is stale too (a restarted process reusing its name).
    let same_name = Lease { owner: "engine-b".into(), ..old.clone() };
    let results =
        store.commit(vec![commit(&same_name, steps(3, 1), running(at(31)))]).await.unwrap();
    assert!(matches!(results.as_slice(), [Err(Error::Fenced { .. })]), "{results:?}");

    let results = store.commit(vec![commit(&new, steps(3, 1), running(at(31)))]).await.unwrap();
    assert_eq!(results, vec![Ok(())]);
    assert_eq!(store.get("e1").await.unwrap().last_seq, 3);
}

/// Renewal moves `lease_until`; release frees the lease for anyone at once.
pub async fn renew_extends_and_release_frees<S: Store>(store: S) {
    let a = store.create(new_execution("a", "w", at(0)), vec![created(1, "w")]).await.unwrap();
    let b = store.create(new_execution("b", "w", at(0)), vec![created(1, "w")]).await.unwrap();
    let ghost = Lease { execution: "ghost".into(), owner: "engine-a".into(), token: 1 };

    let held = store.renew(vec![a.clone(), ghost, b.clone()], TTL, at(20)).await.unwrap();
    assert_eq!(held, vec![true, false, true]);
    assert_eq!(store.get("a").await.unwrap().lease_until, Some(at(50)));
    let held = store.acquire("a", "engine-b", TTL, at(40), None).await;
    assert!(
        matches!(held, Err(Error::Held { .. })),
        "renewed lease must hold past its first expiry: {held:?}"
    );
    assert_eq!(store.renew(Vec::new(), TTL, at(20)).await.unwrap(), Vec::<bool>::new());

    // An expired lease that nobody took is still the owner's: renewal revives it.
    assert_eq!(store.renew(vec![b.clone()], TTL, at(100)).await.unwrap(), vec![true]);
    assert_eq!(store.get("b").await.unwrap().lease_until, Some(at(130)));

    store.release(a.clone()).await.unwrap();
    let record = store.get("a").await.unwrap();
    assert_eq!((record.owner, record.lease_until), (None, None));
    let results = store.commit(vec![commit(&a, steps(2, 1), running(at(21)))]).await.unwrap();
    assert!(
        matches!(results.as_slice(), [Err(Error::Fenced { .. })]),
        "a released lease must not commit: {results:?}"
    );
    assert_eq!(store.renew(vec![a.clone()], TTL, at(21)).await.unwrap(), vec![false]);

    let next = store.acquire("a", "engine-b", TTL, at(21), None).await.unwrap();
    assert!(next.token > a.token);
    let results = store.commit(vec![commit(&next, steps(2, 1), running(at(21)))]).await.unwrap();
    assert_eq!(results, vec![Ok(())]);

    // Releasing twice, or an execution that does not exist, is harmless.
    store.release(next.clone()).await.unwrap();
    store.release(next).await.unwrap();
    store.release(Lease { execution: "ghost".into(), owner: "x".into(), token: 7 }).await.unwrap();
}

/// A lease held by an owner the caller knows is dead is taken over before it expires; naming
/// another owner as dead does not help.
pub async fn dead_owner_is_taken_over_at_once<S: Store>(store: S) {
    let mut new = new_execution("e1", "w", at(0));
    new.owner = "host:100".into();
    let old = store.create(new, vec![created(1, "w")]).await.unwrap();

    let wrong = store.acquire("e1", "host:200", TTL, at(1), Some("host:999")).await;
    assert!(matches!(wrong, Err(Error::Held { .. })), "{wrong:?}");
    let taken = store.acquire("e1", "host:200", TTL, at(1), Some("host:100")).await.unwrap();
    assert!(taken.token > old.token);
    let record = store.get("e1").await.unwrap();
    assert_eq!((record.owner.as_deref(), record.lease_until), (Some("host:200"), Some(at(31))));
    let results = store.commit(vec![commit(&old, steps(2, 1), running(at(2)))]).await.unwrap();
    assert!(matches!(results.as_slice(), [Err(Error::Fenced { .. })]), "{results:?}");
}

/// Two writers with the same lease append the same sequence number at the same time: exactly
/// one wins, and the journal holds the winner's event.
pub async fn concurrent_appenders_exactly_one_wins<S: Store>(store: S) {
    let lease = store.create(new_execution("e1", "w", at(0)), vec![created(1, "w")]).await.unwrap();
    for round in 0..20u64 {
        let seq = round + 2;
        let first =
            store.commit(vec![commit(&lease, vec![step_event(seq, "first")], running(at(1)))]);
        let second =
            store.commit(vec![commit(&lease, vec![step_event(seq, "second")], running(at(1)))]);
        let (first, second) = tokio::join!(first, second);
        let (first, second) = (first.unwrap(), second.unwrap());
        let winner = match (&first[..], &second[..]) {
            ([Ok(())], [Err(Error::Fenced { .. })]) => "first",
            ([Err(Error::Fenced { .. })], [Ok(())]) => "second",
            other => panic!("round {round}: exactly one must win, got {other:?}"),
        };
        let stored = store.events("e1", seq - 1, 10).await.unwrap();
        assert_eq!(stored, vec![step_event(seq, winner)], "round {round}");
    }
}

/// Two engines take over the same expired execution at the same time: exactly one gets it.
pub async fn concurrent_acquirers_exactly_one_wins<S: Store>(store: S) {
    store.create(new_execution("e1", "w", at(0)), vec![created(1, "w")]).await.unwrap();
    for round in 0..10i64 {
        // Each round starts with an expired lease.
        let now = at(1000 * (round + 1));
        let b = store.acquire("e1", "engine-b", TTL, now, None);
        let c = store.acquire("e1", "engine-c", TTL, now, None);
        let (b, c) = tokio::join!(b, c);
        let winner = match (&b, &c) {
            (Ok(lease), Err(Error::Held { .. })) | (Err(Error::Held { .. }), Ok(lease)) => {
                lease.clone()
            }
            other => panic!("round {round}: exactly one must win, got {other:?}"),
        };
        assert_eq!(store.get("e1").await.unwrap().owner.as_deref(), Some(winner.owner.as_str()));
        assert_eq!(store.renew(vec![winner], TTL, now).await.unwrap(), vec![true]);
    }
}

/// `resolve` finds an execution by its id or a unique prefix of it.
pub async fn resolve_exact_prefix_ambiguous_missing<S: Store>(store: S) {
    for id in ["0a1b2c", "0a1b9f", "7f00aa", "abc", "abcd", "x_1", "xy1", "x%2"] {
        store.create(new_execution(id, "w", at(0)), vec![created(1, "w")]).await.unwrap();
    }
    assert_eq!(store.resolve("0a1b2c").await, Ok("0a1b2c".into()));
    assert_eq!(store.resolve("0a1b2").await, Ok("0a1b2c".into()));
    assert_eq!(store.resolve("7").await, Ok("7f00aa".into()));
    assert_eq!(
        store.resolve("0a1b").await,
        Err(Error::Ambiguous { prefix: "0a1b".into(), count: 2 })
    );
    assert_eq!(store.resolve("0").await, Err(Error::Ambiguous { prefix: "0".into(), count: 2 }));
    assert_eq!(store.resolve("abc").await, Ok("abc".into()), "an exact id wins over longer ones");
    assert_eq!(store.resolve("ab").await, Err(Error::Ambiguous { prefix: "ab".into(), count: 2 }));
    // Characters that are wildcards in SQL LIKE are plain characters here.
    assert_eq!(store.resolve("x_").await, Ok("x_1".into()));
    assert_eq!(store.resolve("x%").await, Ok("x%2".into()));
    assert_eq!(store.resolve("zz").await, Err(Error::NotFound("zz".into())));
    assert_eq!(store.resolve("0a1b2cd").await, Err(Error::NotFound("0a1b2cd".into())));
    assert!(matches!(store.resolve("").await, Err(Error::NotFound(_))));
}

/// `list` filters by status, workflow and creation time, newest first, limited.
pub async fn list_filters_newest_first<S: Store>(store: S) {
    let specs = [
        ("e1", "deploy", 10, Status::Succeeded),
        ("e2", "backup", 20, Status::Failed),
        ("e3", "deploy", 30, Status::Running),
        ("e4", "deploy", 40, Status::Failed),
        ("e5", "backup", 50, Status::Pending),
        ("e6", "deploy", 50, Status::Paused),
    ];
    for (id, workflow, created, status) in specs {
        let lease = store
            .create(new_execution(id, workflow, at(created)), vec![created_event(workflow)])
            .await
            .unwrap();
        if status != Status::Pending {
            let summary = Summary {
                status,
                started_at: Some(at(created)),
                finished_at: status.is_final().then(|| at(created + 1)),
                error: None,
            };
            assert_eq!(
                store.commit(vec![commit(&lease, Vec::new(), summary)]).await.unwrap(),
                vec![Ok(())]
            );
        }
    }
    let ids = |records: Vec<ExecutionRecord>| records.into_iter().map(|r| r.id).collect::<Vec<_>>();

    assert_eq!(
        ids(store.list(Filter::default()).await.unwrap()),
        ["e6", "e5", "e4", "e3", "e2", "e1"]
    );
    let failed = Filter { status: vec![Status::Failed], ..Filter::default() };
    assert_eq!(ids(store.list(failed).await.unwrap()), ["e4", "e2"]);
    let finished = Filter { status: vec![Status::Succeeded, Status::Failed], ..Filter::default() };
    assert_eq!(ids(store.list(finished).await.unwrap()), ["e4", "e2", "e1"]);
    let deploy = Filter { workflow: Some("deploy".into()), ..Filter::default() };
    assert_eq!(ids(store.list(deploy).await.unwrap()), ["e6", "e4", "e3", "e1"]);
    let since = Filter { since: Some(at(30)), ..Filter::default() };
    assert_eq!(ids(store.list(since).await.unwrap()), ["e6", "e5", "e4", "e3"]);
    let limited = Filter { limit: Some(2), ..Filter::default() };
    assert_eq!(ids(store.list(limited).await.unwrap()), ["e6", "e5"]);
    let combined = Filter {
        status: vec![Status::Failed, Status::Running, Status::Succeeded],
        workflow: Some("deploy".into()),
        since: Some(at(11)),
        limit: Some(10),
        ..Filter::default()
    };
    assert_eq!(ids(store.list(combined).await.unwrap()), ["e4", "e3"]);
    let nothing = Filter { workflow: Some("nope".into()), ..Filter::default() };
    assert_eq!(store.list(nothing).await.unwrap(), Vec::new());
    let zero = Filter { limit: Some(0), ..Filter::default() };
    assert_eq!(store.list(zero).await.unwrap(), Vec::new());

    // Pages: each continues after the last execution of the one before, ties on the creation
    // time broken by id, with the other conditions still applied.
    let page =
        |before: Option<(Time, String)>| Filter { before, limit: Some(2), ..Filter::default() };
    assert_eq!(ids(store.list(page(Some((at(50), "e6".into())))).await.unwrap()), ["e5", "e4"]);
    assert_eq!(ids(store.list(page(Some((at(40), "e4".into())))).await.unwrap()), ["e3", "e2"]);
    assert_eq!(
        ids(store.list(page(Some((at(10), "e1".into())))).await.unwrap()),
        Vec::<String>::new()
    );
    let deploys_after = Filter {
        workflow: Some("deploy".into()),
        before: Some((at(50), "e5".into())),
        ..Filter::default()
    };
    assert_eq!(ids(store.list(deploys_after).await.unwrap()), ["e4", "e3", "e1"]);

    // Listed records are the full records.
    let listed = store.list(Filter { limit: Some(1), ..Filter::default() }).await.unwrap();
    assert_eq!(listed, vec![store.get("e6").await.unwrap()]);
}

/// Each commit writes the summary it carries: status, start, finish, error.
pub async fn commits_update_the_summary<S: Store>(store: S) {
    let lease = store.create(new_execution("e1", "w", at(0)), vec![created(1, "w")]).await.unwrap();
    store
        .commit(vec![commit(&lease, vec![event(2, EventKind::Started)], running(at(1)))])
        .await
        .unwrap();
    let record = store.get("e1").await.unwrap();
    assert_eq!(
        (record.status, record.started_at, record.finished_at, record.error),
        (Status::Running, Some(at(1)), None, None)
    );

    let stopping = event(
        3,
        EventKind::Stopping {
            reason: StopReason::Failed,
            rollback: false,
            actor: None,
            error: Some(ErrorInfo::new(ErrorClass::Failure, "exit 1")),
        },
    );
    let finished = event(
        4,
        EventKind::Finished {
            outcome: Outcome::Failed,
            error: Some(ErrorInfo::new(ErrorClass::Failure, "exit 1")),
            outputs: Default::default(),
        },
    );
    let summary = failed(at(9));
    store.commit(vec![commit(&lease, vec![stopping, finished], summary.clone())]).await.unwrap();
    let record = store.get("e1").await.unwrap();
    assert_eq!(
        (record.status, record.started_at, record.finished_at, record.error, record.last_seq),
        (summary.status, summary.started_at, summary.finished_at, summary.error, 4)
    );
    // The lease is not touched by commits.
    assert_eq!((record.owner.as_deref(), record.lease_until), (Some("engine-a"), Some(at(30))));
}

/// Requests are stored for the owner, returned oldest first, and disappear once a commit of
/// their execution lists them as handled.
pub async fn requests_are_handled_by_commits<S: Store>(store: S) {
    let x = store.create(new_execution("x", "w", at(0)), vec![created(1, "w")]).await.unwrap();
    let y = store.create(new_execution("y", "w", at(0)), vec![created(1, "w")]).await.unwrap();

    let pause = Request {
        action: Action::Pause { until: Some(at(99)) },
        by: "alice@host (cli)".into(),
        reason: Some("maintenance window — ünïcödé".into()),
    };
    let decide = Request {
        action: Action::Decide {
            step: "deploy".into(),
            decision: "skip".into(),
            outputs: object(json!({ "version": "1.2.3", "count": 3 })),
        },
        by: "bob".into(),
        reason: None,
    };
    let cancel =
        Request { action: Action::Cancel { rollback: true }, by: "carol".into(), reason: None };
    let resume = Request { action: Action::Resume, by: "dave".into(), reason: None };

    let r1 = store.request("x", pause.clone(), at(1)).await.unwrap();
    let r2 = store.request("y", resume.clone(), at(2)).await.unwrap();
    let r3 = store.request("x", decide.clone(), at(3)).await.unwrap();
    let r4 = store.request("x", cancel.clone(), at(4)).await.unwrap();
    assert!(r1 < r2 && r2 < r3 && r3 < r4, "ids must grow: {r1} {r2} {r3} {r4}");
    assert_eq!(
        store.request("nope", resume.clone(), at(5)).await,
        Err(Error::NotFound("nope".into()))
    );

    let of_x = store.requests(vec!["x".into()]).await.unwrap();
    assert_eq!(
        of_x.iter().map(|r| (r.id, r.execution.as_str(), r.created_at)).collect::<Vec<_>>(),
        [(r1, "x", at(1)), (r3, "x", at(3)), (r4, "x", at(4))]
    );
    assert_eq!(of_x.iter().map(|r| r.request.clone()).collect::<Vec<_>>(), [pause, decide, cancel]);
    let both = store.requests(vec!["y".into(), "x".into(), "ghost".into()]).await.unwrap();
    assert_eq!(both.iter().map(|r| r.id).collect::<Vec<_>>(), [r1, r2, r3, r4]);
    assert_eq!(store.requests(Vec::new()).await.unwrap(), Vec::new());

    // Handled with a commit of its own execution.
    let results = store.commit(vec![handled(&x, 2, vec![r1])]).await.unwrap();
    assert_eq!(results, vec![Ok(())]);
    // A commit of another execution cannot mark x's request.
    store.commit(vec![handled(&y, 2, vec![r3])]).await.unwrap();
    // A refused commit marks nothing.
    let results = store.commit(vec![handled(&x, 7, vec![r3])]).await.unwrap();
    assert!(matches!(results.as_slice(), [Err(Error::Fenced { .. })]), "{results:?}");
    let left = store.requests(vec!["x".into(), "y".into()]).await.unwrap();
    assert_eq!(left.iter().map(|r| r.id).collect::<Vec<_>>(), [r2, r3, r4]);

    // A handled request never comes back; new ones still get fresh, greater ids.
    store.commit(vec![handled(&x, 3, vec![r3, r4]), handled(&y, 3, vec![r2])]).await.unwrap();
    assert_eq!(store.requests(vec!["x".into(), "y".into()]).await.unwrap(), Vec::new());
    let r5 = store.request("x", resume.clone(), at(6)).await.unwrap();
    assert!(r5 > r4);
    assert_eq!(
        store.requests(vec!["x".into()]).await.unwrap().iter().map(|r| r.id).collect::<Vec<_>>(),
        [r5]
    );
}

/// Log lines are numbered from 1 per execution in the order given, filtered by step (all of a
/// fan-out's items with it), paged.
pub async fn logs_are_numbered_filtered_and_paged<S: Store>(store: S) {
    store.create(new_execution("x", "w", at(0)), vec![created(1, "w")]).await.unwrap();
    store.create(new_execution("y", "w", at(0)), vec![created(1, "w")]).await.unwrap();
    let batch = vec![
        log("x", "build", "compiling", 1),
        log("y", "other", "hello from y", 1),
        log("x", "test", "running 3 tests", 2),
        log("x", "build", "finished ✓ \u{0} after a nul", 3),
        log("ghost", "build", "dropped: no such execution", 3),
        log("x", "build", "", 4),
    ];
    store.append_logs(batch).await.unwrap();
    store.append_logs(vec![log("x", "test", "ok", 5), log("y", "other", "bye", 6)]).await.unwrap();
    store.append_logs(Vec::new()).await.unwrap();

    let x = store.logs("x", None, 0, 100).await.unwrap();
    let summary: Vec<(u64, &str, &str)> =
        x.iter().map(|l| (l.line, l.step.as_str(), l.text.as_str())).collect();
    assert_eq!(
        summary,
        [
            (1, "build", "compiling"),
            (2, "test", "running 3 tests"),
            (3, "build", "finished ✓ \u{0} after a nul"),
            (4, "build", ""),
            (5, "test", "ok"),
        ]
    );
    assert_eq!(x[1], LogLine { line: 2, ..log("x", "test", "running 3 tests", 2) });
    assert_eq!((x[0].item, x[1].item), (None, Some(7)), "the item round-trips");
    let y = store.logs("y", None, 0, 100).await.unwrap();
    assert_eq!(
        y.iter().map(|l| (l.line, l.text.as_str())).collect::<Vec<_>>(),
        [(1, "hello from y"), (2, "bye")]
    );

    let build = store.logs("x", Some("build"), 0, 100).await.unwrap();
    assert_eq!(build.iter().map(|l| l.line).collect::<Vec<_>>(), [1, 3, 4]);
    let test_after = store.logs("x", Some("test"), 2, 100).await.unwrap();
    assert_eq!(test_after.iter().map(|l| l.line).collect::<Vec<_>>(), [5]);
    let page = store.logs("x", None, 1, 2).await.unwrap();
    assert_eq!(page.iter().map(|l| l.line).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(store.logs("x", None, 5, 100).await.unwrap(), Vec::new());
    assert_eq!(store.logs("x", Some("nope"), 0, 100).await.unwrap(), Vec::new());
    assert_eq!(store.logs("ghost", None, 0, 100).await, Err(Error::NotFound("ghost".into())));
}

/// `gc` deletes finished executions that finished before the cutoff, with everything they
/// own, and nothing else.
pub async fn gc_removes_only_old_finished_executions<S: Store>(store: S) {
    // (id, status, finished at)
    let specs = [
        ("old-succeeded", Status::Succeeded, Some(10)),
        ("old-failed", Status::Failed, Some(20)),
        ("old-cancelled", Status::Cancelled, Some(30)),
        ("at-cutoff", Status::RolledBack, Some(100)),
        ("recent", Status::Succeeded, Some(150)),
        ("running", Status::Running, None),
        ("paused", Status::Paused, None),
        ("escalated", Status::Escalated, None),
    ];
    for (id, status, finished) in specs {
        let lease =
            store.create(new_execution(id, "w", at(0)), vec![created(1, "w")]).await.unwrap();
        let summary =
            Summary { status, started_at: Some(at(1)), finished_at: finished.map(at), error: None };
        let results = store.commit(vec![commit(&lease, steps(2, 3), summary)]).await.unwrap();
        assert_eq!(results, vec![Ok(())]);
        store
            .request(id, Request { action: Action::Resume, by: "t".into(), reason: None }, at(2))
            .await
            .unwrap();
        store.append_logs(vec![log(id, "s", "line", 2)]).await.unwrap();
    }

    assert_eq!(store.gc(at(100)).await.unwrap(), 3);
    for gone in ["old-succeeded", "old-failed", "old-cancelled"] {
        assert_eq!(store.get(gone).await, Err(Error::NotFound(gone.into())));
        assert_eq!(store.events(gone, 0, 10).await, Err(Error::NotFound(gone.into())));
        assert_eq!(store.logs(gone, None, 0, 10).await, Err(Error::NotFound(gone.into())));
        assert_eq!(store.requests(vec![gone.into()]).await.unwrap(), Vec::new());
    }
    for kept in ["at-cutoff", "recent", "running", "paused", "escalated"] {
        assert_eq!(store.get(kept).await.unwrap().last_seq, 4, "{kept}");
        assert_eq!(store.events(kept, 0, 10).await.unwrap().len(), 4, "{kept}");
        assert_eq!(store.logs(kept, None, 0, 10).await.unwrap().len(), 1, "{kept}");
        assert_eq!(store.requests(vec![kept.into()]).await.unwrap().len(), 1, "{kept}");
    }
    assert_eq!(store.gc(at(100)).await.unwrap(), 0);
    assert_eq!(store.list(Filter::default()).await.unwrap().len(), 5);

    // An id freed by gc can be used again, from a fresh journal.
    store.create(new_execution("old-failed", "w", at(200)), vec![created(1, "w")]).await.unwrap();
    assert_eq!(store.events("old-failed", 0, 10).await.unwrap().len(), 1);
    assert_eq!(store.logs("old-failed", None, 0, 10).await.unwrap(), Vec::new());
    assert_eq!(store.requests(vec!["old-failed".into()]).await.unwrap(), Vec::new());
}

/// An idempotency key names at most one execution: a second create with it stores nothing,
/// and the key is free again once its execution is deleted.
pub async fn idempotency_keys_name_one_execution<S: Store>(store: S) {
    let keyed = |id: &str, key: &str| NewExecution {
        idempotency_key: Some(key.into()),
        ..new_execution(id, "w", at(0))
    };
    assert_eq!(store.by_idempotency_key("k1").await.unwrap(), None);
    let lease = store.create(keyed("e1", "k1"), vec![created(1, "w")]).await.unwrap();
    store.create(keyed("e2", "k2"), vec![created(1, "w")]).await.unwrap();
    store.create(new_execution("e3", "w", at(0)), vec![created(1, "w")]).await.unwrap();
    store.create(new_execution("e4", "w", at(0)), vec![created(1, "w")]).await.unwrap();
    assert_eq!(store.by_idempotency_key("k1").await.unwrap().as_deref(), Some("e1"));
    assert_eq!(store.by_idempotency_key("k2").await.unwrap().as_deref(), Some("e2"));
    assert_eq!(store.by_idempotency_key("K1").await.unwrap(), None);

    let again = store.create(keyed("e5", "k1"), vec![created(1, "w")]).await;
    assert_eq!(again, Err(Error::Exists("e5".into())));
    assert_eq!(store.get("e5").await, Err(Error::NotFound("e5".into())));
    assert_eq!(store.events("e5", 0, 10).await, Err(Error::NotFound("e5".into())));

    let done = Summary {
        status: Status::Succeeded,
        started_at: Some(at(1)),
        finished_at: Some(at(2)),
        error: None,
    };
    assert_eq!(store.commit(vec![commit(&lease, Vec::new(), done)]).await.unwrap(), vec![Ok(())]);
    assert_eq!(store.gc(at(3)).await.unwrap(), 1);
    assert_eq!(store.by_idempotency_key("k1").await.unwrap(), None);
    store.create(keyed("e5", "k1"), vec![created(1, "w")]).await.unwrap();
    assert_eq!(store.by_idempotency_key("k1").await.unwrap().as_deref(), Some("e5"));
}

/// Tokens: names and ids are unique, a token is found by its id, listed by name, and gone
/// once revoked.
pub async fn tokens_are_added_found_listed_and_revoked<S: Store>(store: S) {
    let token = |name: &str, id: &str, expires: Option<i64>| TokenRecord {
        name: name.into(),
        id: id.into(),
        hash: format!("{:064x}", id.len()),
        role: "operate".into(),
        created_at: at(0),
        expires_at: expires.map(at),
    };
    assert_eq!(store.tokens().await.unwrap(), Vec::new());
    store.add_token(token("ci", "id1", None)).await.unwrap();
    store.add_token(token("alice", "id2", Some(90))).await.unwrap();
    assert_eq!(store.add_token(token("ci", "id3", None)).await, Err(Error::Exists("ci".into())));
    assert_eq!(store.add_token(token("bob", "id1", None)).await, Err(Error::Exists("bob".into())));
    assert_eq!(store.token("id2").await.unwrap(), Some(token("alice", "id2", Some(90))));
    assert_eq!(store.token("id3").await.unwrap(), None);
    let names: Vec<String> = store.tokens().await.unwrap().into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["alice", "ci"]);
    assert!(store.revoke_token("ci").await.unwrap());
    assert!(!store.revoke_token("ci").await.unwrap());
    assert_eq!(store.token("id1").await.unwrap(), None);
    store.add_token(token("ci", "id4", None)).await.unwrap();
}

/// The registry: a new source is a new version, the same source is not, versions never
/// change, and deleting removes every version.
pub async fn workflow_versions_grow_only_when_the_source_changes<S: Store>(store: S) {
    assert_eq!(store.workflows().await.unwrap(), Vec::new());
    assert_eq!(store.workflow_versions("deploy").await, Err(Error::NotFound("deploy".into())));
    let (first, new) = store.put_workflow("deploy", "v: 1", at(0)).await.unwrap();
    assert!(new);
    assert_eq!((first.version, first.source.as_str(), first.created_at), (1, "v: 1", at(0)));
    let (same, new) = store.put_workflow("deploy", "v: 1", at(5)).await.unwrap();
    assert!(!new);
    assert_eq!(same, first);
    let (second, new) = store.put_workflow("deploy", "v: 2", at(10)).await.unwrap();
    assert!(new);
    assert_eq!(second.version, 2);
    // Back to an older source is a new version too: versions only grow.
    let (third, _) = store.put_workflow("deploy", "v: 1", at(20)).await.unwrap();
    assert_eq!(third.version, 3);
    store.put_workflow("backup", "b", at(30)).await.unwrap();

    let versions = store.workflow_versions("deploy").await.unwrap();
    assert_eq!(versions.iter().map(|v| v.version).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(versions[0], first);
    let newest: Vec<(String, u32)> =
        store.workflows().await.unwrap().into_iter().map(|v| (v.name, v.version)).collect();
    assert_eq!(newest, [("backup".to_owned(), 1), ("deploy".to_owned(), 3)]);

    assert!(store.delete_workflow("deploy").await.unwrap());
    assert!(!store.delete_workflow("deploy").await.unwrap());
    assert_eq!(store.workflow_versions("deploy").await, Err(Error::NotFound("deploy".into())));
    assert_eq!(store.put_workflow("deploy", "v: 9", at(40)).await.unwrap().0.version, 1);
}

/// `changed` wakes when a commit or a request lands while it waits.
pub async fn changed_wakes_on_commit_and_request<S: Store>(store: S) {
    let lease = store.create(new_execution("e1", "w", at(0)), vec![created(1, "w")]).await.unwrap();
    let patience = Duration::from_secs(20);

    let started = Instant::now();
    let writer = async {
        store.commit(vec![commit(&lease, steps(2, 1), running(at(1)))]).await.unwrap();
    };
    tokio::join!(store.changed(patience), writer);
    assert!(
        started.elapsed() < patience / 2,
        "changed() did not wake on a commit: {:?}",
        started.elapsed()
    );

    let started = Instant::now();
    let requester = async {
        store
            .request("e1", Request { action: Action::Resume, by: "t".into(), reason: None }, at(2))
            .await
            .unwrap();
    };
    tokio::join!(store.changed(patience), requester);
    assert!(
        started.elapsed() < patience / 2,
        "changed() did not wake on a request: {:?}",
        started.elapsed()
    );
}

/// With nothing happening, `changed` still returns once its timeout has passed.
pub async fn changed_returns_by_the_timeout<S: Store>(store: S) {
    store.create(new_execution("e1", "w", at(0)), vec![created(1, "w")]).await.unwrap();
    let started = Instant::now();
    store.changed(Duration::from_millis(50)).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "changed() overslept: {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// Fixtures shared by the cases.

const TTL: Duration = Duration::from_secs(30);

/// `seconds` after a fixed origin.
fn at(seconds: i64) -> Time {
    Time::from_micros(1_764_090_000_000_000 + seconds * 1_000_000)
}

fn new_execution(id: &str, workflow: &str, created_at: Time) -> NewExecution {
    NewExecution {
        id: id.into(),
        workflow: workflow.into(),
        created_at,
        owner: "engine-a".into(),
        ttl: TTL,
        summary: Summary {
            status: Status::Pending,
            started_at: None,
            finished_at: None,
            error: None,
        },
        idempotency_key: None,
    }
}

fn event(seq: u64, kind: EventKind) -> Event {
    Event::new(seq, Time::from_micros(at(0).as_micros() + seq as i64), kind)
}

fn created(seq: u64, workflow: &str) -> Event {
    event(
        seq,
        EventKind::Created {
            workflow: workflow.into(),
            source: format!("name: {workflow}\nsteps:\n  - id: build\n    run: echo \"hi\"\n"),
            path: "flows/release.yaml".into(),
            inputs: object(
                json!({ "version": "1.2.3", "replicas": 3, "flags": { "dry_run": false } }),
            ),
            imports: Default::default(),
        },
    )
}

fn created_event(workflow: &str) -> Event {
    created(1, workflow)
}

fn step_event(seq: u64, step: &str) -> Event {
    event(
        seq,
        EventKind::AttemptStarted {
            item: None,
            step: step.into(),
            attempt: 1,
            compensation: false,
            until: None,
        },
    )
}

/// `count` events from `first` on, for steps named after their sequence number.
fn steps(first: u64, count: u64) -> Vec<Event> {
    (first..first + count).map(|seq| step_event(seq, &format!("s{seq}"))).collect()
}

fn seqs(events: &[Event]) -> Vec<u64> {
    events.iter().map(|e| e.seq).collect()
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn running(started: Time) -> Summary {
    Summary { status: Status::Running, started_at: Some(started), finished_at: None, error: None }
}

fn paused(started: Time) -> Summary {
    Summary { status: Status::Paused, started_at: Some(started), finished_at: None, error: None }
}

fn failed(finished: Time) -> Summary {
    Summary {
        status: Status::Failed,
        started_at: Some(at(1)),
        finished_at: Some(finished),
        error: Some("step `build` failed: exit 1".into()),
    }
}

fn commit(lease: &Lease, events: Vec<Event>, summary: Summary) -> Commit {
    Commit { lease: lease.clone(), events, summary, handled: Vec::new() }
}

/// A commit of one `Resumed` event at `seq` that answers `requests`.
fn handled(lease: &Lease, seq: u64, requests: Vec<u64>) -> Commit {
    let resumed = event(seq, EventKind::Resumed { actor: Actor { by: "t".into(), reason: None } });
    Commit {
        lease: lease.clone(),
        events: vec![resumed],
        summary: running(at(1)),
        handled: requests,
    }
}

fn log(execution: &str, step: &str, text: &str, second: i64) -> LogLine {
    LogLine {
        execution: execution.into(),
        line: 0,
        step: step.into(),
        // The lines of `test` come from an item of a fan-out.
        item: (step == "test").then_some(7),
        attempt: 2,
        kind: if step == "test" {
            wayline_journal::AttemptKind::Compensation
        } else {
            wayline_journal::AttemptKind::Step
        },
        stream: if step == "test" { "stderr".into() } else { "stdout".into() },
        time: at(second),
        text: text.into(),
    }
}

/// Catches a panic of the wrapped future, so that the fixture is torn down before the test
/// fails.
struct CatchUnwind<'a>(Pin<Box<dyn Future<Output = ()> + 'a>>);

impl Future for CatchUnwind<'_> {
    type Output = Result<(), Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(())) => Poll::Ready(Ok(())),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}
