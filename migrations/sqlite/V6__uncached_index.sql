-- Rows without a read-cache encoding (written before V5, edited by hand, re-sealed), so that
-- the server can find and refill them in the background without scanning the table
-- (docs/adr/0017-protobuf-read-cache.md). Rows that have an encoding are not in the index,
-- so it stays empty in normal operation and costs writes nothing but the check.
CREATE INDEX resources_uncached ON resources (id) WHERE proto IS NULL;
