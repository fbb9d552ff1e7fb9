//! Transport security: with --tls-cert and --tls-key the server speaks TLS only, and a bad
//! certificate or key stops the start with the flag and the file named.

mod common;

use std::time::Duration;

use common::open_database;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A self-signed certificate for localhost and its key, as PEM files in `dir`.
fn certificate(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .expect("a self-signed certificate");
    let cert_pem = certified.cert.pem();
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    std::fs::write(&cert, &cert_pem).expect("write the certificate");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write the key");
    (cert, key, cert_pem)
}

#[tokio::test]
async fn with_a_certificate_the_server_speaks_tls_and_refuses_plaintext() {
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key, cert_pem) = certificate(dir.path());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let (mut config, store) = open_database(&dir.path().join("tls.db"), address).await;
    config.tls_cert = Some(cert);
    config.tls_key = Some(key);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        stigmer_grpc::run(&config, store, listener, async {
            let _ = stopped.await;
        })
        .await
    });

    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&cert_pem))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://localhost:{}", address.port()))
        .expect("uri")
        .tls_config(tls)
        .expect("tls config")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("a TLS connection");
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .expect("health over TLS")
        .into_inner();
    assert_eq!(answer.status(), ServingStatus::Serving);

    let plaintext = Channel::from_shared(format!("http://{address}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await;
    if let Ok(channel) = plaintext {
        let refused = tokio::time::timeout(
            Duration::from_secs(30),
            HealthClient::new(channel).check(HealthCheckRequest::default()),
        )
        .await
        .expect("plaintext is answered or dropped in time");
        assert!(refused.is_err(), "plaintext HTTP/2 was served: {refused:?}");
    }

    let _ = stop.send(());
    server
        .await
        .expect("server task")
        .expect("server stops cleanly");
}

#[tokio::test]
async fn a_missing_or_wrong_certificate_or_key_stops_the_start_naming_the_flag_and_file() {
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key, _) = certificate(dir.path());
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a pem file").expect("write");
    let missing = dir.path().join("missing.key");
    for (cert, key, flag, file) in [
        (&cert, &missing, "--tls-key", &missing),
        (&garbage, &key, "--tls-cert", &garbage),
        (&cert, &cert, "--tls-key", &cert),
    ] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let (mut config, store) = open_database(&dir.path().join("refused.db"), address).await;
        config.tls_cert = Some(cert.clone());
        config.tls_key = Some(key.clone());
        let err = stigmer_grpc::run(&config, store, listener, async {})
            .await
            .expect_err("a bad TLS file is refused");
        let message = err.to_string();
        assert!(message.starts_with(flag), "{message}");
        assert!(message.contains(&file.display().to_string()), "{message}");
        assert!(
            !message.contains("BEGIN"),
            "file contents leaked: {message}"
        );
    }
}

/// Beyond loopback, a server needs both TLS and API keys; with both it serves there.
#[tokio::test]
async fn beyond_loopback_only_tls_with_api_keys_is_served() {
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key, cert_pem) = certificate(dir.path());
    let with = |tls: bool, keys: bool| {
        let (cert, key) = (cert.clone(), key.clone());
        move |config: &mut stigmer_grpc::ServerConfig| {
            if tls {
                config.tls_cert = Some(cert);
                config.tls_key = Some(key);
            }
            if keys {
                config.auth = stigmer_grpc::AuthMode::ApiKey;
            }
        }
    };
    for (tls, keys, missing) in [
        (false, false, "TLS and API keys"),
        (true, false, "--auth apikey"),
        (false, true, "--tls-cert"),
    ] {
        let listener = tokio::net::TcpListener::bind("0.0.0.0:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let (mut config, store) = open_database(&dir.path().join("refused.db"), address).await;
        with(tls, keys)(&mut config);
        let err = stigmer_grpc::run(&config, store, listener, async {})
            .await
            .expect_err("refused beyond loopback");
        let message = err.to_string();
        assert!(
            message.contains(missing) && message.contains("--allow-insecure"),
            "{message}"
        );
    }

    let listener = tokio::net::TcpListener::bind("0.0.0.0:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let (mut config, store) = open_database(&dir.path().join("served.db"), address).await;
    with(true, true)(&mut config);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        stigmer_grpc::run(&config, store, listener, async {
            let _ = stopped.await;
        })
        .await
    });
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&cert_pem))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://127.0.0.1:{}", address.port()))
        .expect("uri")
        .tls_config(tls)
        .expect("tls config")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("a TLS connection");
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .expect("health needs no key")
        .into_inner();
    assert_eq!(answer.status(), ServingStatus::Serving);
    let _ = stop.send(());
    server
        .await
        .expect("server task")
        .expect("server stops cleanly");
}
