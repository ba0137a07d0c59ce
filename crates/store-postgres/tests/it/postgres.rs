//! What only a shared PostgreSQL server can get wrong: servers migrating at once, newer
//! schemas, unreachable or restarting servers, connections killed under the store, and
//! notifications between processes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use wayline_journal::Status;
use wayline_journal::{Event, EventKind, Time};
use wayline_store::{Commit, Error, Filter, Lease, LogLine, NewExecution, Store, Summary};
use wayline_store_postgres::{Options, PostgresStore, SCHEMA_VERSION};

use crate::{admin, in_schema, random_schema, server};

/// Several servers starting at once on a fresh database: every one comes up, the migrations
/// ran once, and starting again changes nothing.
#[tokio::test]
async fn concurrent_migrations_apply_once() {
    let Some(url) = server() else { return };
    let schema = random_schema();
    let options = Options { schema: schema.clone(), ..Options::default() };
    in_schema(&url, &schema, async {
        let started = tokio::join!(
            PostgresStore::connect(&url, options.clone()),
            PostgresStore::connect(&url, options.clone()),
            PostgresStore::connect(&url, options.clone()),
            PostgresStore::connect(&url, options.clone()),
        );
        let stores = [started.0, started.1, started.2, started.3];
        let outcome = async {
            for store in &stores {
                assert!(store.is_ok(), "{store:?}");
            }
            let again = PostgresStore::connect(&url, options.clone()).await.unwrap();
            assert!(again.list(Filter::default()).await.unwrap().is_empty());
            let versions: Vec<i64> = admin(&url)
                .await
                .query(
                    &format!("SELECT version FROM \"{schema}\".schema_migrations ORDER BY version"),
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|row| row.get(0))
                .collect();
            assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
        };
        outcome.await;
    })
    .await;
}

/// A schema migrated by a newer wayline is refused, and left exactly as it was.
#[tokio::test]
async fn a_newer_schema_is_refused_and_untouched() {
    let Some(url) = server() else { return };
    let schema = random_schema();
    let options = Options { schema: schema.clone(), ..Options::default() };
    in_schema(&url, &schema, async {
    drop(PostgresStore::connect(&url, options.clone()).await.unwrap());
    let admin = admin(&url).await;
    admin.batch_execute(&format!("INSERT INTO \"{schema}\".schema_migrations (version) VALUES (99)")).await.unwrap();
    let snapshot = || async {
        let tables: Vec<String> = admin
            .query("SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1", &[&schema])
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        let versions: Vec<i64> = admin
            .query(&format!("SELECT version FROM \"{schema}\".schema_migrations ORDER BY 1"), &[])
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        (tables, versions)
    };
    let before = snapshot().await;

    let refused = PostgresStore::connect(&url, options).await;
    assert_eq!(refused.err(), Some(Error::SchemaTooNew { found: 99, supported: SCHEMA_VERSION }));
    assert_eq!(snapshot().await, before);
    })
    .await;
}

/// Nobody listening: `Unavailable` at once, naming the server and the reason, never the
/// password. Malformed configuration is `Config`.
#[tokio::test]
async fn an_unreachable_server_is_unavailable_quickly() {
    let started = Instant::now();
    let refused =
        PostgresStore::connect("postgres://wayline:s3cret@127.0.0.1:1/wayline", Options::default())
            .await;
    let Err(Error::Unavailable(message)) = refused else {
        panic!("expected Unavailable, got {refused:?}")
    };
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(message.contains("127.0.0.1:1") && message.contains("refused"), "{message}");
    assert!(!message.contains("s3cret"), "the password must not appear: {message}");

    let malformed = PostgresStore::connect(
        "postgres://wayline:s3cret@127.0.0.1:notaport/db",
        Options::default(),
    )
    .await;
    let Err(Error::Config(message)) = malformed else {
        panic!("expected Config, got {malformed:?}")
    };
    assert!(!message.contains("s3cret"), "the password must not appear: {message}");

    let options = Options { schema: "Robert'); DROP TABLE".into(), ..Options::default() };
    let bad_schema = PostgresStore::connect("postgres://postgres@127.0.0.1:1/test", options).await;
    assert!(matches!(bad_schema, Err(Error::Config(_))), "{bad_schema:?}");
}

/// The server answers but refuses: a database that does not exist.
#[tokio::test]
async fn a_missing_database_is_reported() {
    let Some(url) = server() else { return };
    let config: tokio_postgres::Config = url.parse().unwrap();
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(host) => host.clone(),
        tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("postgres");
    let missing = PostgresStore::connect(
        &format!("postgres://{user}@{host}:{port}/wayline_no_such_database"),
        Options::default(),
    )
    .await;
    let Err(Error::Unavailable(message)) = missing else {
        panic!("expected Unavailable, got {missing:?}")
    };
    assert!(
        message.contains("wayline_no_such_database") && message.contains("does not exist"),
        "{message}"
    );
}

/// An administrator terminates every connection of the store: the very next operations work
/// on new connections, and notifications resume.
#[tokio::test]
async fn killed_connections_are_replaced() {
    let Some(url) = server() else { return };
    let schema = random_schema();
    let application = format!("wayline-kill-{schema}");
    let separator = if url.contains('?') { '&' } else { '?' };
    let tagged = format!("{url}{separator}application_name={application}");
    let options = Options { schema: schema.clone(), ..Options::default() };
    let store = PostgresStore::connect(&tagged, options.clone()).await.unwrap();
    let other = PostgresStore::connect(&url, options).await.unwrap();
    let admin = admin(&url).await;

    let outcome = async {
        let lease = create(&store, "e1").await;
        // Fill the pool and start listening.
        let (a, b, c) =
            tokio::join!(store.list(Filter::default()), store.get("e1"), store.events("e1", 0, 10));
        assert!(a.is_ok() && b.is_ok() && c.is_ok(), "{a:?} {b:?} {c:?}");
        store.changed(Duration::from_millis(1)).await; // starts listening
        let killed = terminate(&admin, &application).await;
        assert!(killed >= 2, "expected the pool and the listener to be terminated, got {killed}");

        assert_eq!(store.commit(vec![step(&lease, 2)]).await.unwrap(), vec![Ok(())]);
        assert_eq!(store.get("e1").await.unwrap().last_seq, 2);
        let (a, b) = tokio::join!(store.list(Filter::default()), store.events("e1", 0, 10));
        assert_eq!((a.unwrap().len(), b.unwrap().len()), (1, 2));

        // Killed again while idle, then a burst of reads and writes.
        terminate(&admin, &application).await;
        for seq in 3..10 {
            assert_eq!(
                store.commit(vec![step(&lease, seq)]).await.unwrap(),
                vec![Ok(())],
                "seq {seq}"
            );
        }

        // The listener comes back too: another process's commit wakes us.
        let lease_e2 = create(&other, "e2").await;
        let started = Instant::now();
        let patience = Duration::from_secs(20);
        let mut seq = 1;
        let writes = async {
            loop {
                seq += 1;
                assert_eq!(other.commit(vec![step(&lease_e2, seq)]).await.unwrap(), vec![Ok(())]);
            }
        };
        let noticed = async {
            loop {
                store.changed(patience).await;
                if store.get("e2").await.unwrap().last_seq > 1 {
                    return;
                }
            }
        };
        tokio::select! {
            () = noticed => {}
            () = writes => unreachable!(),
        }
        assert!(
            started.elapsed() < patience / 4,
            "the notification never came: {:?}",
            started.elapsed()
        );
    };
    in_schema(&url, &schema, outcome).await;
}

/// A commit or a request in one process wakes `changed()` in another, through NOTIFY.
#[tokio::test]
async fn another_process_is_notified() {
    let Some(url) = server() else { return };
    let schema = random_schema();
    let options = Options { schema: schema.clone(), ..Options::default() };
    let owner = PostgresStore::connect(&url, options.clone()).await.unwrap();
    let cli = PostgresStore::connect(&url, options).await.unwrap();
    let outcome = async {
        let lease = create(&owner, "e1").await;
        let patience = Duration::from_secs(20);
        let started = Instant::now();
        // Keep writing until the other side notices: it starts listening on its first wait.
        let mut seq = 1;
        let commits = async {
            loop {
                seq += 1;
                assert_eq!(owner.commit(vec![step(&lease, seq)]).await.unwrap(), vec![Ok(())]);
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
        assert!(started.elapsed() < patience / 4, "no notification after {:?}", started.elapsed());

        // Now that it listens, a single request is enough.
        let started = Instant::now();
        let pause = wayline_store::Request {
            action: wayline_store::Action::Pause { until: None },
            by: "alice".into(),
            reason: None,
        };
        let noticed = async {
            loop {
                owner.changed(patience).await;
                if !owner.requests(vec!["e1".into()]).await.unwrap().is_empty() {
                    return;
                }
            }
        };
        let (_, requested) = tokio::join!(noticed, async {
            // Let the owner's listener come up first (its first wait started it).
            owner.changed(Duration::from_millis(200)).await;
            cli.request("e1", pause, Time::from_micros(5)).await
        });
        requested.unwrap();
        assert!(started.elapsed() < patience / 4, "no notification after {:?}", started.elapsed());
    };
    in_schema(&url, &schema, outcome).await;
}

/// The server goes away (a restart) while a store is in use: operations fail with
/// `Unavailable` quickly while it is down and work again once it is back, with the same
/// store handle.
#[tokio::test]
async fn a_restarting_server_is_unavailable_then_recovers() {
    let Some(url) = server() else { return };
    let config: tokio_postgres::Config = url.parse().unwrap();
    let tokio_postgres::config::Host::Tcp(host) = &config.get_hosts()[0] else {
        eprintln!("SKIPPED: the restart test needs a TCP server URL");
        return;
    };
    let upstream: SocketAddr = tokio::net::lookup_host((
        host.as_str(),
        config.get_ports().first().copied().unwrap_or(5432),
    ))
    .await
    .unwrap()
    .next()
    .unwrap();
    let schema = random_schema();
    let mut proxy = Proxy::start(upstream).await;
    let user = config.get_user().unwrap_or("postgres");
    let database = config.get_dbname().unwrap_or(user);
    let through_proxy = format!("postgres://{user}@127.0.0.1:{}/{database}", proxy.port);
    let options = Options {
        schema: schema.clone(),
        connect_timeout: Duration::from_secs(2),
        ..Options::default()
    };
    let store = PostgresStore::connect(&through_proxy, options).await.unwrap();

    let outcome = async {
        let lease = create(&store, "e1").await;
        assert_eq!(store.commit(vec![step(&lease, 2)]).await.unwrap(), vec![Ok(())]);

        proxy.stop().await;
        let started = Instant::now();
        let down = store.commit(vec![step(&lease, 3)]).await;
        let Err(Error::Unavailable(message)) = down else {
            panic!("expected Unavailable, got {down:?}")
        };
        assert!(message.contains(&format!("127.0.0.1:{}", proxy.port)), "{message}");
        let read = store.get("e1").await;
        assert!(matches!(read, Err(Error::Unavailable(_))), "{read:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "failing took {:?}", started.elapsed());
        // changed() does not hang on a server that is down.
        store.changed(Duration::from_millis(50)).await;

        proxy.restart().await;
        assert_eq!(store.commit(vec![step(&lease, 3)]).await.unwrap(), vec![Ok(())]);
        let record = store.get("e1").await.unwrap();
        assert_eq!((record.last_seq, record.status), (3, Status::Running));
    };
    in_schema(&url, &schema, outcome).await;
    proxy.stop().await;
}

/// PostgreSQL text cannot hold NUL; free text with one is stored with U+FFFD instead of
/// failing the whole batch, and log text keeps it exactly.
#[tokio::test]
async fn nul_characters_do_not_break_commits() {
    let Some(url) = server() else { return };
    let schema = random_schema();
    let store =
        PostgresStore::connect(&url, Options { schema: schema.clone(), ..Options::default() })
            .await
            .unwrap();
    let outcome = async {
        let lease = create(&store, "e1").await;
        let mut commit = step(&lease, 2);
        commit.summary.error = Some("exit 1: \u{0}binary".into());
        assert_eq!(store.commit(vec![commit]).await.unwrap(), vec![Ok(())]);
        assert_eq!(store.get("e1").await.unwrap().error.as_deref(), Some("exit 1: \u{FFFD}binary"));
        let line = LogLine {
            execution: "e1".into(),
            line: 0,
            item: None,
            step: "s\u{0}".into(),
            attempt: 1,
            kind: wayline_journal::AttemptKind::Step,
            stream: "stdout".into(),
            time: Time::from_micros(1),
            text: "a\u{0}b".into(),
        };
        store.append_logs(vec![line]).await.unwrap();
        let lines = store.logs("e1", None, 0, 10).await.unwrap();
        assert_eq!((lines[0].text.as_str(), lines[0].step.as_str()), ("a\u{0}b", "s\u{FFFD}"));
        assert_eq!(store.get("e1\u{0}").await, Err(Error::NotFound("e1\u{0}".into())));
    };
    in_schema(&url, &schema, outcome).await;
}

// ---------------------------------------------------------------------------------------------

/// Terminates every backend of `application`; returns how many.
async fn terminate(admin: &tokio_postgres::Client, application: &str) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name = $1 AND pid <> pg_backend_pid()",
            &[&application],
        )
        .await
        .unwrap()
        .get(0)
}

/// A TCP forwarder standing in for the server: stopping it closes every connection and the
/// port, as a restarting server does.
struct Proxy {
    port: u16,
    upstream: SocketAddr,
    stop: Option<watch::Sender<bool>>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut proxy = Proxy { port, upstream, stop: None };
        proxy.serve(listener);
        proxy
    }

    async fn restart(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        self.serve(listener);
    }

    /// Closes the port and every forwarded connection.
    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
            // The accept loop and the pumps hold receivers: wait until all let go.
            stop.closed().await;
        }
    }

    fn serve(&mut self, listener: TcpListener) {
        let (stop, stopped) = watch::channel(false);
        self.stop = Some(stop);
        let upstream = self.upstream;
        // Test scaffolding: the accept loop and its pumps end when `stop` fires.
        #[allow(clippy::disallowed_methods)]
        tokio::spawn(async move {
            let mut until_stopped = stopped.clone();
            loop {
                tokio::select! {
                    _ = until_stopped.changed() => return,
                    accepted = listener.accept() => {
                        let Ok((client, _)) = accepted else { return };
                        let mut until_stopped = stopped.clone();
                        #[allow(clippy::disallowed_methods)]
                        tokio::spawn(async move {
                            let Ok(server) = TcpStream::connect(upstream).await else { return };
                            let (mut client, mut server) = (client, server);
                            tokio::select! {
                                _ = until_stopped.changed() => {}
                                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            }
                        });
                    }
                }
            }
        });
    }
}

async fn create(store: &PostgresStore, id: &str) -> Lease {
    let new = NewExecution {
        id: id.into(),
        workflow: "flow".into(),
        created_at: Time::from_micros(0),
        owner: "engine".into(),
        ttl: Duration::from_secs(60),
        summary: wayline_store::Summary {
            status: wayline_journal::Status::Pending,
            started_at: None,
            finished_at: None,
            error: None,
        },
        idempotency_key: None,
    };
    store
        .create(
            new,
            vec![Event {
                v: wayline_journal::FORMAT,
                seq: 1,
                time: Time::from_micros(0),
                kind: EventKind::Started,
            }],
        )
        .await
        .unwrap()
}

fn step(lease: &Lease, seq: u64) -> Commit {
    let event = Event {
        v: wayline_journal::FORMAT,
        seq,
        time: Time::from_micros(seq as i64),
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
        started_at: Some(Time::from_micros(0)),
        finished_at: None,
        error: None,
    };
    Commit { lease: lease.clone(), events: vec![event], summary, handled: Vec::new() }
}
