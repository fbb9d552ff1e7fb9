//! How a failed command says what went wrong, on stderr.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use stigmer_client::ClientError;

/// Where the failed command was talking to: (cloud mode, endpoint), for hints.
static TALKING_TO: OnceLock<(bool, String)> = OnceLock::new();

/// Remembers the backend the command talks to, so that a failure can name it.
pub fn talking_to(cloud: bool, endpoint: String) {
    let _ = TALKING_TO.set((cloud, endpoint));
}

/// The call deadline in force and the file that may set it, for the hint of a timeout.
static DEADLINE: OnceLock<(Option<Duration>, PathBuf)> = OnceLock::new();

/// Remembers the call deadline, so that a call that outlives it can say how to raise it.
pub fn deadline(timeout: Option<Duration>, config: PathBuf) {
    let _ = DEADLINE.set((timeout, config));
}

/// `error: what failed: why`, with a hint for connection failures; -v adds the chain.
pub fn report(err: &anyhow::Error, verbose: bool) {
    // The chain down to the client's error: its own sources repeat it in gRPC's words.
    let mut parts = Vec::new();
    for cause in err.chain() {
        parts.push(cause.to_string());
        if let Some(client_error) = cause.downcast_ref::<ClientError>() {
            if let ClientError::Status(status) = client_error {
                parts.extend(transport_causes(status));
            }
            break;
        }
    }
    eprintln!("error: {}{}", parts.join(": "), hint(err));
    if verbose {
        for (depth, cause) in err.chain().enumerate().skip(1) {
            eprintln!("  {depth}: {cause}");
        }
        if let Some(ClientError::Status(status)) = client_error(err) {
            eprintln!("  code: {:?}", status.code());
            if !status.details().is_empty() {
                eprintln!(
                    "  details: {} bytes of google.rpc details",
                    status.details().len()
                );
            }
        }
    }
}

/// What broke a connection: tonic's message says only "transport error" or "http2 error",
/// its sources say why (keep-alive timed out, connection refused).
fn transport_causes(status: &tonic::Status) -> Vec<String> {
    let mut causes: Vec<String> = Vec::new();
    let mut next = std::error::Error::source(status);
    while let Some(cause) = next {
        let text = cause.to_string();
        if text != status.message() && text != "transport error" && !causes.contains(&text) {
            causes.push(text);
        }
        next = cause.source();
    }
    causes
}

fn client_error(err: &anyhow::Error) -> Option<&ClientError> {
    err.chain().find_map(|e| e.downcast_ref::<ClientError>())
}

fn hint(err: &anyhow::Error) -> String {
    let (cloud, endpoint) = TALKING_TO.get().cloned().unwrap_or((false, String::new()));
    let unreachable = match client_error(err) {
        Some(ClientError::Connect { .. }) => true,
        Some(ClientError::Status(status)) => match status.code() {
            tonic::Code::Unavailable => true,
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                return " (check the token: `stigmer login --endpoint E --token T --org O`)".into();
            }
            tonic::Code::DeadlineExceeded => return deadline_hint(status.message()),
            _ => false,
        },
        _ => false,
    };
    match (unreachable, cloud) {
        (false, _) => String::new(),
        (true, false) => {
            format!(" (cannot reach {endpoint}: is the server running? try `stigmer server start`)")
        }
        (true, true) => format!(
            " (cannot reach the cloud backend {endpoint}: check it with `stigmer backend status`)"
        ),
    }
}

/// How to give a call more time than the deadline it outlived, naming that deadline unless
/// the message does (the client's own does; a server's may not).
fn deadline_hint(message: &str) -> String {
    let Some((timeout, config)) = DEADLINE.get() else {
        return String::new();
    };
    let timeout = timeout.map_or_else(|| "none".to_string(), stigmer_client::format_duration);
    let which = if message.contains(&timeout) {
        "the call deadline".to_string()
    } else {
        format!("the call deadline is {timeout}")
    };
    format!(
        " ({which}: raise it with --timeout 2m, STIGMER_TIMEOUT, or `timeout: 2m` in {}; 0 \
         waits without limit)",
        config.display()
    )
}
