-- The change log: every committed mutation, appended in the same transaction as the mutation.
-- `resources` stays the single source of current state; this table serves watch replays and
-- reads at past revisions, and is compacted in the background (docs/adr/0010-change-log-and-watch.md).
CREATE TABLE changes (
    revision      INTEGER NOT NULL PRIMARY KEY,
    type          TEXT    NOT NULL CHECK (type IN ('created', 'updated', 'deleted')),
    kind          TEXT    NOT NULL,
    org_id        TEXT    NOT NULL,
    id            TEXT    NOT NULL,
    -- Unix time in milliseconds, for age-based retention.
    committed_at  INTEGER NOT NULL,
    -- The resource after the change; before it for a delete.
    data          TEXT    NOT NULL
) STRICT;

-- getAtRevision: the last change of one resource at or before a revision.
CREATE INDEX changes_id_revision ON changes (id, revision);

-- Changes made before the log existed are unknown: the log starts at the current revision.
INSERT INTO store_meta (key, value)
SELECT 'compacted', value FROM store_meta WHERE key = 'revision';
