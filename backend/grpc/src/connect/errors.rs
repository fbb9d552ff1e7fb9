//! gRPC statuses as Connect errors: the code's name, the HTTP status Connect gives it, the
//! message, and each `google.rpc` detail with its type, its bytes and a JSON rendering.

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use http::{HeaderValue, StatusCode, header};

use crate::logging::AnsweredCode;
use http_body_util::Full;
use prost::Message;
use prost_reflect::{DynamicMessage, SerializeOptions};
use tonic::Code;
use tonic::codegen::Bytes;

/// The non-OK status a gRPC answer carries in `headers` (a trailers-only answer) or its
/// trailers.
pub(super) fn failed_status(headers: &http::HeaderMap) -> Option<tonic::Status> {
    tonic::Status::from_header_map(headers).filter(|status| status.code() != Code::Ok)
}

/// `status` as a Connect error answer, with its HTTP status.
pub(super) fn status_response(status: &tonic::Status) -> http::Response<tonic::body::Body> {
    json(status.code(), &status_json(status))
}

/// `status` as the JSON body of a Connect error.
pub(super) fn status_json(status: &tonic::Status) -> serde_json::Value {
    let details = tonic_types::pb::Status::decode(status.details())
        .map(|rich| rich.details)
        .unwrap_or_default();
    error_json(status.code(), status.message(), &details)
}

/// A Connect error answer for a request this layer refuses before any gRPC call.
pub(super) fn error(code: Code, message: &str) -> http::Response<tonic::body::Body> {
    json(code, &error_json(code, message, &[]))
}

fn error_json(code: Code, message: &str, details: &[prost_types::Any]) -> serde_json::Value {
    let details: Vec<serde_json::Value> = details.iter().map(detail).collect();
    let mut body = serde_json::json!({ "code": code_name(code), "message": message });
    if !details.is_empty() {
        body["details"] = serde_json::Value::Array(details);
    }
    body
}

fn detail(any: &prost_types::Any) -> serde_json::Value {
    let type_name = any.type_url.rsplit('/').next().unwrap_or_default();
    let mut out = serde_json::json!({
        "type": type_name,
        "value": STANDARD_NO_PAD.encode(&any.value),
    });
    if let Some(decoded) = stigmer_api::DESCRIPTOR_POOL
        .get_message_by_name(type_name)
        .and_then(|descriptor| DynamicMessage::decode(descriptor, any.value.as_slice()).ok())
    {
        out["debug"] = to_json(&decoded);
    }
    out
}

pub(super) fn to_json(message: &DynamicMessage) -> serde_json::Value {
    message
        .serialize_with_options(serde_json::value::Serializer, &SerializeOptions::new())
        .unwrap_or_default()
}

/// A JSON answer for a call that ended with `code`, with the HTTP status Connect gives it.
pub(super) fn json(code: Code, body: &serde_json::Value) -> http::Response<tonic::body::Body> {
    let mut response = http::Response::new(tonic::body::Body::new(Full::new(Bytes::from(
        body.to_string(),
    ))));
    *response.status_mut() = http_status(code);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response.extensions_mut().insert(AnsweredCode(code));
    response
}

/// The trailers that tell the log line of a streamed call how it ended; HTTP/1.1 clients that
/// did not ask for trailers never see them.
pub(super) fn status_trailers(code: Code) -> http::HeaderMap {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(code as i32));
    trailers
}

/// Connect's name of a gRPC code.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "canceled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// The HTTP status Connect's protocol gives a code.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
