//! A tonic codec for messages whose type is known only at run time: the server decodes each
//! request as its method's input type; clients (and tests) decode responses the same way.

use prost::bytes::BufMut;
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

pub struct DynamicDecoder(MessageDescriptor);

impl DynamicDecoder {
    pub fn new(decodes: MessageDescriptor) -> Self {
        Self(decodes)
    }
}

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
