//! The cases, one `pub async fn` each, grouped by what they cover. Each opens its own store
//! through the harness, checks behaviour through the `Store` trait only, and closes the store.

mod blobs;
mod concurrency;
mod crud;
mod feed;
mod lifecycle;
mod listing;
mod log;
mod maintenance;
mod search;

pub use blobs::*;
pub use concurrency::*;
pub use crud::*;
pub use feed::*;
pub use lifecycle::*;
pub use listing::*;
pub use log::*;
pub use maintenance::*;
pub use search::*;
