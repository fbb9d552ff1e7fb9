//! A client reaching a TLS server signed by a private certificate authority: it connects when
//! told to trust that CA (`ca_file`, as `stigmer login --ca-file` stores it) and fails when not.

use stigmer_client::{BackendConfig, BackendType, ClientConfig, CloudConfig};

struct TlsServer {
    port: u16,
    ca_file: std::path::PathBuf,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), stigmer_grpc::ServerError>>,
    _dir: tempfile::TempDir,
}

async fn tls_server() -> TlsServer {
    let dir = tempfile::tempdir().expect("dir");
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .expect("a self-signed certificate");
    let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    std::fs::write(&cert, certified.cert.pem()).expect("write the certificate");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write the key");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let options = stigmer_database::DatabaseOptions::sqlite(dir.path().join("s.db"));
    let database = stigmer_database::open(&options).await.expect("open");
    let mut config = stigmer_grpc::ServerConfig::new(address);
    config.master_key_file = database.default_key_file();
    config.tls_cert = Some(cert.clone());
    config.tls_key = Some(key);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        stigmer_grpc::run(&config, database.store, listener, async {
            let _ = stopped.await;
        })
        .await
    });
    TlsServer {
        port: address.port(),
        ca_file: cert,
        stop,
        task,
        _dir: dir,
    }
}

fn cloud(port: u16, ca_file: &str) -> ClientConfig {
    ClientConfig {
        backend: BackendConfig {
            kind: BackendType::Cloud,
            cloud: Some(CloudConfig {
                endpoint: format!("https://localhost:{port}"),
                ca_file: ca_file.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..ClientConfig::default()
    }
}

#[tokio::test]
async fn a_client_trusting_the_private_ca_connects_and_one_that_does_not_fails() {
    let server = tls_server().await;
    let ca_file = server.ca_file.display().to_string();
    let trusting = stigmer_client::connect(&cloud(server.port, &ca_file))
        .await
        .expect("connect");
    let info = trusting.info().await.expect("info over TLS");
    assert_eq!(info["backend"], "sqlite");

    let untrusting = stigmer_client::connect(&cloud(server.port, ""))
        .await
        .expect("a lazy channel");
    let refused = untrusting.info().await;
    assert!(
        refused.is_err(),
        "a certificate from an unknown CA was accepted"
    );

    let missing = stigmer_client::connect(&cloud(server.port, "/nonexistent/ca.pem")).await;
    let Err(err) = missing else {
        panic!("a missing CA file was accepted");
    };
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");

    let _ = server.stop.send(());
    server
        .task
        .await
        .expect("server task")
        .expect("server stops cleanly");
}
