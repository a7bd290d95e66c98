-- Format 2: the IPs each item has sent (D25), per-ENI leases (D27), and the service's release registry
-- (which format 1 journals of 'serve' already hold: hence IF NOT EXISTS there).
ALTER TABLE items ADD COLUMN sent TEXT NOT NULL DEFAULT '[]';
CREATE INDEX items_eni ON items(eni_id, state);
CREATE TABLE leases (
    eni_id TEXT PRIMARY KEY,
    owner TEXT,
    epoch INTEGER NOT NULL DEFAULT 0,
    expires_at REAL
);
INSERT INTO leases (eni_id) SELECT DISTINCT eni_id FROM items WHERE true ON CONFLICT (eni_id) DO NOTHING;
CREATE TABLE IF NOT EXISTS service_releases (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    item_key INTEGER NOT NULL,
    vpc_id TEXT NOT NULL,
    eni_id TEXT NOT NULL,
    ips TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    outcome TEXT
);
CREATE INDEX IF NOT EXISTS service_releases_status ON service_releases(status, seq);
CREATE UNIQUE INDEX IF NOT EXISTS service_releases_item ON service_releases(item_key);
CREATE TABLE IF NOT EXISTS service_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS service_idempotency (
    key TEXT PRIMARY KEY,
    body_hash TEXT NOT NULL,
    release_ids TEXT NOT NULL,
    created_at REAL NOT NULL
);
