-- Which write each change belongs to: the revision of that write's first change, so that a
-- watcher can tell the changes one call made together (an Agent and its default instance).
-- Changes logged before this column existed read as their own write (coalesce(txn, revision)).
ALTER TABLE changes ADD COLUMN txn bigint;
