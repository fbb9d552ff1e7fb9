-- Store-wide text settings, e.g. the id of the master key that seals secrets (never the key).
CREATE TABLE settings (
    key    TEXT NOT NULL PRIMARY KEY,
    value  TEXT NOT NULL
) STRICT;
