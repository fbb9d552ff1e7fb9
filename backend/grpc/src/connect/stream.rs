//! A gRPC server stream as server-sent events or as a Connect server stream. Messages are
//! turned into JSON one by one as the gRPC stream yields them, so a watch stays live and a
//! slow reader slows the stream down instead of filling memory.

use std::convert::Infallible;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_util::stream;
use http::{HeaderValue, StatusCode, header};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use prost_reflect::{DynamicMessage, MessageDescriptor};
use tonic::codegen::Bytes;

use super::errors::{failed_status, status_json, status_response, status_trailers, to_json};
use tonic::Code;

/// How messages are framed for the HTTP client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Framing {
    /// `text/event-stream`: `data: <json>` per message, then `event: end` or `event: error`.
    ServerSentEvents,
    /// `application/connect+json`: enveloped JSON messages, then an end-of-stream envelope.
    Connect,
}

/// Connect's end-of-stream flag on an envelope.
const END_STREAM: u8 = 0b10;
const COMPRESSED: u8 = 0b1;

/// A comment line sent on a quiet event stream, so proxies keep it open and a client that
/// went away is noticed (the write fails and the watch behind it ends).
const KEEPALIVE_EVERY: Duration = Duration::from_secs(15);

/// The JSON in the one envelope of a Connect streaming request.
pub(super) fn unenvelope(body: &Bytes) -> Result<Bytes, String> {
    let Some((&flags, rest)) = body.split_first() else {
        return Ok(Bytes::new());
    };
    if flags & COMPRESSED != 0 {
        return Err("compressed Connect messages are not accepted: send them uncompressed".into());
    }
    let length = rest
        .get(..4)
        .and_then(|bytes| <[u8; 4]>::try_from(bytes).ok())
        .map(u32::from_be_bytes)
        .and_then(|length| usize::try_from(length).ok());
    match length {
        Some(length) if rest.len() == 4 + length => Ok(body.slice(5..)),
        _ => Err("the body is not one Connect envelope (a flags byte, a 4-byte big-endian length, then that many bytes of JSON)".into()),
    }
}

/// The gRPC streaming answer `response` as `framing` says.
pub(super) fn stream_response(
    response: http::Response<tonic::body::Body>,
    output: MessageDescriptor,
    framing: Framing,
) -> http::Response<tonic::body::Body> {
    let (parts, body) = response.into_parts();
    if let Some(status) = failed_status(&parts.headers) {
        // Refused before the stream began: answered as a unary call is, with its HTTP status,
        // except that a Connect stream always answers 200 and ends with the error.
        return match framing {
            Framing::ServerSentEvents => status_response(&status),
            Framing::Connect => {
                let end = Translator::new(output, framing).end(Some(&status));
                let frames = [
                    Ok(Frame::data(end)),
                    Ok(Frame::trailers(status_trailers(status.code()))),
                ];
                answer(framing, StreamBody::new(stream::iter(frames)))
            }
        };
    }
    let translator = Translator::new(output, framing);
    let keepalive = tokio::time::interval_at(
        tokio::time::Instant::now() + KEEPALIVE_EVERY,
        KEEPALIVE_EVERY,
    );
    let state = State {
        body,
        translator,
        keepalive,
        phase: Phase::Streaming,
    };
    let mut answered = answer(framing, StreamBody::new(stream::unfold(state, State::next)));
    super::copy_stigmer_headers(&parts.headers, answered.headers_mut());
    answered
}

fn answer<S>(framing: Framing, body: StreamBody<S>) -> http::Response<tonic::body::Body>
where
    S: futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + 'static,
{
    let mut response = http::Response::new(tonic::body::Body::new(body));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    let media = match framing {
        Framing::ServerSentEvents => "text/event-stream",
        Framing::Connect => "application/connect+json",
    };
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

struct State {
    body: tonic::body::Body,
    translator: Translator,
    keepalive: tokio::time::Interval,
    phase: Phase,
}

#[derive(Clone, Copy)]
enum Phase {
    Streaming,
    /// The end was sent; the trailers with the call's code (for its log line) come next.
    Ending(Code),
    Done,
}

impl State {
    /// The next chunk for the HTTP client: a message, the end, or a keepalive.
    async fn next(mut self) -> Option<(Result<Frame<Bytes>, Infallible>, Self)> {
        loop {
            match self.phase {
                Phase::Streaming => {}
                Phase::Ending(code) => {
                    self.phase = Phase::Done;
                    return Some((Ok(Frame::trailers(status_trailers(code))), self));
                }
                Phase::Done => return None,
            }
            if let Some(chunk) = self.translator.next_message() {
                if let Some(code) = chunk.ends {
                    self.phase = Phase::Ending(code);
                }
                return Some((Ok(Frame::data(chunk.bytes)), self));
            }
            tokio::select! {
                frame = self.body.frame() => {
                    if let Some((end, code)) = self.take(frame) {
                        self.phase = Phase::Ending(code);
                        return Some((Ok(Frame::data(end)), self));
                    }
                }
                _ = self.keepalive.tick(), if self.translator.framing == Framing::ServerSentEvents => {
                    return Some((Ok(Frame::data(Bytes::from_static(b": keepalive\n\n"))), self));
                }
            }
        }
    }

    /// Takes one frame of the gRPC answer; returns the end of the stream and its code when it
    /// is one.
    fn take(
        &mut self,
        frame: Option<Result<Frame<Bytes>, tonic::Status>>,
    ) -> Option<(Bytes, Code)> {
        let status = match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    self.translator.pending.extend_from_slice(&data);
                    return None;
                }
                Err(frame) => frame.trailers_ref().and_then(failed_status),
            },
            Some(Err(status)) => Some(status),
            None => Some(tonic::Status::internal("the stream ended without a status")),
        };
        let code = status.as_ref().map_or(Code::Ok, tonic::Status::code);
        Some((self.translator.end(status.as_ref()), code))
    }
}

/// What the HTTP client gets next.
struct Chunk {
    bytes: Bytes,
    /// The code the stream ends with, when this chunk ends it.
    ends: Option<Code>,
}

/// Turns gRPC frames of `output` messages into the client's framing.
struct Translator {
    output: MessageDescriptor,
    framing: Framing,
    pending: BytesMut,
}

impl Translator {
    fn new(output: MessageDescriptor, framing: Framing) -> Self {
        Self {
            output,
            framing,
            pending: BytesMut::new(),
        }
    }

    /// The next whole message among the bytes received, rendered; a message that cannot be
    /// decoded ends the stream with an error.
    fn next_message(&mut self) -> Option<Chunk> {
        let header = self.pending.get(..5)?;
        let length = usize::try_from(u32::from_be_bytes([
            header[1], header[2], header[3], header[4],
        ]))
        .ok()?;
        if self.pending.len() < 5 + length {
            return None;
        }
        self.pending.advance(5);
        let frame = self.pending.split_to(length).freeze();
        match DynamicMessage::decode(self.output.clone(), frame) {
            Ok(message) => Some(Chunk {
                bytes: self.message(&to_json(&message)),
                ends: None,
            }),
            Err(_) => {
                let broken = tonic::Status::internal("an answer could not be decoded");
                Some(Chunk {
                    bytes: self.end(Some(&broken)),
                    ends: Some(Code::Internal),
                })
            }
        }
    }

    fn message(&self, message: &serde_json::Value) -> Bytes {
        match self.framing {
            Framing::ServerSentEvents => Bytes::from(format!("data: {message}\n\n")),
            Framing::Connect => Bytes::from(super::envelope(0, message.to_string().as_bytes())),
        }
    }

    /// The end of the stream: clean, or with the error `status` carries.
    fn end(&self, status: Option<&tonic::Status>) -> Bytes {
        match (self.framing, status) {
            (Framing::ServerSentEvents, None) => Bytes::from_static(b"event: end\ndata: {}\n\n"),
            (Framing::ServerSentEvents, Some(status)) => {
                Bytes::from(format!("event: error\ndata: {}\n\n", status_json(status)))
            }
            (Framing::Connect, status) => {
                let end = match status {
                    None => serde_json::json!({}),
                    Some(status) => serde_json::json!({ "error": status_json(status) }),
                };
                Bytes::from(super::envelope(END_STREAM, end.to_string().as_bytes()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch_event() -> MessageDescriptor {
        stigmer_api::DESCRIPTOR_POOL
            .get_message_by_name("ai.stigmer.backend.v1.WatchEvent")
            .expect("WatchEvent")
    }

    fn framed(message: &DynamicMessage) -> Vec<u8> {
        super::super::grpc_frame(&prost::Message::encode_to_vec(message))
    }

    #[test]
    fn messages_split_across_frames_come_out_whole_and_in_order() {
        let mut first = DynamicMessage::new(watch_event());
        first.set_field_by_name("revision", prost_reflect::Value::I64(7));
        first.set_field_by_name("id", prost_reflect::Value::String("agt-1".into()));
        let mut second = first.clone();
        second.set_field_by_name("revision", prost_reflect::Value::I64(8));
        let mut bytes = framed(&first);
        bytes.extend(framed(&second));
        let mut translator = Translator::new(watch_event(), Framing::ServerSentEvents);
        let mut out = Vec::new();
        for byte in bytes {
            translator.pending.extend_from_slice(&[byte]);
            while let Some(chunk) = translator.next_message() {
                assert!(chunk.ends.is_none());
                out.push(String::from_utf8(chunk.bytes.to_vec()).expect("utf-8"));
            }
        }
        assert_eq!(
            out,
            [
                "data: {\"revision\":\"7\",\"id\":\"agt-1\"}\n\n",
                "data: {\"revision\":\"8\",\"id\":\"agt-1\"}\n\n"
            ]
        );
    }

    #[test]
    fn a_connect_stream_ends_with_an_end_stream_envelope_carrying_the_error() {
        let translator = Translator::new(watch_event(), Framing::Connect);
        let end = translator.end(Some(&tonic::Status::not_found("no such agent")));
        assert_eq!(end[0], END_STREAM);
        let json: serde_json::Value = serde_json::from_slice(&end[5..]).expect("JSON");
        assert_eq!(json["error"]["code"], "not_found");
        assert_eq!(json["error"]["message"], "no such agent");
        let clean = translator.end(None);
        assert_eq!(&clean[5..], b"{}");
    }

    #[test]
    fn a_connect_request_is_one_uncompressed_envelope() {
        let body = Bytes::from(super::super::envelope(0, b"{\"kind\":\"Agent\"}"));
        assert_eq!(
            unenvelope(&body).expect("one envelope"),
            "{\"kind\":\"Agent\"}"
        );
        let compressed = Bytes::from(super::super::envelope(COMPRESSED, b"{}"));
        assert!(unenvelope(&compressed).is_err());
        let truncated = body.slice(..body.len() - 1);
        assert!(unenvelope(&truncated).is_err());
        assert!(unenvelope(&Bytes::new()).expect("empty").is_empty());
    }
}
