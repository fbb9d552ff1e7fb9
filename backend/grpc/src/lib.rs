//! The gRPC server library behind `stigmer-server`: one generic controller serves every
//! Command/Query RPC of every kind over a [`stigmer_store::Store`], plus reflection, health and
//! per-call logging. It knows nothing of SQL.
#![forbid(unsafe_code)]

pub mod catalog;
pub mod codec;
pub mod config;
mod controller;
mod error;
mod feed;
mod fields;
mod json;
pub mod kinds;
pub mod logging;
mod naming;
mod resource;
mod selector;
mod server;
mod service;
mod validation;

pub use config::{DEFAULT_DB, Durability, LogFormat, ServerConfig};
pub use controller::App;
pub use error::{ApiError, FieldViolation};
pub use server::{ServerError, open_store, run};
pub use service::{LOCAL, MAX_MESSAGE_SIZE, ORG_HEADER};
