//! The server's tonic codec: requests decode as their method's input type (as the shared
//! [`DynamicCodec`] does), replies are messages to encode or bytes already encoded.

use prost::bytes::{BufMut, Bytes};
use stigmer_core::codec::DynamicDecoder;
pub use stigmer_core::codec::{DynamicCodec, DynamicEncoder};

use prost_reflect::{DynamicMessage, MessageDescriptor};
use tonic::Status;
use tonic::codec::{Codec, EncodeBuf, Encoder};

/// What the server sends: a message to encode, or bytes already encoded (reads served from
/// the `proto` cache column, see `stigmer_core::cached_encoding`).
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
        DynamicDecoder::new(self.decodes.clone())
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
