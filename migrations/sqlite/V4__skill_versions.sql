-- Content-addressed artifacts (skill zips): stored once per SHA-256, in the same file as
-- everything else so that one file is the whole backup.
CREATE TABLE artifacts (
    hash  TEXT    NOT NULL PRIMARY KEY CHECK (length(hash) = 64),
    size  INTEGER NOT NULL,
    data  BLOB    NOT NULL
) STRICT;

-- Every version of a versioned resource (Skill), by content hash and tag, as it was when
-- pushed. The current version is also the row in `resources`.
CREATE TABLE resource_versions (
    resource_id   TEXT    NOT NULL,
    version_hash  TEXT    NOT NULL,
    tag           TEXT    NOT NULL,
    revision      INTEGER NOT NULL,
    data          TEXT    NOT NULL CHECK (json_valid(data)),
    PRIMARY KEY (resource_id, version_hash)
) STRICT;

CREATE INDEX resource_versions_tag ON resource_versions (resource_id, tag, revision);
CREATE INDEX resource_versions_hash ON resource_versions (version_hash);
