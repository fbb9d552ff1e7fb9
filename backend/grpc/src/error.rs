//! The controller layer's one error type and its one mapping to `tonic::Status`.

use stigmer_store::StoreError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// One broken rule: the field path (as in the request, `spec.instructions`) and what was expected.
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
    #[error("{kind} {id:?} not found")]
    NotFound { kind: String, id: String },
    #[error("{kind} with slug {slug:?} already exists in org {org:?}")]
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
        "{field} is {named:?}, but this call works in org {caller:?}; a request may only reach \
         its own org (send the header x-stigmer-org: {named} to work in that org)"
    )]
    OtherOrg {
        field: String,
        named: String,
        caller: String,
    },
    /// The resource is not in the state the call needs (a phase, no dependents).
    #[error("{0}")]
    FailedPrecondition(String),
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
            err @ StoreError::Compacted { .. } => Self::OutOfRange(err.to_string()),
            err @ StoreError::WatchLagged { .. } => Self::ResourceExhausted(err.to_string()),
            StoreError::Unavailable(reason) => Self::Unavailable(reason),
            StoreError::Full => Self::ResourceExhausted(
                "the server's storage is full; free disk space and retry".into(),
            ),
            StoreError::Closed => Self::Unavailable(
                "the server is shutting down; retry against a running server".into(),
            ),
            StoreError::Internal(detail) => Self::Internal(detail),
        }
    }
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        let message = err.to_string();
        match err {
            ApiError::InvalidArgument { violations, .. } => {
                let mut details = ErrorDetails::new();
                for v in violations {
                    details.add_bad_request_violation(v.field, v.description);
                }
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            ApiError::NotFound { kind, id } => Status::with_error_details(
                Code::NotFound,
                message,
                ErrorDetails::with_resource_info(kind, id, "", message_for_owner()),
            ),
            ApiError::AlreadyExists { kind, org, slug } => Status::with_error_details(
                Code::AlreadyExists,
                message,
                ErrorDetails::with_resource_info(kind, slug, org, "the slug is already in use"),
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
                    format!("names org {named:?}, not the org of the call"),
                );
                Status::with_error_details(Code::PermissionDenied, message, details)
            }
            ApiError::OutOfRange(_) => Status::new(Code::OutOfRange, message),
            ApiError::FailedPrecondition(_) => Status::new(Code::FailedPrecondition, message),
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
