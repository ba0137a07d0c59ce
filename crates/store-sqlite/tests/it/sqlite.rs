//! What only a real SQLite file can get wrong: several processes sharing it, files that are
//! not wayline databases, directories that cannot be written, newer schemas, pragmas.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wayline_journal::Status;
use wayline_journal::{Event, EventKind, Time};
use wayline_store::{Action, Commit, Error, Filter, Lease, NewExecution, Request, Store, Summary};
use wayline_store_sqlite::{Options, SCHEMA_VERSION, SqliteStore, Synchronous};

/// Two handles on one file, as two `wayline` processes have (each its own connections and
/// writer), committing at the same time: every write lands, none fails with "database is
/// locked", and a third one lists while they write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_write_concurrently() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let (first, second, third) = tokio::join!(
        open(&path, Options::default()),
        open(&path, Options::default()),
        open(&path, Options::default())
    );

    let work = |store: SqliteStore, name: &'static str| async move {
        let mut leases = Vec::new();
        for n in 0..20 {
            leases.push(create(&store, &format!("{name}-{n:02}"), n).await);
        }
        for round in 0..25u64 {
            let commits = leases.iter().map(|lease| step(lease, 2 + round)).collect();
            let results = store.commit(commits).await.expect("no batch may fail");
            assert!(results.iter().all(Result::is_ok), "{results:?}");
            let held = store
                .renew(leases.clone(), Duration::from_secs(60), at(round as i64))
                .await
                .unwrap();
            assert!(held.iter().all(|held| *held));
        }
    };
    let reader = async {
        for _ in 0..50 {
            let listed =
                third.list(Filter::default()).await.expect("reads never fail under writes");
            assert!(listed.len() <= 40);
        }
    };
    tokio::join!(work(first.clone(), "a"), work(second.clone(), "b"), reader);

    // Each handle sees everything the other wrote.
    for store in [&first, &second, &third] {
        let listed = store.list(Filter::default()).await.unwrap();
        assert_eq!(listed.len(), 40);
        assert!(listed.iter().all(|record| record.last_seq == 26), "{listed:?}");
        assert_eq!(store.events("b-07", 0, 100).await.unwrap().len(), 26);
    }
}

/// A control request written by one process reaches the owner in another, and the owner's
/// `changed()` wakes for it without waiting for its timeout.
#[tokio::test]
async fn another_process_is_noticed_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let owner = open(&path, Options::default()).await;
    let cli = open(&path, Options::default()).await;
    let lease = create(&owner, "e1", 0).await;

    let patience = Duration::from_secs(20);
    let pause = Request { action: Action::Pause { until: None }, by: "alice".into(), reason: None };
    let started = Instant::now();
    // Keep writing until the owner notices: its watcher may start looking just after a write.
    let writes = async {
        loop {
            cli.request("e1", pause.clone(), at(1)).await.unwrap();
            tokio::task::yield_now().await;
        }
    };
    let noticed = async {
        // Wakes may be spurious: read after each.
        loop {
            owner.changed(patience).await;
            let requests = owner.requests(vec!["e1".into()]).await.unwrap();
            if let Some(first) = requests.first() {
                return first.request.clone();
            }
        }
    };
    let request = tokio::select! {
        request = noticed => request,
        () = writes => unreachable!(),
    };
    assert_eq!(request, pause);
    assert!(
        started.elapsed() < patience / 4,
        "another process's write went unnoticed for {:?}",
        started.elapsed()
    );

    // And the other way round: the CLI following the journal wakes on the owner's commit.
    let started = Instant::now();
    let mut seq = 1;
    let commits = async {
        loop {
            seq += 1;
            let results = owner.commit(vec![step(&lease, seq)]).await.unwrap();
            assert!(results.iter().all(Result::is_ok));
        }
    };
    let followed = async {
        loop {
            cli.changed(patience).await;
            if cli.get("e1").await.unwrap().last_seq > 1 {
                return;
            }
        }
    };
    tokio::select! {
        () = followed => {}
        () = commits => unreachable!(),
    }
    assert!(
        started.elapsed() < patience / 4,
        "the owner's commit went unnoticed for {:?}",
        started.elapsed()
    );
}

/// While another process holds the write lock, a write waits for it (busy timeout) instead of
/// failing; past the timeout it fails with a message naming the file, and works again later.
#[tokio::test]
async fn a_locked_database_waits_then_reports_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("locked.db");
    let options = Options { busy_timeout: Duration::from_millis(100), ..Options::default() };
    let store = open(&path, options).await;
    let lease = create(&store, "e1", 0).await;

    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = Instant::now();
    let locked = store.commit(vec![step(&lease, 2)]).await;
    let Err(Error::Unavailable(message)) = locked else {
        panic!("expected Unavailable, got {locked:?}")
    };
    assert!(message.contains("locked.db") && message.contains("locked"), "{message}");
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "it must wait for the busy timeout first"
    );
    // Reads are not blocked by another process's write transaction (WAL).
    assert_eq!(store.get("e1").await.unwrap().last_seq, 1);

    other.execute_batch("COMMIT").unwrap();
    let results = store.commit(vec![step(&lease, 2)]).await.unwrap();
    assert_eq!(results, vec![Ok(())]);
}

/// A write that finds another process's transaction in progress does not fail at once: it
/// waits on the writer thread and lands as soon as the lock is released.
#[tokio::test]
async fn a_write_behind_another_process_lands_when_the_lock_is_released() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let store = open(&path, Options::default()).await;
    let lease = create(&store, "e1", 0).await;

    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut waiting = Box::pin(store.commit(vec![step(&lease, 2)]));
    let early = tokio::time::timeout(Duration::from_millis(150), &mut waiting).await;
    assert!(early.is_err(), "the write must wait for the other transaction: {early:?}");
    other.execute_batch("COMMIT").unwrap();
    let results = tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap();
    assert_eq!(results.unwrap(), vec![Ok(())]);
    assert_eq!(store.get("e1").await.unwrap().last_seq, 2);
}

/// The write-ahead log is checkpointed (by the writer thread, off the commit path) as it
/// fills, so it does not grow with the number of commits.
#[tokio::test]
async fn the_log_is_checkpointed_as_it_fills() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.db");
    let store = open(&path, Options::default()).await;
    let lease = create(&store, "e1", 0).await;
    let wal = dir.path().join("busy.db-wal");
    let mut largest = 0;
    // Each commit writes at least two pages: 3,000 of them would make a log of 6,000 pages
    // (24 MB) without checkpoints.
    for seq in 2..3002u64 {
        let mut commit = step(&lease, seq);
        if let EventKind::AttemptStarted { step, .. } = &mut commit.events[0].kind {
            *step = format!("{seq}-{}", "x".repeat(4000));
        }
        assert_eq!(store.commit(vec![commit]).await.unwrap(), vec![Ok(())]);
        largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
    }
    let pages = largest / 4096;
    assert!(pages < 2500, "the log grew to {pages} pages");
    assert_eq!(store.get("e1").await.unwrap().last_seq, 3001);
}

/// Directories and files that cannot be written give `Unavailable`, naming the path and the
/// operating system's reason.
#[tokio::test]
async fn an_unwritable_location_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();

    // A file where the directory should be.
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, "plain file").unwrap();
    let path = file.join("wayline.db");
    let message = unavailable(&path).await;
    assert!(message.contains("not-a-directory") && message.contains("os error"), "{message}");

    // A directory given as the database file.
    let message = unavailable(dir.path()).await;
    assert!(message.contains(&dir.path().display().to_string()), "{message}");

    // A directory without write permission. Root ignores permissions, so there a directory
    // of sysfs, which nobody may create files in, stands in for it.
    let locked = dir.path().join("read-only");
    std::fs::create_dir(&locked).unwrap();
    set_mode(&locked, 0o555);
    let path = if permissions_enforced(&locked) {
        locked.join("wayline.db")
    } else {
        eprintln!(
            "running as root: checking an unwritable directory with /sys instead of permissions"
        );
        PathBuf::from("/sys/wayline-test.db")
    };
    let message = unavailable(&path).await;
    assert!(
        message.contains(&path.display().to_string()) && message.contains("ermission denied"),
        "{message}"
    );
    assert!(!path.exists());
    set_mode(&locked, 0o755);
}

/// A new database holds every execution's inputs, outputs and logs: it and its write-ahead
/// files are readable by their user only, whatever the umask. A missing directory is not
/// created (the caller decides where databases may go).
#[tokio::test]
async fn a_new_database_is_private_and_needs_its_directory() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("private.db");
    let store = open(&path, Options::default()).await;
    create(&store, "a", 1).await;
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", path.display()));
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    }
    drop(store);

    let missing = dir.path().join("missing").join("wayline.db");
    let message = unavailable(&missing).await;
    assert!(message.contains("missing"), "{message}");
    assert!(!dir.path().join("missing").exists(), "the directory was created");
}

/// A file that is not a SQLite database is `Corrupt`, named, and left as it was.
#[tokio::test]
async fn a_garbage_file_is_corrupt_and_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.db");
    let garbage: Vec<u8> =
        (0..8192u32).map(|n| (n.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&path, &garbage).unwrap();

    let message = corrupt(&path).await;
    assert!(message.contains("garbage.db"), "{message}");
    assert_eq!(std::fs::read(&path).unwrap(), garbage, "the file must be left as it was");

    // Text that happens to be short.
    std::fs::write(&path, "hello, I am a text file\n").unwrap();
    let message = corrupt(&path).await;
    assert!(message.contains("garbage.db"), "{message}");
    assert_eq!(std::fs::read(&path).unwrap(), b"hello, I am a text file\n");
}

/// Another application's SQLite database is refused, not migrated into.
#[tokio::test]
async fn a_foreign_database_is_refused_and_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers VALUES (1, 'x');")
            .unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let message = corrupt(&path).await;
    assert!(message.contains("other.db") && message.contains("not wayline's"), "{message}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

/// A wayline database whose pages were damaged after it was written reports `Corrupt`, at
/// open or at the first read, and never panics.
#[tokio::test]
async fn a_damaged_database_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("damaged.db");
    {
        let store = open(&path, Options::default()).await;
        for n in 0..50 {
            let lease = create(&store, &format!("e{n:02}"), n).await;
            store.commit(vec![step(&lease, 2)]).await.unwrap();
        }
    }
    // Fold the WAL into the file, then overwrite everything after the first page.
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    }
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 8192, "the database should span several pages");
    for byte in &mut bytes[4096..] {
        *byte = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();

    let outcome = match SqliteStore::open(&path, Options::default()).await {
        Err(error) => Err(error),
        Ok(store) => store.list(Filter::default()).await.map(drop),
    };
    let Err(Error::Corrupt(message)) = outcome else { panic!("expected Corrupt, got {outcome:?}") };
    assert!(message.contains("damaged.db"), "{message}");
}

/// A database written by a newer wayline is refused with `SchemaTooNew`, byte for byte as it
/// was.
#[tokio::test]
async fn a_newer_schema_is_refused_and_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("newer.db");
    {
        // What a future wayline leaves: its application id, a higher version, its tables.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA application_id = 2002876780; -- 0x7761796c, wayl
             PRAGMA user_version = 99;
             CREATE TABLE executions_v99 (id TEXT PRIMARY KEY);",
        )
        .unwrap();
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    }
    let before = std::fs::read(&path).unwrap();

    let refused = SqliteStore::open(&path, Options::default()).await;
    assert_eq!(refused.err(), Some(Error::SchemaTooNew { found: 99, supported: SCHEMA_VERSION }));
    assert_eq!(std::fs::read(&path).unwrap(), before, "a newer database must not be touched");
}

/// WAL mode, the chosen synchronous level, foreign keys, the busy timeout and the schema
/// version are really in force; reopening keeps the data.
#[tokio::test]
async fn pragmas_are_applied_and_data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wayline.db");

    let store = open(&path, Options::default()).await;
    let settings = store.settings().await.unwrap();
    assert_eq!(settings.journal_mode, "wal");
    assert_eq!(settings.synchronous, "normal");
    assert!(settings.foreign_keys);
    assert_eq!(settings.busy_timeout, Options::default().busy_timeout);
    assert_eq!(settings.schema_version, SCHEMA_VERSION);
    let lease = create(&store, "e1", 0).await;
    store.commit(vec![step(&lease, 2)]).await.unwrap();
    drop(store);

    let options = Options {
        synchronous: Synchronous::Full,
        busy_timeout: Duration::from_millis(1234),
        ..Options::default()
    };
    let store = open(&path, options).await;
    let settings = store.settings().await.unwrap();
    assert_eq!((settings.journal_mode.as_str(), settings.synchronous), ("wal", "full"));
    assert_eq!(settings.busy_timeout, Duration::from_millis(1234));
    let record = store.get("e1").await.unwrap();
    assert_eq!((record.last_seq, record.status), (2, Status::Running));

    // The mode is recorded in the file itself, for every process that opens it.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |row| row.get(0)).unwrap();
    assert_eq!(mode, "wal");
}

/// Several processes opening a fresh file at the same moment: one migrates, the others wait
/// and find the schema in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_opens_migrate_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fresh.db");
    let opened = tokio::join!(
        SqliteStore::open(&path, Options::default()),
        SqliteStore::open(&path, Options::default()),
        SqliteStore::open(&path, Options::default()),
        SqliteStore::open(&path, Options::default()),
    );
    for store in [opened.0, opened.1, opened.2, opened.3] {
        let store = store.expect("every open succeeds");
        assert_eq!(store.settings().await.unwrap().schema_version, SCHEMA_VERSION);
    }
}

/// The store's threads end, closing the file, when the last handle is dropped, and not
/// before.
#[tokio::test]
async fn threads_end_with_the_last_handle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wayline.db");
    let store = open(&path, Options::default()).await;
    let clone = store.clone();
    let mut closed = std::pin::pin!(store.closed());
    let lease = create(&store, "e1", 0).await;
    drop(store);

    // Still served through the clone.
    tokio::select! {
        biased;
        () = &mut closed => panic!("closed while a handle was left"),
        results = clone.commit(vec![step(&lease, 2)]) => assert_eq!(results.unwrap(), vec![Ok(())]),
    }
    let wal = dir.path().join("wayline.db-wal");
    assert!(wal.exists(), "an open WAL database has its -wal file");

    drop(clone);
    tokio::time::timeout(Duration::from_secs(20), closed).await.expect("the threads must end");
    // The last connection to close checkpoints the WAL and removes the file.
    assert!(!wal.exists(), "every connection must be closed once the threads ended");
    assert_eq!(open(&path, Options::default()).await.get("e1").await.unwrap().last_seq, 2);
}

// ---------------------------------------------------------------------------------------------

async fn open(path: &Path, options: Options) -> SqliteStore {
    SqliteStore::open(path, options)
        .await
        .unwrap_or_else(|error| panic!("open {}: {error}", path.display()))
}

async fn unavailable(path: &Path) -> String {
    match SqliteStore::open(path, Options::default()).await {
        Err(Error::Unavailable(message)) => message,
        other => panic!("{}: expected Unavailable, got {other:?}", path.display()),
    }
}

async fn corrupt(path: &Path) -> String {
    match SqliteStore::open(path, Options::default()).await {
        Err(Error::Corrupt(message)) => message,
        other => panic!("{}: expected Corrupt, got {other:?}", path.display()),
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Whether creating a file in `dir` (mode 0555) is refused, as it is for everyone but root.
fn permissions_enforced(dir: &Path) -> bool {
    let probe = dir.join("probe");
    match std::fs::write(&probe, "") {
        Ok(()) => {
            let _ = std::fs::remove_file(probe);
            false
        }
        Err(_) => true,
    }
}

fn at(seconds: i64) -> Time {
    Time::from_micros(1_764_090_000_000_000 + seconds * 1_000_000)
}

async fn create(store: &SqliteStore, id: &str, second: i64) -> Lease {
    let new = NewExecution {
        id: id.into(),
        workflow: "flow".into(),
        created_at: at(second),
        owner: "engine".into(),
        ttl: Duration::from_secs(60),
        summary: Summary {
            status: wayline_journal::Status::Pending,
            started_at: None,
            finished_at: None,
            error: None,
        },
        idempotency_key: None,
    };
    let created =
        Event { v: wayline_journal::FORMAT, seq: 1, time: at(second), kind: EventKind::Started };
    store.create(new, vec![created]).await.unwrap()
}

fn step(lease: &Lease, seq: u64) -> Commit {
    let event = Event {
        v: wayline_journal::FORMAT,
        seq,
        time: at(seq as i64),
        kind: EventKind::AttemptStarted {
            step: format!("s{seq}"),
            attempt: 1,
            compensation: false,
            until: None,
            item: None,
        },
    };
    let summary = Summary {
        status: Status::Running,
        started_at: Some(at(0)),
        finished_at: None,
        error: None,
    };
    Commit { lease: lease.clone(), events: vec![event], summary, handled: Vec::new() }
}
