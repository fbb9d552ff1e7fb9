//! Built without the `in-process` feature: a remote-only client, which compiles neither the
//! server nor its database. Asking for the in-process transport says how to get it.

use std::path::Path;

use crate::transport::Transport;

/// No server can run in this process; the type has no values.
pub(crate) enum Server {}

impl Server {
    pub(crate) async fn start(_path: Option<&Path>) -> Result<(Self, String), String> {
        Err("this client was built without the in-process transport (feature \"in-process\" of stigmer-client); set backend.local.transport to daemon and run stigmer-server".into())
    }

    pub(crate) fn transport(&self) -> Transport {
        match *self {}
    }

    pub(crate) async fn close(self) -> Result<(), String> {
        match self {}
    }
}
