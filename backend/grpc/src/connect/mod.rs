//! Calls over plain HTTP with JSON, as the Connect protocol makes them, on the gRPC port:
//!
//! - unary: `POST /<package>.<Service>/<method>` with `Content-Type: application/json` and the
//!   request in proto3 JSON; the answer is the response in proto3 JSON, or a Connect error
//!   (`{"code": "invalid_argument", "message": …, "details": […]}`) with the HTTP status Connect
//!   gives that code (`unary.rs`);
//! - server streams (watch, subscribe, export, backup): the same request answered as
//!   server-sent events, one `data:` line of proto3 JSON per message, for curl and browsers; or,
//!   with `Content-Type: application/connect+json`, as a Connect server stream (`stream.rs`).
//!
//! Each call is turned into the gRPC call it stands for and served by the same path
//! (authentication, authorization, validation, limits, logging), so no rule exists twice.

mod errors;
mod stream;
mod unary;
mod wrap;

pub(crate) use wrap::JsonCalls;

use http::{HeaderValue, header};
use http_body_util::{BodyExt, Full, Limited};
use prost::Message;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor};
use tonic::Code;
use tonic::codegen::{Bytes, StdError};

use crate::catalog::BackendVerb;
use crate::controller::Controller;
use crate::service::MAX_MESSAGE_SIZE;
use errors::error;
use stream::Framing;

/// How a request asks to be served, from its method and `Content-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    Grpc,
    /// gRPC-Web (`application/grpc-web…`), translated by tonic-web.
    GrpcWeb,
    /// A JSON body: a Connect unary call, or server-sent events for a server stream.
    Json,
    /// A Connect streaming call (`application/connect+json`).
    ConnectStream,
}

impl Protocol {
    pub(crate) fn of<B>(request: &http::Request<B>) -> Self {
        let media = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(|value| value.split(';').next().unwrap_or_default().trim())
            .unwrap_or_default()
            .to_ascii_lowercase();
        if media.starts_with("application/grpc-web") {
            return Self::GrpcWeb;
        }
        if request.method() != http::Method::POST {
            return Self::Grpc;
        }
        match media.as_str() {
            "application/json" => Self::Json,
            "application/connect+json" => Self::ConnectStream,
            _ => Self::Grpc,
        }
    }
}

/// The shape of the method a path names.
pub(crate) struct Shape {
    input: MessageDescriptor,
    output: MessageDescriptor,
    streams: bool,
}

impl Shape {
    /// A method the controllers serve: a kind's or a backend-wide one.
    pub(crate) fn served(app: &Controller, path: &str) -> Option<Self> {
        if let Some(method) = app.catalog.method(path) {
            return Some(Self {
                input: method.input.clone(),
                output: method.output.clone(),
                streams: method.server_streaming,
            });
        }
        let method = app.catalog.backend_method(path)?;
        Some(Self {
            input: method.input.clone(),
            output: method.output.clone(),
            streams: matches!(method.verb, BackendVerb::Stream(_)),
        })
    }

    /// A method of a service described in `pool` (health), by its path.
    pub(crate) fn described(pool: &DescriptorPool, path: &str) -> Option<Self> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        let method = pool
            .get_service_by_name(service)?
            .methods()
            .find(|candidate| candidate.name() == method)?;
        Some(Self {
            input: method.input(),
            output: method.output(),
            streams: method.is_server_streaming(),
        })
    }
}

/// Serves a `Json` or `ConnectStream` call through `grpc`, the server's gRPC path for one
/// request.
pub(crate) async fn serve_http<B, F, Fut>(
    shape: Option<Shape>,
    protocol: Protocol,
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
    let Some(shape) = shape else {
        return error(
            Code::Unimplemented,
            &format!("{path} is not a method of this server"),
        );
    };
    let framing = match (protocol, shape.streams) {
        (Protocol::Json, false) => None,
        (Protocol::Json, true) => Some(Framing::ServerSentEvents),
        (Protocol::ConnectStream, true) => Some(Framing::Connect),
        _ => {
            return error(
                Code::Unimplemented,
                &format!("{path} is a unary method: call it with Content-Type: application/json"),
            );
        }
    };
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, MAX_MESSAGE_SIZE + 5).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return error(
                Code::ResourceExhausted,
                &format!("the request body is unreadable or over {MAX_MESSAGE_SIZE} bytes"),
            );
        }
    };
    let json = match protocol {
        Protocol::ConnectStream => match stream::unenvelope(&body) {
            Ok(json) => json,
            Err(why) => return error(Code::InvalidArgument, &why),
        },
        _ => body,
    };
    let message = match from_json(&shape.input, &json) {
        Ok(message) => message,
        Err(why) => return error(Code::InvalidArgument, &why),
    };
    let response = grpc(grpc_request(parts, &message)).await;
    match framing {
        None => unary::json_response(response, &shape.output).await,
        Some(framing) => stream::stream_response(response, shape.output, framing),
    }
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

/// The gRPC request an HTTP call stands for: the same path and headers (the caller's key, the
/// org), the message framed as gRPC frames it.
fn grpc_request(
    parts: http::request::Parts,
    message: &DynamicMessage,
) -> http::Request<Full<Bytes>> {
    let mut request =
        http::Request::new(Full::new(Bytes::from(grpc_frame(&message.encode_to_vec()))));
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

/// A length-prefixed message, as gRPC and Connect streams frame them: a flags byte, the
/// length in four big-endian bytes, the bytes.
fn grpc_frame(bytes: &[u8]) -> Vec<u8> {
    envelope(0, bytes)
}

fn envelope(flags: u8, bytes: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(bytes.len() + 5);
    framed.push(flags);
    framed.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
    framed.extend_from_slice(bytes);
    framed
}

/// Copies the server's own answer headers (`x-stigmer-…`) from a gRPC answer.
fn copy_stigmer_headers(from: &http::HeaderMap, to: &mut http::HeaderMap) {
    for (name, value) in from {
        if name.as_str().starts_with("x-stigmer-") {
            to.append(name.clone(), value.clone());
        }
    }
}
