//! The controller layer's one error type and its one mapping to `tonic::Status`.

use std::borrow::Cow;

use prost_reflect::MessageDescriptor;
use stigmer_store::StoreError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::json_names::json_path;

/// One broken rule: the field path (as in the request, `spec.instructions`; proto names are
/// turned into JSON names before it leaves) and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Everything a controller can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid {message}: {}", summary(.violations))]
    InvalidArgument {
        message: String,
        violations: Vec<FieldViolation>,
    },
    #[error("{kind} {} not found", quoted(id))]
    NotFound { kind: String, id: String },
    #[error("{kind} with slug {} already exists in org {org:?}", quoted(slug))]
    AlreadyExists {
        kind: String,
        org: String,
        slug: String,
    },
    #[error(
        "{kind} {id} has changed: it is at revision {current}, not {expected}; read it again and retry"
    )]
    Aborted {
        kind: String,
        id: String,
        expected: i64,
        current: i64,
    },
    /// A request body names an org other than the one the call works in.
    #[error(
        "{field} is {}, but this call works in org {caller:?}; a request may only reach its own \
         org (send the header x-stigmer-org with that org to work in it)",
        quoted(named)
    )]
    OtherOrg {
        field: String,
        named: String,
        caller: String,
    },
    /// The resource is not in the state the call needs (a phase, no dependents).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller's role does not allow the call (upstream's message for the RPC).
    #[error("{0}")]
    PermissionDenied(String),
    /// No valid API key. One message for every reason, so that a caller learns nothing about
    /// which keys exist.
    #[error(
        "missing or invalid API key: send the header `authorization: Bearer stk_…` with a key \
         that is neither expired nor revoked"
    )]
    Unauthenticated,
    /// A revision outside what the change log holds.
    #[error("{0}")]
    OutOfRange(String),
    #[error("{0}")]
    Unimplemented(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    ResourceExhausted(String),
    /// Never shown to the client: it gets a correlation id to quote, the log gets the detail.
    #[error("internal error: {0}")]
    Internal(String),
}

fn summary(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

impl ApiError {
    /// A request that breaks one or more rules, named after what was being checked.
    pub fn invalid(what: impl Into<String>, violations: Vec<FieldViolation>) -> Self {
        Self::InvalidArgument {
            message: what.into(),
            violations,
        }
    }

    pub fn invalid_field(
        what: impl Into<String>,
        field: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        Self::invalid(what, vec![FieldViolation::new(field, description)])
    }

    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::Internal(detail.to_string())
    }

    /// The same error with every field it names in the JSON names of `request`'s type, the
    /// names users write (`spec.skillRefs[0]`), whatever names the rule that found it used.
    pub(crate) fn in_json_names(self, request: &MessageDescriptor) -> Self {
        match self {
            Self::InvalidArgument {
                message,
                violations,
            } => Self::InvalidArgument {
                message,
                violations: violations
                    .into_iter()
                    .map(|v| FieldViolation {
                        field: json_path(request, &v.field),
                        description: v.description,
                    })
                    .collect(),
            },
            Self::OtherOrg {
                field,
                named,
                caller,
            } => Self::OtherOrg {
                field: json_path(request, &field),
                named,
                caller,
            },
            other => other,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound { kind, id } => Self::NotFound { kind, id },
            StoreError::AlreadyExists { kind, org, slug } => {
                Self::AlreadyExists { kind, org, slug }
            }
            StoreError::Conflict {
                kind,
                id,
                expected,
                current,
            } => Self::Aborted {
                kind,
                id,
                expected,
                current,
            },
            // Only a transaction's conditions expect, and it answers a failed one itself.
            err @ StoreError::ExpectationFailed { .. } => Self::FailedPrecondition(err.to_string()),
            err @ StoreError::Compacted { .. } => Self::OutOfRange(err.to_string()),
            err @ StoreError::WatchLagged { .. } => Self::ResourceExhausted(err.to_string()),
            err @ StoreError::WatchStopped { .. } => Self::Unavailable(err.to_string()),
            StoreError::Unavailable(reason) => Self::Unavailable(reason),
            StoreError::Full => Self::ResourceExhausted(
                "the server's storage is full; free disk space and retry".into(),
            ),
            StoreError::Closed => Self::Unavailable(SHUTTING_DOWN.into()),
            StoreError::Unsupported(what) => Self::Unimplemented(what),
            StoreError::Internal(detail) => Self::Internal(detail),
        }
    }
}

/// What a call that comes too late is told.
pub(crate) const SHUTTING_DOWN: &str =
    "the server is shutting down; retry against a running server";

/// Most bytes of a client's value repeated in an error or a log line.
pub(crate) const MAX_ECHO: usize = 256;
/// Most bytes of an error message, and of its field violations together. A status travels in
/// HTTP/2 trailers, and common gRPC clients refuse trailers over 16 KiB (reading the call as
/// RESOURCE_EXHAUSTED instead of its real code); the message may triple in size when
/// percent-encoded and the details grow by a third in base64.
const MAX_MESSAGE: usize = 1024;
const MAX_DETAILS: usize = 4 * 1024;

/// `value`, cut to `max` bytes (on a character boundary) with its full length, when longer.
pub(crate) fn clipped(value: &str, max: usize) -> Cow<'_, str> {
    if value.len() <= max {
        return Cow::Borrowed(value);
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}… ({} bytes)", &value[..end], value.len()))
}

/// A client's value quoted for a message, clipped to [`MAX_ECHO`].
pub(crate) fn quoted(value: &str) -> String {
    format!("{:?}", clipped(value, MAX_ECHO))
}

/// The violations a status carries, within [`MAX_DETAILS`]; the rest are counted in a last one.
fn bad_request(violations: Vec<FieldViolation>) -> ErrorDetails {
    let mut details = ErrorDetails::new();
    let total = violations.len();
    let mut used = 0;
    for (shown, v) in violations.into_iter().enumerate() {
        let field = clipped(&v.field, MAX_ECHO).into_owned();
        let description = clipped(&v.description, 2 * MAX_ECHO).into_owned();
        used += field.len() + description.len();
        if used > MAX_DETAILS {
            details.add_bad_request_violation(
                "",
                format!(
                    "{} more violations not shown; fix these and retry",
                    total - shown
                ),
            );
            break;
        }
        details.add_bad_request_violation(field, description);
    }
    details
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        let message = clipped(&err.to_string(), MAX_MESSAGE).into_owned();
        let echo = |value: &str| clipped(value, MAX_ECHO).into_owned();
        match err {
            ApiError::InvalidArgument { violations, .. } => {
                Status::with_error_details(Code::InvalidArgument, message, bad_request(violations))
            }
            ApiError::NotFound { kind, id } => Status::with_error_details(
                Code::NotFound,
                message,
                ErrorDetails::with_resource_info(kind, echo(&id), "", message_for_owner()),
            ),
            ApiError::AlreadyExists { kind, org, slug } => Status::with_error_details(
                Code::AlreadyExists,
                message,
                ErrorDetails::with_resource_info(
                    kind,
                    echo(&slug),
                    org,
                    "the slug is already in use",
                ),
            ),
            ApiError::Aborted { current, .. } => {
                let mut details = ErrorDetails::new();
                details.set_error_info(
                    "STALE_REVISION",
                    "stigmer.ai",
                    [("current_revision".to_string(), current.to_string())],
                );
                Status::with_error_details(Code::Aborted, message, details)
            }
            ApiError::OtherOrg { field, named, .. } => {
                let mut details = ErrorDetails::new();
                details.add_bad_request_violation(
                    field,
                    format!("names org {}, not the org of the call", quoted(&named)),
                );
                Status::with_error_details(Code::PermissionDenied, message, details)
            }
            ApiError::OutOfRange(_) => Status::new(Code::OutOfRange, message),
            ApiError::FailedPrecondition(_) => Status::new(Code::FailedPrecondition, message),
            ApiError::PermissionDenied(_) => Status::new(Code::PermissionDenied, message),
            ApiError::Unauthenticated => Status::new(Code::Unauthenticated, message),
            ApiError::Unimplemented(_) => Status::new(Code::Unimplemented, message),
            ApiError::Unavailable(_) => {
                let mut details = ErrorDetails::new();
                details.set_retry_info(Some(std::time::Duration::from_millis(200)));
                Status::with_error_details(Code::Unavailable, message, details)
            }
            ApiError::ResourceExhausted(_) => Status::new(Code::ResourceExhausted, message),
            ApiError::Internal(detail) => {
                let correlation_id = ulid::Ulid::generate().to_string().to_lowercase();
                tracing::error!(%correlation_id, %detail, "internal error");
                Status::new(
                    Code::Internal,
                    format!(
                        "internal error; quote correlation id {correlation_id} to the operator"
                    ),
                )
            }
        }
    }
}

fn message_for_owner() -> &'static str {
    "it does not exist in this org"
}

/// What tonic answers, with INTERNAL, to a request it cannot read as one gRPC message: none at
/// all, one cut short, a compression flag it does not know (the gRPC spec asks for INTERNAL
/// there), and, in tonic's own services (health, reflection), one that does not decode.
const UNREADABLE_REQUEST: [&str; 4] = [
    "Missing request message.",
    "Unexpected EOF decoding stream.",
    "protocol error: received message with",
    "failed to decode Protobuf message",
];

/// Turns tonic's INTERNAL for an unreadable request into INVALID_ARGUMENT, message kept, as
/// our own decoder answers a message that does not decode: INTERNAL tells a client the
/// server failed (and here, unlike ours, comes with no correlation id), and would log the
/// client's mistake as a server fault. `headers` are a trailers-only response's headers or a
/// response's trailers; the call layer (`logging.rs`) passes every one, so that every
/// service, tonic's included, answers alike. Found by the malformed-request storm
/// (backend/server/tests/storm.rs).
pub(crate) fn unreadable_request_is_invalid_argument(headers: &mut http::HeaderMap) {
    let internal = headers
        .get("grpc-status")
        .is_some_and(|code| code.as_bytes() == (Code::Internal as i32).to_string().as_bytes());
    if !internal {
        return;
    }
    let message = headers
        .get("grpc-message")
        .map(|message| percent_decoded(message.as_bytes()))
        .unwrap_or_default();
    if UNREADABLE_REQUEST
        .iter()
        .any(|prefix| message.starts_with(prefix))
    {
        headers.insert(
            "grpc-status",
            http::HeaderValue::from((Code::InvalidArgument as i32) as u16),
        );
    }
}

/// A grpc-message header as text (it is percent-encoded).
fn percent_decoded(encoded: &[u8]) -> String {
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut rest = encoded;
    while let Some((&byte, tail)) = rest.split_first() {
        let hex = tail
            .get(..2)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (byte, hex) {
            (b'%', Some(decoded)) => {
                bytes.push(decoded);
                rest = &tail[2..];
            }
            _ => {
                bytes.push(byte);
                rest = tail;
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::StatusExt;

    #[test]
    fn an_unreadable_request_is_invalid_argument_and_a_server_fault_stays_internal() {
        let answer = |status: Status| {
            let mut headers = status
                .into_http::<tonic::body::Body>()
                .into_parts()
                .0
                .headers;
            unreadable_request_is_invalid_argument(&mut headers);
            headers["grpc-status"].to_str().expect("ascii").to_string()
        };
        for message in [
            "Missing request message.",
            "Unexpected EOF decoding stream.",
            "protocol error: received message with invalid compression flag: 7 (valid flags are 0 and 1), while sending request",
            "failed to decode Protobuf message: invalid wire type value: 7",
        ] {
            assert_eq!(answer(Status::internal(message)), "3", "{message}");
        }
        let fault = Status::from(ApiError::internal("disk on fire"));
        assert_eq!(answer(fault), "13");
        assert_eq!(
            answer(Status::unavailable("Missing request message.")),
            "14"
        );
        assert_eq!(percent_decoded(b"a%20b%2"), "a b%2");
    }

    #[test]
    fn long_values_are_clipped_with_their_length_on_a_character_boundary() {
        assert_eq!(clipped("short", 10), "short");
        let long = "é".repeat(200); // 400 bytes, two per character
        let cut = clipped(&long, 101);
        assert!(cut.ends_with("… (400 bytes)"), "{cut}");
        assert!(cut.starts_with(&"é".repeat(50)));
    }

    #[test]
    fn a_huge_id_or_many_violations_keep_the_status_small_and_its_code() {
        let id = "x".repeat(1 << 20);
        let status = Status::from(ApiError::NotFound {
            kind: "Agent".into(),
            id,
        });
        assert_eq!(status.code(), Code::NotFound);
        assert!(
            status.message().len() < 2 * MAX_ECHO,
            "{}",
            status.message().len()
        );
        assert!(status.message().contains("(1048576 bytes)"));
        assert!(status.details().len() < 1024, "{}", status.details().len());

        let violations = (0..5000)
            .map(|n| FieldViolation::new(format!("items[{n}].name"), "y".repeat(1000)))
            .collect();
        let status = Status::from(ApiError::invalid("ImportRequest", violations));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().len() <= MAX_MESSAGE + 32);
        // As trailers: the message percent-encoded (at most three bytes each), the details in
        // base64, well under the 16 KiB clients accept.
        let trailers = 3 * status.message().len() + status.details().len().div_ceil(3) * 4;
        assert!(trailers < 12 * 1024, "{trailers}");
        let shown = status.get_details_bad_request().expect("bad request");
        let last = shown.field_violations.last().expect("a last violation");
        assert!(
            last.description.contains("more violations not shown"),
            "{last:?}"
        );
        assert_eq!(shown.field_violations[0].field, "items[0].name");
    }
}
