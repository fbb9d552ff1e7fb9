-- The PostgreSQL store's schema: the same tables as the SQLite store's V1-V7 in one step
-- (docs/adr/0001-one-table-json-data.md, 0010-change-log-and-watch.md, 0017-protobuf-read-cache.md,
-- 0023-postgres-revision-order.md). `data` is jsonb so that psql users can write
-- `data->'metadata'->>'name'`. Keys, kinds and orgs compare byte-wise (COLLATE "C"), as SQLite's
-- do, so that pages come in the same id order whatever the database's locale.

-- Every resource of every kind; `data` is the whole resource as proto3 JSON.
CREATE TABLE resources (
    id          text COLLATE "C" NOT NULL PRIMARY KEY,
    kind        text COLLATE "C" NOT NULL,
    org_id      text COLLATE "C" NOT NULL,
    slug        text COLLATE "C" NOT NULL,
    -- Store-wide revision of the row's last change; mirrored at data->'metadata'->'revision'.
    revision    bigint      NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    data        jsonb       NOT NULL,
    -- The protobuf encoding reads serve (secrets redacted); NULL makes readers decode `data`.
    proto       bytea
);

-- The database itself refuses a second resource with the same slug in one kind and org.
CREATE UNIQUE INDEX resources_kind_org_slug ON resources (kind, org_id, slug);

-- Keyset pagination: WHERE kind = $1 AND org_id = $2 AND id > $3 ORDER BY id LIMIT $4.
CREATE INDEX resources_kind_org_id ON resources (kind, org_id, id);

-- Rows without a read-cache encoding, found without a table scan by the background refill.
CREATE INDEX resources_uncached ON resources (id) WHERE proto IS NULL;

-- A change to data, id or revision that does not also replace `proto` (an edit with psql, a
-- re-seal) clears it, so that the cache never serves something `data` no longer says. Like
-- SQLite's trigger it fires on the columns an UPDATE sets, whatever their values.
CREATE FUNCTION resources_proto_stale() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.proto IS NOT NULL AND NEW.proto IS NOT DISTINCT FROM OLD.proto THEN
        NEW.proto := NULL;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER resources_proto_stale BEFORE UPDATE OF data, id, revision ON resources
FOR EACH ROW EXECUTE FUNCTION resources_proto_stale();

-- `doc` with its metadata.revision set to `revision` as a proto3 JSON int64 (a string), as
-- SQLite's json_set(doc, '$.metadata.revision', text) does: a missing metadata object is
-- created, a metadata that is not an object and a document that is not one are left alone.
CREATE FUNCTION with_revision(doc jsonb, revision bigint) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN jsonb_typeof(doc) <> 'object' THEN doc
        WHEN doc -> 'metadata' IS NULL
            THEN doc || jsonb_build_object('metadata', jsonb_build_object('revision', revision::text))
        WHEN jsonb_typeof(doc -> 'metadata') = 'object'
            THEN jsonb_set(doc, '{metadata,revision}', to_jsonb(revision::text))
        ELSE doc
    END
$$;

-- Store-wide counters: 'revision' is the last revision handed out (every writer locks this row
-- first and holds it to its commit: docs/adr/0023-postgres-revision-order.md); 'compacted' is
-- where the retained change log starts.
CREATE TABLE store_meta (
    key    text COLLATE "C" NOT NULL PRIMARY KEY,
    value  bigint NOT NULL
);

INSERT INTO store_meta (key, value) VALUES ('revision', 0), ('compacted', 0);

-- The change log: every committed mutation, appended in the same transaction.
CREATE TABLE changes (
    revision      bigint NOT NULL PRIMARY KEY,
    type          text   NOT NULL CHECK (type IN ('created', 'updated', 'deleted')),
    kind          text COLLATE "C" NOT NULL,
    org_id        text COLLATE "C" NOT NULL,
    id            text COLLATE "C" NOT NULL,
    -- The database's clock, the same for every replica, for age-based retention.
    committed_at  timestamptz NOT NULL DEFAULT now(),
    -- The resource after the change; before it for a delete.
    data          jsonb  NOT NULL
);

-- getAtRevision: the last change of one resource at or before a revision.
CREATE INDEX changes_id_revision ON changes (id, revision);

-- Store-wide text settings, e.g. the id of the master key that seals secrets (never the key).
CREATE TABLE settings (
    key    text COLLATE "C" NOT NULL PRIMARY KEY,
    value  text NOT NULL
);

-- Content-addressed artifacts (skill zips), stored once per SHA-256.
CREATE TABLE artifacts (
    hash  text COLLATE "C" NOT NULL PRIMARY KEY CHECK (length(hash) = 64),
    size  bigint NOT NULL,
    data  bytea  NOT NULL
);

-- Every version of a versioned resource (Skill), by content hash and tag.
CREATE TABLE resource_versions (
    resource_id   text COLLATE "C" NOT NULL,
    version_hash  text COLLATE "C" NOT NULL,
    tag           text COLLATE "C" NOT NULL,
    revision      bigint NOT NULL,
    data          jsonb  NOT NULL,
    PRIMARY KEY (resource_id, version_hash)
);

CREATE INDEX resource_versions_tag ON resource_versions (resource_id, tag, revision);
CREATE INDEX resource_versions_hash ON resource_versions (version_hash);

-- How many resources each (kind, org) holds, kept exact by triggers in the same transaction as
-- every insert, delete or move, whoever makes it. Lists report it as their total, info as its
-- counts, without counting rows (docs/adr/0011-listing.md).
CREATE TABLE resource_counts (
    kind    text COLLATE "C" NOT NULL,
    org_id  text COLLATE "C" NOT NULL,
    count   bigint NOT NULL,
    PRIMARY KEY (kind, org_id)
);

CREATE FUNCTION resource_counts_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        UPDATE resource_counts SET count = count - 1
        WHERE kind = OLD.kind AND org_id = OLD.org_id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO resource_counts (kind, org_id, count) VALUES (NEW.kind, NEW.org_id, 1)
        ON CONFLICT (kind, org_id) DO UPDATE SET count = resource_counts.count + 1;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER resource_counts_add_remove AFTER INSERT OR DELETE ON resources
FOR EACH ROW EXECUTE FUNCTION resource_counts_track();

CREATE TRIGGER resource_counts_move AFTER UPDATE OF kind, org_id ON resources
FOR EACH ROW WHEN (NEW.kind IS DISTINCT FROM OLD.kind OR NEW.org_id IS DISTINCT FROM OLD.org_id)
EXECUTE FUNCTION resource_counts_track();
