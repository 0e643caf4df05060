-- MQTT scans journaled (issue 20): the packet id and a digest of topic and payload of each, written
-- in the transaction that journals the scan. A scan the broker sends again with DUP set (the
-- gateway died between that commit and its PUBACK) is found here and not journaled twice. Keyed
-- by packet id, upserted: never more than 65,535 rows.
CREATE TABLE inbound_seen (
    mid INTEGER PRIMARY KEY,
    digest BLOB NOT NULL
);
