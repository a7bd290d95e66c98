-- Format 3: indexes for the release list's filters (by ENI, by VPC, by creation time, each newest first)
-- and for retention (finished releases by when they finished, idempotency keys by when they were made).
CREATE INDEX service_releases_eni ON service_releases(eni_id, seq);
CREATE INDEX service_releases_vpc ON service_releases(vpc_id, seq);
CREATE INDEX service_releases_created ON service_releases(created_at);
CREATE INDEX service_releases_finished ON service_releases(finished_at);
CREATE INDEX service_idempotency_created ON service_idempotency(created_at);
