//! A storm of malformed requests (issue 17): raw HTTP/2 gRPC calls, made with h2 rather than
//! a gRPC client so that nothing tidies them up, to every method the server has and to methods
//! it has not. Bodies are random bytes, truncated messages, wrong wire types, huge and
//! overlong varints, unknown fields, bad UTF-8, oversized length prefixes, bad compression
//! flags, no message or two, nesting past any limit, in one DATA frame or many, with odd
//! headers; some are well-formed messages with random fields, which the server may accept.
//! Every answer must be a gRPC status other than INTERNAL and UNKNOWN (those mean a fault of
//! the server, with a correlation id in its log), no stream may be reset, and the server must
//! serve normally afterwards.
//!
//! `make test` sends 10,000 requests (64 in flight over 8 connections). A longer run:
//! `STIGMER_STORM_REQUESTS=1000000 cargo test --release -p stigmer-server --test storm`;
//! `STIGMER_TEST_SEED` replays the requests of a run (it prints its seed).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::random::Random;
use common::{TestServer, agent};
use prost::Message;
use prost::bytes::{BufMut, Bytes};
use prost_reflect::{DynamicMessage, Kind, MapKey, MessageDescriptor, Value};
use stigmer_api::ai::stigmer::agentic::agent::v1::AgentId;
use stigmer_api::ai::stigmer::agentic::agent::v1::agent_command_controller_client::AgentCommandControllerClient;
use stigmer_api::ai::stigmer::agentic::agent::v1::agent_query_controller_client::AgentQueryControllerClient;
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const DEFAULT_REQUESTS: usize = 10_000;
const CONNECTIONS: usize = 8;
const IN_FLIGHT: usize = 64;
/// How long a unary call may take to be answered, under the storm.
const ANSWER: Duration = Duration::from_secs(30);
/// How long a server-streaming call that started streaming is read before it is dropped (a
/// watch never ends by itself).
const STREAM_READ: Duration = Duration::from_millis(200);

/// A method the requests are aimed at.
struct Target {
    path: String,
    /// None for the services served by tonic's own crates (health, reflection).
    input: Option<MessageDescriptor>,
    streams: bool,
}

fn targets() -> Vec<Target> {
    let mut targets: Vec<Target> = stigmer_api::DESCRIPTOR_POOL
        .services()
        .flat_map(|service| {
            service
                .methods()
                .map(|method| Target {
                    path: format!("/{}/{}", service.full_name(), method.name()),
                    input: Some(method.input()),
                    streams: method.is_server_streaming(),
                })
                .collect::<Vec<_>>()
        })
        .collect();
    for (path, streams) in [
        ("/grpc.health.v1.Health/Check", false),
        ("/grpc.health.v1.Health/Watch", true),
        (
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            true,
        ),
        (
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            true,
        ),
    ] {
        targets.push(Target {
            path: path.into(),
            input: None,
            streams,
        });
    }
    targets
}

// ---------------------------------------------------------------------------------------------
// Random messages and their encodings
// ---------------------------------------------------------------------------------------------

fn text(random: &mut Random) -> String {
    match random.below(8) {
        0 => String::new(),
        1 => "x".repeat(random.index(20_000)),
        2 => [
            "é", "中文", "🦀", "\u{0}", "\u{202e}", "Ω≈ç", "\u{fffd}", " ",
        ]
        .iter()
        .map(|piece| piece.repeat(1 + random.index(4)))
        .collect(),
        3 => format!("agt-{:026}", random.next()),
        4 => (0..random.index(40))
            .map(|_| char::from_u32(random.below(0x11_0000) as u32).unwrap_or('?'))
            .collect(),
        _ => (0..random.index(24))
            .map(|_| char::from(b'a' + random.below(26) as u8))
            .collect(),
    }
}

fn scalar(random: &mut Random, kind: &Kind, depth: usize) -> Option<Value> {
    Some(match kind {
        Kind::Double => Value::F64(f64::from_bits(random.next())),
        Kind::Float => Value::F32(f32::from_bits(random.next() as u32)),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(random.next() as i32),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(random.next() as i64),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(random.next() as u32),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(random.next()),
        Kind::Bool => Value::Bool(random.one_in(2)),
        Kind::String => Value::String(text(random)),
        Kind::Bytes => {
            let len = random.index(64);
            Value::Bytes(Bytes::from(random.bytes(len)))
        }
        Kind::Enum(descriptor) => {
            let values: Vec<i32> = descriptor.values().map(|v| v.number()).collect();
            if values.is_empty() || random.one_in(5) {
                Value::EnumNumber(random.next() as i32)
            } else {
                Value::EnumNumber(*random.pick(&values))
            }
        }
        Kind::Message(descriptor) => {
            if depth >= 4 {
                return None;
            }
            Value::Message(message(random, descriptor, depth + 1))
        }
    })
}

fn map_key(random: &mut Random, kind: &Kind) -> MapKey {
    match kind {
        Kind::String => MapKey::String(text(random)),
        Kind::Bool => MapKey::Bool(random.one_in(2)),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => MapKey::I32(random.next() as i32),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => MapKey::I64(random.next() as i64),
        Kind::Uint32 | Kind::Fixed32 => MapKey::U32(random.next() as u32),
        _ => MapKey::U64(random.next()),
    }
}

/// A message of `descriptor` with about a third of its fields set to random values.
fn message(random: &mut Random, descriptor: &MessageDescriptor, depth: usize) -> DynamicMessage {
    let mut message = DynamicMessage::new(descriptor.clone());
    for field in descriptor.fields() {
        if !random.one_in(3) {
            continue;
        }
        let value = if field.is_map() {
            let entry = field.kind();
            let entry = entry.as_message().expect("a map entry");
            let (key, value) = (entry.map_entry_key_field(), entry.map_entry_value_field());
            let mut map = std::collections::HashMap::new();
            for _ in 0..random.index(4) {
                if let Some(v) = scalar(random, &value.kind(), depth) {
                    map.insert(map_key(random, &key.kind()), v);
                }
            }
            Value::Map(map)
        } else if field.is_list() {
            let items = (0..random.index(4))
                .filter_map(|_| scalar(random, &field.kind(), depth))
                .collect();
            Value::List(items)
        } else {
            match scalar(random, &field.kind(), depth) {
                Some(value) => value,
                None => continue,
            }
        };
        message.set_field(&field, value);
    }
    message
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn tag(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire_type));
}

fn length_delimited(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    tag(out, field, 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// The gRPC frame of `payload`: flag, big-endian length, bytes.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 5);
    out.put_u8(0);
    out.put_u32(payload.len() as u32);
    out.extend_from_slice(payload);
    out
}

/// The (tag offset, tag end) of each top-level field of a well-formed encoding.
fn fields_of(encoded: &[u8]) -> Vec<(usize, usize)> {
    let mut fields = Vec::new();
    let mut at = 0;
    let read = |at: &mut usize| -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *encoded.get(*at)?;
            *at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Some(value);
            }
        }
        None
    };
    while at < encoded.len() {
        let start = at;
        let Some(key) = read(&mut at) else { break };
        let end_of_tag = at;
        let skip = match key & 7 {
            0 => read(&mut at).map(|_| 0),
            1 => Some(8),
            2 => read(&mut at),
            5 => Some(4),
            _ => None,
        };
        let Some(skip) = skip else { break };
        at += skip as usize;
        fields.push((start, end_of_tag));
    }
    fields
}

/// A path of singular message fields from `from` down to a message that holds a field of
/// `wanted`, with that field's number last; breadth first, at most `depth` long.
fn path_to(from: &MessageDescriptor, wanted: &str, depth: usize) -> Option<Vec<u32>> {
    let mut queue = vec![(from.clone(), Vec::new())];
    while !queue.is_empty() {
        let mut next = Vec::new();
        for (message, path) in queue {
            for field in message.fields() {
                let mut here: Vec<u32> = path.clone();
                here.push(field.number());
                match field.kind() {
                    Kind::Message(inner) if inner.full_name() == wanted && !field.is_map() => {
                        return Some(here);
                    }
                    Kind::Message(inner) if here.len() < depth && !field.is_map() => {
                        next.push((inner, here));
                    }
                    _ => {}
                }
            }
        }
        queue = next;
    }
    None
}

/// `inner` wrapped in the messages of `path` (the innermost field last).
fn wrap(path: &[u32], inner: Vec<u8>) -> Vec<u8> {
    path.iter().rev().fold(inner, |inner, &field| {
        let mut out = Vec::new();
        length_delimited(&mut out, field, &inner);
        out
    })
}

/// A google.protobuf.Value holding lists `levels` deep, built from the inside out.
fn nested_value(levels: usize) -> Vec<u8> {
    let mut value = Vec::new();
    for _ in 0..levels {
        let mut list = Vec::new();
        length_delimited(&mut list, 1, &value); // ListValue.values
        let mut outer = Vec::new();
        length_delimited(&mut outer, 6, &list); // Value.list_value
        value = outer;
    }
    value
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/// One request of the storm.
struct Request {
    what: &'static str,
    path: String,
    streams: bool,
    headers: Vec<(&'static str, String)>,
    /// Sent as one DATA frame each.
    chunks: Vec<Vec<u8>>,
}

/// The body in one DATA frame, or now and then in two to four. Not in many tiny ones: h2
/// closes a connection that sends those (GOAWAY ENHANCE_YOUR_CALM, "too_many_data_frames"),
/// as it should, before any gRPC code sees them.
fn split(random: &mut Random, body: Vec<u8>) -> Vec<Vec<u8>> {
    if body.len() < 4 || !random.one_in(4) {
        return vec![body];
    }
    let pieces = 2 + random.index(3);
    let mut cuts: Vec<usize> = (1..pieces)
        .map(|_| 1 + random.index(body.len() - 1))
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut chunks = Vec::new();
    let mut from = 0;
    for cut in cuts.into_iter().chain([body.len()]) {
        chunks.push(body[from..cut].to_vec());
        from = cut;
    }
    chunks
}

/// A path the server does not serve, within the header list size it advertises (16 KiB; past
/// it HTTP/2 answers 431 before any gRPC code runs, and gRPC clients send no such request).
fn random_path(random: &mut Random, targets: &[Target]) -> String {
    let real = &random.pick(targets).path;
    let path = match random.below(6) {
        0 => format!(
            "/{}",
            text(random).replace(|c: char| !c.is_ascii_alphanumeric(), "")
        ),
        1 => format!(
            "{}/{}",
            real.rsplit_once('/').expect("a method").0,
            text(random)
        )
        .replace(|c: char| !c.is_ascii_graphic(), "_"),
        2 => real.to_uppercase(),
        3 => format!("{real}/extra"),
        4 => format!("/{}", "a/".repeat(random.index(2000))),
        _ => format!("{real}%00%ff?x=1"),
    };
    path.chars().take(8000).collect()
}

fn request(random: &mut Random, targets: &[Target]) -> Request {
    let target = random.pick(targets);
    let valid = match &target.input {
        Some(input) => message(random, input, 0).encode_to_vec(),
        None => Vec::new(),
    };
    let mut path = target.path.clone();
    let mut headers = vec![
        ("content-type", "application/grpc".to_string()),
        ("te", "trailers".to_string()),
    ];
    if random.one_in(4) {
        // Within the header list size the server advertises, as the path.
        let org: String = text(random).chars().take(2000).collect();
        headers.push((stigmer_core::ORG_HEADER, org));
    }
    let (what, body) = match random.below(17) {
        0 => ("random fields", frame(&valid)),
        1 => {
            let len = random.index(600);
            let payload = random.bytes(len);
            ("random bytes", frame(&payload))
        }
        2 => {
            let len = random.index(5);
            ("no frame", random.bytes(len))
        }
        3 => {
            let mut body = frame(&valid);
            let keep = 5 + random.index(valid.len().max(1));
            body.truncate(keep.min(body.len().saturating_sub(1)).max(1));
            ("truncated", body)
        }
        4 => {
            let mut body = vec![0];
            let claimed =
                valid.len() as u64 + 1 + random.below(u64::from(u32::MAX) - valid.len() as u64);
            body.put_u32(claimed as u32);
            body.extend_from_slice(&valid);
            ("oversized length prefix", body)
        }
        5 => {
            let mut body = frame(&valid);
            body[0] = 1 + random.below(255) as u8;
            ("compression flag", body)
        }
        6 => {
            let mut encoded = valid.clone();
            let fields = fields_of(&encoded);
            if let Some(&(start, end)) = fields.get(random.index(fields.len().max(1))) {
                // The tag's last byte holds the wire type in its low bits.
                let last = end - 1;
                let wire_type = encoded[last] & 7;
                let other = (wire_type + 1 + random.below(7) as u8) & 7;
                encoded[last] = (encoded[last] & !7) | other;
                let _ = start;
            } else {
                tag(&mut encoded, 1, 1 + random.below(7) as u8);
                encoded.push(1);
            }
            ("wrong wire type", frame(&encoded))
        }
        7 => {
            let mut encoded = valid.clone();
            let field = 1 + random.below(6) as u32;
            match random.below(3) {
                0 => {
                    tag(&mut encoded, field, 0);
                    varint(&mut encoded, u64::MAX);
                }
                1 => {
                    tag(&mut encoded, field, 0);
                    encoded.extend_from_slice(&[0xff; 11]);
                    encoded.push(0x01);
                }
                _ => {
                    tag(&mut encoded, field, 2);
                    varint(&mut encoded, u64::MAX >> random.below(40));
                    encoded.extend_from_slice(b"short");
                }
            }
            ("huge varint", frame(&encoded))
        }
        8 => {
            let mut encoded = valid.clone();
            for _ in 0..1 + random.index(5) {
                let field = 10_000 + random.below(536_860_000) as u32;
                match random.below(4) {
                    0 => {
                        tag(&mut encoded, field, 0);
                        varint(&mut encoded, random.next());
                    }
                    1 => {
                        tag(&mut encoded, field, 1);
                        encoded.extend_from_slice(&random.next().to_le_bytes());
                    }
                    2 => {
                        let len = random.index(100);
                        let bytes = random.bytes(len);
                        length_delimited(&mut encoded, field, &bytes);
                    }
                    _ => {
                        tag(&mut encoded, field, 5);
                        encoded.extend_from_slice(&(random.next() as u32).to_le_bytes());
                    }
                }
            }
            ("unknown fields", frame(&encoded))
        }
        9 => {
            // A string field somewhere within a few levels, holding bytes that are not UTF-8.
            const NOT_UTF8: [&[u8]; 5] = [
                &[0xff, 0xfe],
                &[0xc0, 0x80],
                &[0xed, 0xa0, 0x80],
                &[b'o', b'k', 0xe2, 0x82],
                &[0xf8, 0x88, 0x80, 0x80, 0x80],
            ];
            let bad = *random.pick(&NOT_UTF8);
            let path = target
                .input
                .as_ref()
                .and_then(|input| string_field_path(input, 3));
            let encoded = match path {
                Some(path) => {
                    let (last, outer) = path.split_last().expect("a field");
                    let mut inner = Vec::new();
                    length_delimited(&mut inner, *last, bad);
                    let mut encoded = valid.clone();
                    encoded.extend(wrap(outer, inner));
                    encoded
                }
                None => {
                    let mut encoded = Vec::new();
                    length_delimited(&mut encoded, 1, bad);
                    encoded
                }
            };
            ("bad UTF-8", frame(&encoded))
        }
        10 => {
            path = random_path(random, targets);
            ("random method path", frame(&valid))
        }
        11 => {
            let levels = 1 + random.index(3000);
            let value = nested_value(levels);
            let encoded = match target
                .input
                .as_ref()
                .and_then(|input| path_to(input, "google.protobuf.Value", 6))
            {
                Some(path) => wrap(&path, value),
                // Nesting through a field the message does not have: skipped, not parsed,
                // unless it collides with one it has.
                None => wrap(&[1], value),
            };
            ("deep nesting", frame(&encoded))
        }
        12 => ("empty body", Vec::new()),
        13 => {
            let mut body = frame(&valid);
            body.extend(frame(&valid));
            ("two messages", body)
        }
        14 => {
            match random.below(6) {
                0 => {
                    headers[0].1 = random
                        .pick(&[
                            "application/json",
                            "text/plain",
                            "application/grpc+proto",
                            "application/grpc+json",
                            "",
                        ])
                        .to_string()
                }
                1 => headers.push((
                    "grpc-encoding",
                    random
                        .pick(&["gzip", "deflate", "zstd", "identity", "bogus"])
                        .to_string(),
                )),
                2 => headers.push((
                    "grpc-timeout",
                    random
                        .pick(&["garbage", "1H", "99999999S", "0n", "-1m", "1"])
                        .to_string(),
                )),
                3 => headers.push((
                    "grpc-accept-encoding",
                    text(random).chars().take(2000).collect(),
                )),
                4 => {
                    headers.remove(1);
                }
                _ => headers.push(("x-stigmer-org", "a".repeat(random.index(8000)))),
            }
            ("odd headers", frame(&valid))
        }
        15 => ("empty message", frame(&[])),
        _ => {
            // Not a message at all, whatever the length says.
            let payload = text(random).into_bytes();
            ("text body", frame(&payload))
        }
    };
    let chunks = split(random, body);
    Request {
        what,
        path,
        streams: target.streams,
        headers: headers
            .into_iter()
            .filter(|(_, value)| http::HeaderValue::from_str(value).is_ok())
            .collect(),
        chunks,
    }
}

/// A path of message fields ending at a string field, at most `depth` long.
fn string_field_path(input: &MessageDescriptor, depth: usize) -> Option<Vec<u32>> {
    let direct = input
        .fields()
        .find(|f| matches!(f.kind(), Kind::String) && !f.is_map());
    if let Some(field) = direct {
        return Some(vec![field.number()]);
    }
    if depth == 0 {
        return None;
    }
    input.fields().find_map(|field| match field.kind() {
        Kind::Message(inner) if !field.is_map() => {
            string_field_path(&inner, depth - 1).map(|mut rest| {
                rest.insert(0, field.number());
                rest
            })
        }
        _ => None,
    })
}

// ---------------------------------------------------------------------------------------------
// Sending and tallying
// ---------------------------------------------------------------------------------------------

/// What the server answered.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Answer {
    /// A gRPC status code.
    Status(i32),
    /// A server-streaming call that was still streaming when dropped.
    Streaming,
    /// A Connect error (`json_calls.rs`): the answer to a request sent as
    /// `application/json`, with its code's name.
    Connect(String),
    /// Anything that is not a gRPC answer (an HTTP error, a reset stream, no status).
    Broken(String),
}

impl Answer {
    fn is_fault(&self) -> bool {
        match self {
            Answer::Status(code) => {
                *code == tonic::Code::Internal as i32 || *code == tonic::Code::Unknown as i32
            }
            Answer::Streaming => false,
            Answer::Connect(code) => code == "internal" || code == "unknown",
            Answer::Broken(_) => true,
        }
    }
}

fn status_of(headers: &http::HeaderMap) -> Option<(i32, String)> {
    let code = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .unwrap_or_default()
        .to_string();
    Some((code, message))
}

async fn connect(addr: std::net::SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (send, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    send
}

/// Sends `request` and reads the answer: the status and its message.
async fn send(
    client: &mut h2::client::SendRequest<Bytes>,
    addr: std::net::SocketAddr,
    request: &Request,
) -> Result<(Answer, String), h2::Error> {
    let mut builder = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{}", request.path));
    for (name, value) in &request.headers {
        builder = builder.header(*name, value);
    }
    let http_request = builder.body(()).expect("a request");
    let ready = client.clone().ready().await?;
    *client = ready;
    let (response, mut body) = client.send_request(http_request, request.chunks.is_empty())?;
    let last = request.chunks.len().saturating_sub(1);
    for (n, chunk) in request.chunks.iter().enumerate() {
        body.send_data(Bytes::from(chunk.clone()), n == last)?;
    }
    let response = tokio::time::timeout(ANSWER, response)
        .await
        .unwrap_or_else(|_| panic!("no answer in time to {} {}", request.what, request.path))?;
    let (parts, mut stream) = response.into_parts();
    if let Some((code, message)) = status_of(&parts.headers) {
        return Ok((Answer::Status(code), message));
    }
    let is_json = parts
        .headers
        .get("content-type")
        .is_some_and(|value| value.as_bytes() == b"application/json");
    if is_json {
        let mut body = Vec::new();
        while let Some(data) = stream.data().await {
            body.extend_from_slice(&data?);
        }
        let error: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let code = error["code"].as_str().unwrap_or("no code").to_string();
        let message = error["message"].as_str().unwrap_or_default().to_string();
        return Ok((Answer::Connect(code), message));
    }
    if parts.status != http::StatusCode::OK {
        return Ok((
            Answer::Broken(format!("HTTP {}", parts.status)),
            String::new(),
        ));
    }
    let read = async {
        while let Some(data) = stream.data().await {
            let data = data?;
            let _ = stream.flow_control().release_capacity(data.len());
        }
        stream.trailers().await
    };
    let limit = if request.streams { STREAM_READ } else { ANSWER };
    match tokio::time::timeout(limit, read).await {
        Err(_) if request.streams => Ok((Answer::Streaming, String::new())),
        Err(_) => panic!("no end in time to {} {}", request.what, request.path),
        Ok(trailers) => match trailers?.as_ref().and_then(status_of) {
            Some((code, message)) => Ok((Answer::Status(code), message)),
            None => Ok((Answer::Broken("no grpc-status".into()), String::new())),
        },
    }
}

#[derive(Default)]
struct Tally {
    /// (what, answer) → count.
    counts: BTreeMap<(&'static str, Answer), usize>,
    /// The first few faults: what, path, answer, message.
    faults: Vec<String>,
    fault_count: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_malformed_requests_gets_no_internal_or_unknown_and_the_server_serves_on() {
    let total: usize = std::env::var("STIGMER_STORM_REQUESTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_REQUESTS);
    let server = TestServer::start().await;
    let addr = server.addr;
    let targets = Arc::new(targets());
    let seed = Random::seeded("storm").next();
    let started = Instant::now();

    let mut connections = Vec::new();
    for _ in 0..CONNECTIONS {
        connections.push(connect(addr).await);
    }
    let sent = Arc::new(AtomicUsize::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let workers: Vec<_> = (0..IN_FLIGHT)
        .map(|worker| {
            let mut client = connections[worker % CONNECTIONS].clone();
            let (targets, sent, tally) = (targets.clone(), sent.clone(), tally.clone());
            tokio::spawn(async move {
                let mut random = Random::new(seed ^ (worker as u64 + 1));
                while sent.fetch_add(1, Ordering::Relaxed) < total {
                    let request = request(&mut random, &targets);
                    let (answer, message) = match send(&mut client, addr, &request).await {
                        Ok(answer) => answer,
                        Err(err) => {
                            // The stream or the connection was reset: a fault; go on over a
                            // new connection.
                            client = connect(addr).await;
                            (Answer::Broken(format!("reset: {err}")), String::new())
                        }
                    };
                    let mut tally = tally.lock().await;
                    if answer.is_fault() {
                        tally.fault_count += 1;
                        // One example of each kind of fault.
                        let kind = format!("{} -> {answer:?} {message:?}", request.what);
                        if tally.faults.len() < 40
                            && !tally.faults.iter().any(|f| f.starts_with(&kind))
                        {
                            let path: String = request.path.chars().take(120).collect();
                            tally.faults.push(format!("{kind} at {path}"));
                        }
                    }
                    *tally.counts.entry((request.what, answer)).or_default() += 1;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("worker");
    }
    let elapsed = started.elapsed();

    let tally = tally.lock().await;
    let mut summary = String::new();
    for ((what, answer), count) in &tally.counts {
        summary.push_str(&format!("  {what:<24} {answer:?}: {count}\n"));
    }
    let answered: usize = tally.counts.values().sum();
    eprintln!("{answered} requests in {elapsed:?}:\n{summary}");
    assert_eq!(answered, total);
    assert!(
        tally.fault_count == 0,
        "{} of {answered} requests got INTERNAL, UNKNOWN or no gRPC answer, such as:\n{}",
        tally.fault_count,
        tally.faults.join("\n")
    );
    // The storm reached past decoding: some requests were well-formed enough to be served.
    let served = tally
        .counts
        .iter()
        .filter(|((_, answer), _)| *answer == Answer::Status(0))
        .map(|(_, count)| count)
        .sum::<usize>();
    assert!(served > 0, "no request was served:\n{summary}");

    // The server serves on, as it did before.
    let health = HealthClient::new(server.channel.clone())
        .check(HealthCheckRequest::default())
        .await
        .expect("health")
        .into_inner();
    assert_eq!(health.status(), ServingStatus::Serving);
    let created = AgentCommandControllerClient::new(server.channel.clone())
        .create(agent("After the storm"))
        .await
        .expect("create")
        .into_inner();
    let id = created.metadata.as_ref().expect("metadata").id.clone();
    let found = AgentQueryControllerClient::new(server.channel.clone())
        .get(AgentId {
            value: id,
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(found, created);
    server.stop().await;
}
