//! Reading `--db`: a path, `sqlite:PATH`, or a PostgreSQL URL.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where a database is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file, "~/" already expanded.
    Sqlite(PathBuf),
    /// A PostgreSQL database.
    Postgres(PostgresUrl),
    /// `:memory:`: a SQLite database that lives as long as the process, for tests and demos.
    Memory,
}

/// What `--db` says for a database that lives only as long as the server.
pub const MEMORY: &str = ":memory:";

/// A `postgres://` URL, which may hold a password: shown (`Display`, `Debug`) without it.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl(String);

impl PostgresUrl {
    /// The URL with its password, for the driver only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&stigmer_postgres::PostgresConfig::new(self.0.clone()).redacted_url())
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgresUrl({self})")
    }
}

/// Why `--db` names no database this server can open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LocationError {
    #[error("--db is empty: give a SQLite file path, sqlite:PATH or a postgres:// URL")]
    Empty,
    #[error("cannot expand ~ in --db: no home directory; give an absolute path")]
    NoHome,
    #[error(
        "--db has the URL scheme {0:?}, which this server does not know: give a SQLite file path, sqlite:PATH or a postgres:// URL"
    )]
    UnknownScheme(String),
}

impl Location {
    pub fn parse(db: &str) -> Result<Self, LocationError> {
        if db == MEMORY || db == "sqlite::memory:" {
            return Ok(Self::Memory);
        }
        if let Some(path) = db.strip_prefix("sqlite:") {
            // sqlite:///abs/path and sqlite://rel/path, as other tools write them, too.
            let path = path.strip_prefix("//").unwrap_or(path);
            return Ok(Self::Sqlite(expand_home(non_empty(path)?)?));
        }
        if let Some((scheme, _)) = db.split_once("://") {
            return match scheme {
                "postgres" | "postgresql" => Ok(Self::Postgres(PostgresUrl(db.to_string()))),
                _ => Err(LocationError::UnknownScheme(scheme.to_string())),
            };
        }
        Ok(Self::Sqlite(expand_home(non_empty(db)?)?))
    }
}

impl Location {
    /// Where the master key file goes when none is named: beside a SQLite file, with the
    /// extension `.key`. A PostgreSQL database has no such place.
    pub fn default_key_file(&self) -> Option<PathBuf> {
        match self {
            Self::Sqlite(path) => Some(path.with_extension("key")),
            Self::Postgres(_) | Self::Memory => None,
        }
    }
}

impl fmt::Display for Location {
    /// For logs and errors: the file, or the URL without its password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "{}", path.display()),
            Self::Postgres(url) => write!(f, "{url}"),
            Self::Memory => f.write_str(MEMORY),
        }
    }
}

fn non_empty(path: &str) -> Result<&str, LocationError> {
    if path.is_empty() {
        Err(LocationError::Empty)
    } else {
        Ok(path)
    }
}

fn expand_home(path: &str) -> Result<PathBuf, LocationError> {
    match Path::new(path).strip_prefix("~") {
        Ok(rest) => std::env::home_dir()
            .map(|home| home.join(rest))
            .ok_or(LocationError::NoHome),
        Err(_) => Ok(PathBuf::from(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_sqlite_urls_name_sqlite_files() {
        for (db, path) in [
            ("data/s.db", "data/s.db"),
            ("/var/lib/s.db", "/var/lib/s.db"),
            ("sqlite:s.db", "s.db"),
            ("sqlite://s.db", "s.db"),
            ("sqlite:///var/lib/s.db", "/var/lib/s.db"),
        ] {
            assert_eq!(
                Location::parse(db),
                Ok(Location::Sqlite(PathBuf::from(path))),
                "{db}"
            );
        }
        let Ok(Location::Sqlite(home)) = Location::parse("~/.stigmer/stigmer.db") else {
            panic!("~ expands");
        };
        assert!(home.is_absolute() && home.ends_with(".stigmer/stigmer.db"));
    }

    #[test]
    fn postgres_urls_name_postgres_and_never_show_their_password() {
        for db in [
            "postgres://app:s3cret@db.internal:5432/stigmer",
            "postgresql://app:s3cret@db.internal:5432/stigmer",
        ] {
            let location = Location::parse(db).expect("a postgres URL");
            let Location::Postgres(url) = &location else {
                panic!("{db} is not PostgreSQL");
            };
            assert_eq!(url.expose(), db);
            for shown in [location.to_string(), format!("{location:?}")] {
                assert!(!shown.contains("s3cret"), "{shown}");
                assert!(shown.contains("app@db.internal:5432/stigmer"), "{shown}");
            }
        }
    }

    #[test]
    fn memory_is_a_name_not_a_file() {
        for db in [":memory:", "sqlite::memory:"] {
            assert_eq!(Location::parse(db), Ok(Location::Memory), "{db}");
        }
        assert_eq!(Location::Memory.default_key_file(), None);
        assert_eq!(
            Location::parse("./:memory:"),
            Ok(Location::Sqlite(PathBuf::from("./:memory:")))
        );
    }

    #[test]
    fn refuses_what_names_no_database() {
        assert_eq!(Location::parse(""), Err(LocationError::Empty));
        assert_eq!(Location::parse("sqlite:"), Err(LocationError::Empty));
        assert_eq!(
            Location::parse("mysql://u:p@h/db"),
            Err(LocationError::UnknownScheme("mysql".into()))
        );
    }
}
