//! What the server and its clients share, so that a client talking to a remote server needs
//! neither the store nor validation: the catalog of kinds read from the API descriptors, the
//! codec for messages known only at run time, id and slug rules, header names and limits.
#![forbid(unsafe_code)]

pub mod cached_encoding;
pub mod catalog;
pub mod codec;
pub mod encode;
pub mod kinds;
pub mod naming;

/// The `api_version` of every resource.
pub const API_VERSION: &str = "agentic.stigmer.ai/v1";
/// Largest request or response, both ways (CONTRACT.md).
pub const MAX_MESSAGE_SIZE: usize = 10 * 1024 * 1024;
/// Header that selects the org a local-mode caller works in.
pub const ORG_HEADER: &str = "x-stigmer-org";
/// The org of local mode, and the identity recorded in audits there.
pub const LOCAL: &str = "local";
