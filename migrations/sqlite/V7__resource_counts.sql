-- How many resources each (kind, org) holds, kept exact by triggers in the same transaction as
-- every insert, delete or move, whoever makes it (the server or the sqlite3 CLI). Lists report
-- it as their total and info as its counts without counting rows (docs/adr/0011-listing.md).
CREATE TABLE resource_counts (
    kind    TEXT    NOT NULL,
    org_id  TEXT    NOT NULL,
    count   INTEGER NOT NULL,
    PRIMARY KEY (kind, org_id)
) STRICT, WITHOUT ROWID;

INSERT INTO resource_counts (kind, org_id, count)
SELECT kind, org_id, count(*) FROM resources GROUP BY kind, org_id;

CREATE TRIGGER resource_counts_insert AFTER INSERT ON resources
BEGIN
    INSERT INTO resource_counts (kind, org_id, count) VALUES (new.kind, new.org_id, 1)
    ON CONFLICT (kind, org_id) DO UPDATE SET count = count + 1;
END;

CREATE TRIGGER resource_counts_delete AFTER DELETE ON resources
BEGIN
    UPDATE resource_counts SET count = count - 1
    WHERE kind = old.kind AND org_id = old.org_id;
END;

CREATE TRIGGER resource_counts_move AFTER UPDATE OF kind, org_id ON resources
WHEN new.kind IS NOT old.kind OR new.org_id IS NOT old.org_id
BEGIN
    UPDATE resource_counts SET count = count - 1
    WHERE kind = old.kind AND org_id = old.org_id;
    INSERT INTO resource_counts (kind, org_id, count) VALUES (new.kind, new.org_id, 1)
    ON CONFLICT (kind, org_id) DO UPDATE SET count = count + 1;
END;
