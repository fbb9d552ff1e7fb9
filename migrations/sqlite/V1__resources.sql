-- Every resource of every kind lives in this one table; `data` is the whole resource as
-- proto3 JSON, exactly what the API returns (see docs/adr/0001-one-table-json-data.md).
CREATE TABLE resources (
    id          TEXT    NOT NULL PRIMARY KEY,
    kind        TEXT    NOT NULL,
    org_id      TEXT    NOT NULL,
    slug        TEXT    NOT NULL,
    -- Store-wide revision of the row's last change; mirrored at $.metadata.revision in data.
    revision    INTEGER NOT NULL,
    created_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    data        TEXT    NOT NULL CHECK (json_valid(data))
) STRICT;

-- The database itself refuses a second resource with the same slug in one kind and org,
-- whatever the application does.
CREATE UNIQUE INDEX resources_kind_org_slug ON resources (kind, org_id, slug);

-- Keyset pagination: WHERE kind = ? AND org_id = ? AND id > ? ORDER BY id LIMIT ?.
CREATE INDEX resources_kind_org_id ON resources (kind, org_id, id);

-- Small store-wide counters that must survive deletes (the last revision handed out).
CREATE TABLE store_meta (
    key    TEXT    NOT NULL PRIMARY KEY,
    value  INTEGER NOT NULL
) STRICT;

INSERT INTO store_meta (key, value) VALUES ('revision', 0);
