//! Reads served from the `proto` cache column (docs/adr/0017-protobuf-read-cache.md): the
//! stored bytes plus a second `metadata { id, revision }` taken from the row's columns, which
//! every protobuf parser merges into the first (the encoding spec: a repeated embedded message
//! field is merged, and the last scalar wins). The columns stay authoritative, as they are
//! when a read decodes `data`.

use prost::bytes::{BufMut, Bytes, BytesMut};
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use prost_reflect::{Kind, MessageDescriptor};

/// A stored resource's cached encoding and the columns that override it.
#[derive(Debug, Clone, Copy)]
pub struct CachedRow<'a> {
    pub cached: &'a [u8],
    pub id: &'a str,
    pub revision: i64,
}

/// Where a kind's envelope keeps the fields the row's columns override.
#[derive(Debug, Clone, Copy)]
pub struct EncodingPatcher {
    metadata: u32,
    id: u32,
    revision: u32,
}

impl EncodingPatcher {
    /// `None` when `message` has no `metadata` with a string `id` and an int64 `revision`,
    /// in which case reads of the kind always decode `data`.
    pub fn of(message: &MessageDescriptor) -> Option<Self> {
        let metadata = message.get_field_by_name("metadata")?;
        let Kind::Message(meta) = metadata.kind() else {
            return None;
        };
        let id = meta.get_field_by_name("id")?;
        let revision = meta.get_field_by_name("revision")?;
        let singular = |f: &prost_reflect::FieldDescriptor| !f.is_list() && !f.is_map();
        (singular(&metadata)
            && singular(&id)
            && singular(&revision)
            && id.kind() == Kind::String
            && revision.kind() == Kind::Int64)
            .then(|| Self {
                metadata: metadata.number(),
                id: id.number(),
                revision: revision.number(),
            })
    }

    /// The resource as a read returns it.
    pub fn served(&self, row: CachedRow<'_>) -> Bytes {
        let mut out = BytesMut::with_capacity(row.cached.len() + self.patch_len(row));
        out.put_slice(row.cached);
        self.put_patch(row, &mut out);
        out.freeze()
    }

    /// Appends the resource of `row` as one element of the repeated message field `field`
    /// (a list response's items).
    pub fn put_item(&self, field: u32, row: CachedRow<'_>, out: &mut impl BufMut) {
        let len = row.cached.len() + self.patch_len(row);
        encode_key(field, WireType::LengthDelimited, out);
        encode_varint(len as u64, out);
        out.put_slice(row.cached);
        self.put_patch(row, out);
    }

    fn inner_len(&self, row: CachedRow<'_>) -> usize {
        key_len(self.id)
            + encoded_len_varint(row.id.len() as u64)
            + row.id.len()
            + key_len(self.revision)
            + encoded_len_varint(row.revision as u64)
    }

    fn patch_len(&self, row: CachedRow<'_>) -> usize {
        let inner = self.inner_len(row);
        key_len(self.metadata) + encoded_len_varint(inner as u64) + inner
    }

    fn put_patch(&self, row: CachedRow<'_>, out: &mut impl BufMut) {
        encode_key(self.metadata, WireType::LengthDelimited, out);
        encode_varint(self.inner_len(row) as u64, out);
        encode_key(self.id, WireType::LengthDelimited, out);
        encode_varint(row.id.len() as u64, out);
        out.put_slice(row.id.as_bytes());
        encode_key(self.revision, WireType::Varint, out);
        // int64 is encoded as the two's-complement u64, as prost does.
        encode_varint(row.revision as u64, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_reflect::{DynamicMessage, ReflectMessage, Value};
    use stigmer_api::ai::stigmer::agentic::agent::v1::{Agent, AgentList};
    use stigmer_api::ai::stigmer::commons::apiresource::ApiResourceMetadata;

    fn agent(id: &str, revision: i64, name: &str) -> Agent {
        Agent {
            metadata: Some(ApiResourceMetadata {
                id: id.into(),
                name: name.into(),
                revision,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The encoding of `cached`, whose id and revision are stale, as after a hand edit of the
    /// columns or before the writer assigned the revision.
    fn encoded(cached: &Agent) -> Vec<u8> {
        prost::Message::encode_to_vec(cached)
    }

    #[test]
    fn served_bytes_carry_the_columns_id_and_revision_and_keep_the_rest() {
        let patcher = EncodingPatcher::of(&Agent::default().descriptor()).expect("agent patcher");
        let cached = encoded(&agent("agt-old", 3, "kept"));
        let served = patcher.served(CachedRow {
            cached: &cached,
            id: "agt-new",
            revision: 42,
        });
        let decoded: Agent = prost::Message::decode(served).expect("valid protobuf");
        assert_eq!(decoded, agent("agt-new", 42, "kept"));
    }

    #[test]
    fn list_items_are_whole_resources_each_with_its_own_columns() {
        let patcher = EncodingPatcher::of(&Agent::default().descriptor()).expect("agent patcher");
        let list = AgentList::default().descriptor();
        let field = list
            .fields()
            .find(|f| f.is_list())
            .expect("a repeated field of agents")
            .number();
        let mut out = BytesMut::new();
        for (id, revision) in [("agt-1", 7), ("agt-2", 9)] {
            let cached = encoded(&agent("stale", 1, id));
            let row = CachedRow {
                cached: &cached,
                id,
                revision,
            };
            patcher.put_item(field, row, &mut out);
        }
        let decoded = DynamicMessage::decode(list, out.freeze()).expect("valid list");
        let Some(Value::List(items)) = decoded.get_field_by_number(field).as_deref().cloned()
        else {
            panic!("no items");
        };
        let got: Vec<(String, i64)> = items
            .iter()
            .map(|item| {
                let agent: Agent = item
                    .as_message()
                    .expect("message")
                    .transcode_to()
                    .expect("an agent");
                let meta = agent.metadata.expect("metadata");
                assert_eq!(meta.name, meta.id, "the cached name stays");
                (meta.id, meta.revision)
            })
            .collect();
        assert_eq!(got, vec![("agt-1".into(), 7), ("agt-2".into(), 9)]);
    }

    #[test]
    fn kinds_without_the_envelope_fields_are_not_served_from_the_cache() {
        let id = stigmer_api::ai::stigmer::commons::apiresource::ApiResourceId::default();
        assert!(EncodingPatcher::of(&id.descriptor()).is_none());
    }
}
