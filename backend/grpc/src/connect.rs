//! Unary calls with JSON bodies, as the Connect protocol's unary calls make them:
//! `POST /<package>.<Service>/<method>` with `Content-Type: application/json` and the request in
//! proto3 JSON, on the gRPC port. The answer is the response in proto3 JSON, or a Connect error
//! (`{"code": "invalid_argument", "message": …, "details": […]}`) with the HTTP status Connect
//! gives that code. Each call is turned into the gRPC call it stands for and served by the same
//! path (authentication, authorization, validation, limits, logging), so no rule exists twice.

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use http::{HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use prost::Message;
use prost_reflect::{DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions};
use tonic::Code;
use tonic::codegen::{Bytes, StdError};

use crate::catalog::BackendVerb;
use crate::controller::Controller;
use crate::service::MAX_MESSAGE_SIZE;

/// Whether `request` is a Connect unary call with a JSON body.
pub(crate) fn is_json_call<B>(request: &http::Request<B>) -> bool {
    request.method() == http::Method::POST
        && request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| {
                let media = value.split(';').next().unwrap_or_default().trim();
                media.eq_ignore_ascii_case("application/json")
            })
}

/// Serves a JSON call through `grpc`, the server's gRPC path for one request.
pub(crate) async fn serve_json<B, F, Fut>(
    app: &Controller,
    request: http::Request<B>,
    grpc: F,
) -> http::Response<tonic::body::Body>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
    F: FnOnce(http::Request<Full<Bytes>>) -> Fut,
    Fut: std::future::Future<Output = http::Response<tonic::body::Body>>,
{
    let path = request.uri().path().to_string();
    let Some((input, output)) = unary_types(app, &path) else {
        return error(
            Code::Unimplemented,
            &format!("{path} is not a unary method of this server (server streams need gRPC)"),
            &[],
        );
    };
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, MAX_MESSAGE_SIZE).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return error(
                Code::ResourceExhausted,
                &format!("the request body is unreadable or over {MAX_MESSAGE_SIZE} bytes"),
                &[],
            );
        }
    };
    let message = match from_json(&input, &body) {
        Ok(message) => message,
        Err(why) => return error(Code::InvalidArgument, &why, &[]),
    };
    let grpc_request = grpc_request(parts, &message);
    let response = grpc(grpc_request).await;
    json_response(response, &output).await
}

/// The input and output types of the unary method at `path`.
fn unary_types(app: &Controller, path: &str) -> Option<(MessageDescriptor, MessageDescriptor)> {
    if let Some(method) = app.catalog.method(path) {
        return (!method.server_streaming).then(|| (method.input.clone(), method.output.clone()));
    }
    let method = app.catalog.backend_method(path)?;
    matches!(method.verb, BackendVerb::Unary(_))
        .then(|| (method.input.clone(), method.output.clone()))
}

fn from_json(input: &MessageDescriptor, body: &[u8]) -> Result<DynamicMessage, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(DynamicMessage::new(input.clone()));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    DynamicMessage::deserialize_with_options(
        input.clone(),
        &mut deserializer,
        &DeserializeOptions::new(),
    )
    .and_then(|message| deserializer.end().map(|()| message))
    .map_err(|err| {
        format!(
            "the body is not a {} in proto3 JSON: {err}",
            input.full_name()
        )
    })
}

/// The gRPC request a JSON call stands for: the same path and headers (the caller's key, the
/// org), the message framed as gRPC frames it.
fn grpc_request(
    parts: http::request::Parts,
    message: &DynamicMessage,
) -> http::Request<Full<Bytes>> {
    let encoded = message.encode_to_vec();
    let mut framed = Vec::with_capacity(encoded.len() + 5);
    framed.push(0);
    framed.extend_from_slice(
        &u32::try_from(encoded.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    framed.extend_from_slice(&encoded);
    let mut request = http::Request::new(Full::new(Bytes::from(framed)));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = parts.uri;
    *request.headers_mut() = parts.headers;
    *request.extensions_mut() = parts.extensions;
    let headers = request.headers_mut();
    headers.remove(header::CONTENT_LENGTH);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    request
}

/// The gRPC answer as a Connect unary answer.
async fn json_response(
    response: http::Response<tonic::body::Body>,
    output: &MessageDescriptor,
) -> http::Response<tonic::body::Body> {
    let (parts, body) = response.into_parts();
    let collected = match body.collect().await {
        Ok(collected) => collected,
        Err(_) => return error(Code::Internal, "the answer could not be read", &[]),
    };
    let trailers = collected.trailers().cloned();
    let status = trailers
        .as_ref()
        .and_then(tonic::Status::from_header_map)
        .or_else(|| tonic::Status::from_header_map(&parts.headers));
    if let Some(status) = status.filter(|status| status.code() != Code::Ok) {
        let details = tonic_types::pb::Status::decode(status.details())
            .map(|rich| rich.details)
            .unwrap_or_default();
        return error(status.code(), status.message(), &details);
    }
    let bytes = collected.to_bytes();
    let message = bytes
        .get(5..)
        .and_then(|frame| DynamicMessage::decode(output.clone(), frame).ok());
    let Some(message) = message else {
        return error(Code::Internal, "the answer could not be decoded", &[]);
    };
    let mut response = json(StatusCode::OK, &to_json(&message));
    for (name, value) in parts.headers.iter() {
        if name.as_str().starts_with("x-stigmer-") {
            response.headers_mut().append(name.clone(), value.clone());
        }
    }
    response
}

fn to_json(message: &DynamicMessage) -> serde_json::Value {
    message
        .serialize_with_options(serde_json::value::Serializer, &SerializeOptions::new())
        .unwrap_or_default()
}

/// A Connect error: its code's name and HTTP status, the message, and each detail with its
/// type, its bytes and a JSON rendering for people.
fn error(
    code: Code,
    message: &str,
    details: &[prost_types::Any],
) -> http::Response<tonic::body::Body> {
    let details: Vec<serde_json::Value> = details.iter().map(detail).collect();
    let mut body = serde_json::json!({ "code": code_name(code), "message": message });
    if !details.is_empty() {
        body["details"] = serde_json::Value::Array(details);
    }
    json(http_status(code), &body)
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

fn json(status: StatusCode, body: &serde_json::Value) -> http::Response<tonic::body::Body> {
    let mut response = http::Response::new(tonic::body::Body::new(Full::new(Bytes::from(
        body.to_string(),
    ))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
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
