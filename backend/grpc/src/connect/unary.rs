//! A gRPC unary answer as a Connect unary answer.

use http_body_util::BodyExt;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use tonic::Code;

use super::errors::{error, failed_status, json, status_response, to_json};

pub(super) async fn json_response(
    response: http::Response<tonic::body::Body>,
    output: &MessageDescriptor,
) -> http::Response<tonic::body::Body> {
    let (parts, body) = response.into_parts();
    let collected = match body.collect().await {
        Ok(collected) => collected,
        Err(_) => return error(Code::Internal, "the answer could not be read"),
    };
    let status = collected
        .trailers()
        .and_then(failed_status)
        .or_else(|| failed_status(&parts.headers));
    if let Some(status) = status {
        return status_response(&status);
    }
    let bytes = collected.to_bytes();
    let message = bytes
        .get(5..)
        .and_then(|frame| DynamicMessage::decode(output.clone(), frame).ok());
    let Some(message) = message else {
        return error(Code::Internal, "the answer could not be decoded");
    };
    let mut response = json(Code::Ok, &to_json(&message));
    super::copy_stigmer_headers(&parts.headers, response.headers_mut());
    response
}
