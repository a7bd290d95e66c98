-- The batch journal (format 1): items, the tasks submitted for them, and the settings needed to resume.
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    vpc_id TEXT NOT NULL,
    eni_id TEXT NOT NULL,
    ips TEXT NOT NULL,
    line INTEGER,
    state TEXT NOT NULL,
    in_doubt TEXT,
    outcome TEXT
);
CREATE TABLE tasks (
    item_id INTEGER NOT NULL REFERENCES items(id),
    task_id TEXT NOT NULL,
    request_id TEXT,
    ips TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (item_id, task_id)
);
CREATE INDEX items_state ON items(state);
