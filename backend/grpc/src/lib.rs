//! The gRPC server library behind `stigmer-server`: one generic controller serves every
//! Command/Query RPC of every kind over a [`stigmer_store::Store`], plus reflection, health and
//! per-call logging. It knows nothing of SQL.
#![forbid(unsafe_code)]

mod auth;
mod backup;
mod batch;
pub mod bootstrap;
mod cache_fill;
pub use stigmer_core::catalog;
pub mod codec;
pub mod config;
mod connect;
mod console;
mod controller;
mod database_backup;
mod derived;
use stigmer_core::encode;
mod error;
mod event_cache;
mod execution_start;
mod executions;
mod feed;
mod fields;
mod iam;
mod iam_checks;
mod incoming;
mod jit;
mod json;
mod json_names;
mod key_locks;
pub use stigmer_core::kinds;
mod lifecycle;
pub mod limits;
mod listing;
pub mod logging;
mod master_key;
mod metrics;
pub use stigmer_core::naming;
mod cached_rows;
mod panics;
mod references;
mod resource;
mod search;
mod secrets;
mod selector;
mod server;
mod service;
mod shutdown;
mod skill_artifact;
mod skills;
mod tls;
mod typed;
mod validation;
mod workflow_rules;

pub use auth::keys::KEY_PREFIX;
pub use config::{AuthMode, LogFormat, MasterKeyStore, ServerConfig};
pub use controller::Controller;
pub use error::{ApiError, FieldViolation};
pub use master_key::KEY_SETTING as MASTER_KEY_SETTING;
pub use master_key::{Rotation, install_os_keychain, load_keyring, rotate_master_key};
pub use resource::API_VERSION;
pub use server::{
    InProcessServer, InProcessService, ServerError, bind_metrics, check_listen, run,
    run_with_metrics,
};
pub use service::{LOCAL, MAX_MESSAGE_SIZE, ORG_HEADER};
pub use stigmer_secrets::{OsKeychain, keychain_entry};
pub use stigmer_store::Store;
