//! Start-up against a server that is not there, says nothing, refuses the password or lacks
//! the database: each fails within seconds with an error saying which, and neither the errors
//! nor anything logged holds the password.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stigmer_postgres::{OpenError, PostgresConfig, PostgresStore};
use stigmer_store::{Scope, Store};

/// Everything logged, at every level, by the code running on this thread's runtime.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures the logs of whatever runs while the guard lives; tests using it run on a
/// current-thread runtime, so spawned tasks log here too.
fn capture_logs() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

/// Opens `url` expecting a failure; returns it and how long it took.
async fn open_failing(url: &str, connect_timeout: Duration) -> (OpenError, Duration) {
    let config = PostgresConfig {
        connect_timeout,
        ..PostgresConfig::new(url)
    };
    let started = Instant::now();
    match PostgresStore::open(&config).await {
        Ok(_) => panic!("opening {} succeeded", config.redacted_url()),
        Err(err) => (err, started.elapsed()),
    }
}

fn assert_secret_free(err: &OpenError, secrets: &[&str]) {
    let shown = format!("{err} / {err:?}");
    for secret in secrets {
        assert!(
            !shown.contains(secret),
            "the error shows a password: {shown}"
        );
    }
}

/// A port nobody listens on: bound, then let go.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

#[tokio::test]
async fn a_port_nobody_listens_on_fails_at_once_naming_the_server() {
    let port = closed_port();
    let url = format!("postgres://stigmer:hunter2-secret@127.0.0.1:{port}/stigmer");
    let (err, took) = open_failing(&url, Duration::from_secs(5)).await;
    assert!(matches!(err, OpenError::Unreachable { .. }), "{err:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("postgres://stigmer@127.0.0.1:{port}/stigmer")),
        "{text}"
    );
    assert!(text.to_lowercase().contains("refused"), "{text}");
    assert_secret_free(&err, &["hunter2-secret"]);
}

/// A server that accepts connections and never answers (a hung proxy, a wrong service)
/// holds start-up no longer than the connect timeout.
#[tokio::test]
async fn a_server_that_never_answers_fails_after_the_connect_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let url = format!("postgres://stigmer:hunter2-secret@127.0.0.1:{port}/stigmer");
    let (err, took) = open_failing(&url, Duration::from_secs(1)).await;
    silent.abort();
    assert!(matches!(err, OpenError::Unreachable { .. }), "{err:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "took {took:?}"
    );
    assert!(
        err.to_string().contains("no answer within 1000 ms"),
        "{err}"
    );
    assert_secret_free(&err, &["hunter2-secret"]);
}

#[tokio::test]
async fn a_wrong_password_is_refused_quickly_and_never_shown() {
    let server = common::server_url();
    let real = common::password_of(&server);
    let wrong = "not-the-password-7f3a";
    let (captured, _guard) = capture_logs();
    let (err, took) = open_failing(
        &common::with_password(&server, wrong),
        Duration::from_secs(5),
    )
    .await;
    assert!(matches!(err, OpenError::Authentication { .. }), "{err:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let text = err.to_string();
    assert!(text.contains("refused the credentials"), "{text}");
    assert!(text.contains("password authentication failed"), "{text}");
    assert_secret_free(&err, &[wrong, &real]);
    let logs = captured.text();
    assert!(
        !logs.contains(wrong) && !logs.contains(&real),
        "a log line shows a password:\n{logs}"
    );
}

#[tokio::test]
async fn a_missing_database_is_named_with_how_to_create_it() {
    let server = common::server_url();
    let real = common::password_of(&server);
    let (err, took) = open_failing(
        &common::with_database(&server, "no_such_database_here"),
        Duration::from_secs(5),
    )
    .await;
    assert!(matches!(err, OpenError::MissingDatabase { .. }), "{err:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let text = err.to_string();
    assert!(
        text.contains("database \"no_such_database_here\" does not exist")
            && text.contains("CREATE DATABASE no_such_database_here"),
        "{text}"
    );
    assert_secret_free(&err, &[&real]);
}

#[tokio::test]
async fn a_malformed_url_is_refused_without_echoing_it() {
    for url in [
        "postgres://stigmer:hunter2-secret@127.0.0.1:notaport/stigmer",
        "postgres://stigmer:hunter2-secret@127.0.0.1:5432/stigmer?sslmode=sometimes",
        "mysql://stigmer:hunter2-secret@127.0.0.1/stigmer",
    ] {
        let (err, _) = open_failing(url, Duration::from_secs(1)).await;
        assert!(
            matches!(err, OpenError::InvalidUrl { .. }),
            "{url}: {err:?}"
        );
        assert_secret_free(&err, &["hunter2-secret"]);
    }
}

/// A whole session, start-up to close, logged at every level: the password appears nowhere,
/// nor does the configuration's Debug form show it.
#[tokio::test]
async fn a_session_logs_no_password() {
    let db = common::fresh_database().await;
    let password = common::password_of(&db.url);
    let (captured, _guard) = capture_logs();
    let config = db.config();
    assert!(!format!("{config:?}").contains(&password));
    let store = PostgresStore::open(&config).await.expect("open");
    store
        .create(common::resource("agt-1", "one"))
        .await
        .expect("create");
    let info = store.info("local".into()).await.expect("info");
    assert_eq!(info.backend, "postgres");
    assert!(
        info.location.starts_with("postgres://postgres@127.0.0.1:")
            && info.location.ends_with(&format!("/{}", db.name)),
        "{}",
        info.location
    );
    assert!(
        info.database.starts_with("PostgreSQL "),
        "{}",
        info.database
    );
    assert!(!info.location.contains(&password));
    assert!(
        store
            .get(Scope::new("Agent", "local"), "agt-1".into())
            .await
            .expect("get")
            .is_some()
    );
    store.close().await.expect("close");
    let logs = captured.text();
    assert!(
        !logs.is_empty(),
        "nothing was logged: is the capture working?"
    );
    assert!(
        !logs.contains(&password),
        "a log line shows the password:\n{logs}"
    );
}
