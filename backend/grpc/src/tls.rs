//! Transport security: the server's certificate chain and key, read once at start-up (rustls,
//! through tonic). Without them the server speaks plaintext HTTP/2.

use std::path::{Path, PathBuf};

use tonic::transport::{Identity, ServerTlsConfig};

use crate::config::ServerConfig;
use crate::server::ServerError;

/// The TLS settings `config` asks for, or `None` for plaintext. Errors name the file and the
/// flag, never the key's bytes.
pub(crate) fn server_tls(config: &ServerConfig) -> Result<Option<ServerTlsConfig>, ServerError> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let cert_pem = read(cert, "--tls-cert")?;
    let key_pem = read(key, "--tls-key")?;
    check_pem(cert, "--tls-cert", &cert_pem, "CERTIFICATE")?;
    check_pem(key, "--tls-key", &key_pem, "PRIVATE KEY")?;
    Ok(Some(
        ServerTlsConfig::new().identity(Identity::from_pem(cert_pem, key_pem)),
    ))
}

fn read(path: &Path, flag: &'static str) -> Result<Vec<u8>, ServerError> {
    std::fs::read(path).map_err(|source| ServerError::TlsFile {
        flag,
        path: path.to_path_buf(),
        why: source.to_string(),
    })
}

/// rustls reports a bad PEM only when the first client connects; saying so at start-up names
/// the file to fix instead.
fn check_pem(
    path: &Path,
    flag: &'static str,
    pem: &[u8],
    label: &'static str,
) -> Result<(), ServerError> {
    let text = String::from_utf8_lossy(pem);
    let found = text
        .lines()
        .any(|line| line.starts_with("-----BEGIN ") && line.contains(label));
    if found {
        Ok(())
    } else {
        Err(ServerError::TlsFile {
            flag,
            path: PathBuf::from(path),
            why: format!("no PEM block with \"{label}\" in it"),
        })
    }
}
