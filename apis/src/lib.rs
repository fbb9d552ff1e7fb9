//! The Stigmer API as Rust types: prost messages (each with `ReflectMessage`), tonic clients,
//! and the descriptor set the server uses for reflection, validation and JSON mapping.
#![forbid(unsafe_code)]
#![allow(clippy::all, missing_docs)]
// The generated docs are the .proto comments, which write placeholders like <field> as prose.
#![allow(
    rustdoc::invalid_html_tags,
    rustdoc::bare_urls,
    rustdoc::broken_intra_doc_links
)]

use std::sync::LazyLock;

use prost_reflect::DescriptorPool;

/// Every Stigmer .proto file (with imports and custom options), encoded.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/stigmer_descriptor.bin"));

/// The decoded descriptor pool behind every generated message's `ReflectMessage`.
pub static DESCRIPTOR_POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    // The bytes were produced and decoded by build.rs, so a failure here is a build defect.
    DescriptorPool::decode(FILE_DESCRIPTOR_SET).expect("embedded descriptor set is valid")
});

include!(concat!(env!("OUT_DIR"), "/_includes.rs"));
