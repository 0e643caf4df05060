-- Expected returns announced by the WMS (issue 11): a million open RMAs must not live in memory
-- nor in the pipeline snapshot. A receipt reads the few rows its item can match and writes its
-- increments in the transaction that stores its movement.
CREATE TABLE expected_rmas (
    id INTEGER PRIMARY KEY,         -- internal; lines and received items refer to it
    rma TEXT NOT NULL UNIQUE,
    customer TEXT,
    expires_at_s REAL,
    completed INTEGER NOT NULL DEFAULT 0,
    open_lines INTEGER NOT NULL,    -- lines with received < qty
    gen INTEGER NOT NULL,           -- announcement generation: a replace deletes older ones
    size_b INTEGER NOT NULL         -- this RMA's share of `expected_counters.bytes`
);
CREATE INDEX expected_rmas_expiry ON expected_rmas (expires_at_s) WHERE expires_at_s IS NOT NULL;
CREATE INDEX expected_rmas_gen ON expected_rmas (gen);

-- One row per announced line: an EPC, a GTIN with serial, or a GTIN with a quantity.
CREATE TABLE expected_lines (
    rma_id INTEGER NOT NULL,
    line INTEGER NOT NULL,
    epc TEXT,
    gtin TEXT,
    serial TEXT,
    qty INTEGER NOT NULL,
    received INTEGER NOT NULL DEFAULT 0,
    full INTEGER NOT NULL DEFAULT 0,  -- received >= qty: quantity lines look for open ones first
    PRIMARY KEY (rma_id, line)
) WITHOUT ROWID;
CREATE INDEX expected_lines_epc ON expected_lines (epc) WHERE epc IS NOT NULL;
CREATE INDEX expected_lines_serial ON expected_lines (gtin, serial)
    WHERE epc IS NULL AND serial IS NOT NULL;
CREATE INDEX expected_lines_gtin ON expected_lines (gtin, full, rma_id, line)
    WHERE epc IS NULL AND serial IS NULL;

-- How often each item arrived for an RMA: a serialised item seen again is a duplicate.
CREATE TABLE expected_received (
    rma_id INTEGER NOT NULL,
    item TEXT NOT NULL,
    times INTEGER NOT NULL,
    PRIMARY KEY (rma_id, item)
) WITHOUT ROWID;

-- Counters kept in the same transactions as the rows: `gateway expected stats` and the KPI
-- snapshot read them in O(1). `version` changes with every announcement, cancel or sweep, so a
-- daemon notices what another connection (`gateway expected import`) wrote.
CREATE TABLE expected_counters (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    rmas INTEGER NOT NULL,
    open_rmas INTEGER NOT NULL,
    lines INTEGER NOT NULL,
    open_lines INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    expired_total INTEGER NOT NULL,
    gen INTEGER NOT NULL,
    version INTEGER NOT NULL
);
INSERT INTO expected_counters VALUES (1, 0, 0, 0, 0, 0, 0, 0, 0);
