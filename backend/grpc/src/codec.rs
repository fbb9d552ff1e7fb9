//! A tonic codec for messages whose type is known only at run time: the server decodes each
//! request as its method's input type; clients (and tests) decode responses the same way.

use prost::bytes::{BufMut, Bytes};
use prost_reflect::{DynamicMessage, MessageDescriptor};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Encodes any `DynamicMessage`; decodes messages of one type.
#[derive(Clone)]
pub struct DynamicCodec {
    decodes: MessageDescriptor,
}

impl DynamicCodec {
    /// A codec that decodes `decodes` messages (a request type on a server, a response type on
    /// a client).
    pub fn new(decodes: MessageDescriptor) -> Self {
        Self { decodes }
    }
}

impl Codec for DynamicCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = DynamicEncoder;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> DynamicEncoder {
        DynamicEncoder
    }

    fn decoder(&mut self) -> DynamicDecoder {
        DynamicDecoder(self.decodes.clone())
    }
}

pub struct DynamicEncoder;

impl Encoder for DynamicEncoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn encode(&mut self, item: DynamicMessage, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&crate::encode::encode_message(&item));
        Ok(())
    }
}

/// What the server sends: a message to encode, or bytes already encoded (reads served from
/// the `proto` cache column, see `wire.rs`).
#[derive(Debug, Clone)]
pub enum Reply {
    Message(DynamicMessage),
    Encoded(Bytes),
}

impl From<DynamicMessage> for Reply {
    fn from(message: DynamicMessage) -> Self {
        Self::Message(message)
    }
}

/// The server's codec: decodes requests of one type, encodes [`Reply`]s.
#[derive(Clone)]
pub(crate) struct ServerCodec {
    decodes: MessageDescriptor,
}

impl ServerCodec {
    pub(crate) fn new(decodes: MessageDescriptor) -> Self {
        Self { decodes }
    }
}

impl Codec for ServerCodec {
    type Encode = Reply;
    type Decode = DynamicMessage;
    type Encoder = ReplyEncoder;
    type Decoder = DynamicDecoder;

    fn encoder(&mut self) -> ReplyEncoder {
        ReplyEncoder
    }

    fn decoder(&mut self) -> DynamicDecoder {
        DynamicDecoder(self.decodes.clone())
    }
}

pub struct ReplyEncoder;

impl Encoder for ReplyEncoder {
    type Item = Reply;
    type Error = Status;

    fn encode(&mut self, item: Reply, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        match item {
            Reply::Message(message) => DynamicEncoder.encode(message, dst),
            Reply::Encoded(bytes) => {
                dst.put(bytes);
                Ok(())
            }
        }
    }
}

pub struct DynamicDecoder(MessageDescriptor);

impl Decoder for DynamicDecoder {
    type Item = DynamicMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, Status> {
        DynamicMessage::decode(self.0.clone(), src)
            .map(Some)
            .map_err(|err| {
                Status::invalid_argument(format!(
                    "the message is not a valid {}: {err}",
                    self.0.full_name()
                ))
            })
    }
}
