-- Each resource's protobuf encoding exactly as reads return it (secrets redacted), so that get
-- and list copy bytes instead of decoding JSON and encoding protobuf on every call
-- (docs/adr/0017-protobuf-read-cache.md). `data` stays the source of truth: any change to data,
-- id or revision that does not also replace `proto` (an edit with the sqlite3 CLI, a re-seal)
-- clears it, and reads then decode `data` as before.
ALTER TABLE resources ADD COLUMN proto BLOB;

CREATE TRIGGER resources_proto_stale AFTER UPDATE OF data, id, revision ON resources
WHEN new.proto IS NOT NULL AND new.proto IS old.proto
BEGIN
    UPDATE resources SET proto = NULL WHERE rowid = new.rowid;
END;
