//! The in-process transport: a whole server in this process, on a SQLite database, reached by
//! calling its service stack directly (feature `in-process`).

use std::path::Path;

use stigmer_database::DatabaseOptions;
use stigmer_grpc::{InProcessServer, ServerConfig};

use crate::config::DEFAULT_LOCAL_ENDPOINT;
use crate::transport::Transport;

/// A server running in this process.
pub(crate) struct Server(InProcessServer);

impl Server {
    /// Starts a server on the SQLite database at `path` (by default the server's own default
    /// database); also returns where that is, for messages.
    pub(crate) async fn start(path: Option<&Path>) -> Result<(Self, String), String> {
        let options = match path {
            Some(path) => DatabaseOptions::sqlite(path),
            None => DatabaseOptions::new(stigmer_database::DEFAULT_DB),
        };
        let database = stigmer_database::open(&options)
            .await
            .map_err(|err| err.to_string())?;
        let location = database.location.to_string();
        let listen = DEFAULT_LOCAL_ENDPOINT
            .parse()
            .map_err(|_| "bad default endpoint".to_string())?;
        let mut config = ServerConfig::new(listen);
        config.master_key_file = database.default_key_file();
        let server = InProcessServer::start(&config, database.store)
            .await
            .map_err(|err| err.to_string())?;
        Ok((Self(server), location))
    }

    pub(crate) fn transport(&self) -> Transport {
        Transport::in_process(self.0.service())
    }

    /// Ends open watches, stops background work and closes the database cleanly.
    pub(crate) async fn close(self) -> Result<(), String> {
        self.0.close().await.map_err(|err| err.to_string())
    }
}
