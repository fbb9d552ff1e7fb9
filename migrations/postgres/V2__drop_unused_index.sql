-- No statement of the PostgreSQL store uses resource_versions_hash: the clean-up of artifacts
-- no version needs reads `resource_id` too, which the index does not hold, so PostgreSQL scans
-- the table whatever indexes it has; the index only cost every skill push a B-tree insert.
-- SQLite keeps its copy, which the same clean-up searches (docs/indexes.md).
DROP INDEX resource_versions_hash;
