//! A plain HTTP/1.1 client for the server's HTTP protocols (JSON calls, server-sent events,
//! Connect streams, gRPC-Web), reading streamed answers frame by frame as browsers do.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;

/// How long any one read of a streamed answer may take before the test fails.
pub const READ_DEADLINE: Duration = Duration::from_secs(30);

/// POSTs `body` to `path` over a fresh HTTP/1.1 connection with `headers`; the answer's head,
/// with its body still streaming.
pub async fn post(
    address: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> http::Response<Incoming> {
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(connection);
    let mut request = http::Request::post(path).header(http::header::HOST, address.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(body.into())).expect("a request");
    tokio::time::timeout(READ_DEADLINE, sender.send_request(request))
        .await
        .expect("an answer in time")
        .expect("an answer")
}

/// Reads a streamed body chunk by chunk.
pub struct Reader {
    body: Incoming,
    pub received: Vec<u8>,
}

impl Reader {
    pub fn new(response: http::Response<Incoming>) -> Self {
        Self {
            body: response.into_body(),
            received: Vec::new(),
        }
    }

    /// Reads until `done` holds for what was received, failing the test at the deadline or
    /// when the body ends first.
    pub async fn until(&mut self, done: impl Fn(&[u8]) -> bool) {
        while !done(&self.received) {
            let frame = tokio::time::timeout(READ_DEADLINE, self.body.frame())
                .await
                .expect("more of the answer in time");
            match frame {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        self.received.extend_from_slice(data);
                    }
                }
                Some(Err(err)) => panic!("the answer broke: {err}"),
                None => panic!(
                    "the answer ended early: {}",
                    String::from_utf8_lossy(&self.received)
                ),
            }
        }
    }

    /// Reads the rest of the body.
    pub async fn read_to_end(mut self) -> Vec<u8> {
        let rest = tokio::time::timeout(READ_DEADLINE, self.body.collect())
            .await
            .expect("the whole answer in time")
            .expect("the answer");
        self.received.extend_from_slice(&rest.to_bytes());
        self.received
    }
}

/// The server-sent events in `text`: (event name, data), `message` when unnamed; comments
/// (keepalives) left out.
pub fn events(text: &str) -> Vec<(String, serde_json::Value)> {
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty() && !block.starts_with(':'))
        .map(|block| {
            let mut name = "message".to_string();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("event: ") {
                    name = value.to_string();
                } else if let Some(value) = line.strip_prefix("data: ") {
                    data.push_str(value);
                }
            }
            let data = serde_json::from_str(&data).expect("JSON data in every event");
            (name, data)
        })
        .collect()
}

/// Splits length-prefixed envelopes (Connect streams, gRPC and gRPC-Web bodies) into their
/// flags and bytes; a partial envelope at the end stays out.
pub fn envelopes(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 5 {
        let length = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        if rest.len() < 5 + length {
            break;
        }
        out.push((rest[0], rest[5..5 + length].to_vec()));
        rest = &rest[5 + length..];
    }
    out
}

/// `bytes` as one envelope with `flags`.
pub fn envelope(flags: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![flags];
    out.extend_from_slice(&u32::try_from(bytes.len()).expect("small").to_be_bytes());
    out.extend_from_slice(bytes);
    out
}
