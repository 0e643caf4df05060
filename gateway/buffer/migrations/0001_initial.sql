-- The raw-event journal: one compact row per tag read or barcode scan, ids assigned by the
-- buffer from counters.journal_last_id (never reused, even when every row has been evicted).
CREATE TABLE journal (
    id INTEGER PRIMARY KEY,
    kind INTEGER NOT NULL,          -- 0 tag read, 1 barcode scan
    reader TEXT NOT NULL,
    station TEXT NOT NULL,
    at_s REAL NOT NULL,
    data TEXT NOT NULL,             -- EPC hex (tag) or scanner output (barcode)
    antenna INTEGER,
    rssi REAL,
    count INTEGER,
    channel INTEGER,
    device TEXT,
    size_b INTEGER NOT NULL         -- this row's share of the byte budget
);

-- The outbox: rendered movements in seq order; seq assigned from counters.last_seq.
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    payload BLOB NOT NULL,
    created_at_s REAL NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0,
    size_b INTEGER NOT NULL
);
-- Partial indexes keep "what is pending" and "what may be evicted" cheap with a million rows.
CREATE INDEX outbox_pending ON outbox (seq) WHERE delivered = 0;
CREATE INDEX outbox_delivered ON outbox (created_at_s) WHERE delivered = 1;
CREATE INDEX outbox_created ON outbox (created_at_s);

-- Input the buffer had to refuse when full; reported once as a gap movement.
CREATE TABLE gaps (
    gap_id INTEGER PRIMARY KEY,
    refused_events INTEGER NOT NULL,
    first_at_s REAL NOT NULL,
    last_at_s REAL NOT NULL,
    reason TEXT NOT NULL,
    recorded_at_s REAL NOT NULL,
    reported INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX gaps_unreported ON gaps (gap_id) WHERE reported = 0;

-- One row of counters kept in the same transactions as the rows they count: stats are O(1).
CREATE TABLE counters (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    used_bytes INTEGER NOT NULL,
    journal_rows INTEGER NOT NULL,
    journal_last_id INTEGER NOT NULL,
    outbox_rows INTEGER NOT NULL,
    pending INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    delivered_total INTEGER NOT NULL,
    gaps_total INTEGER NOT NULL,
    refused_events_total INTEGER NOT NULL
);
INSERT INTO counters VALUES (1, 0, 0, 0, 0, 0, 0, 0, 0, 0);

-- The pipeline's cursor (last journal id consumed) and its state, committed with its movements.
CREATE TABLE checkpoint (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    cursor INTEGER NOT NULL,
    state BLOB
);
INSERT INTO checkpoint VALUES (1, 0, NULL);

-- Small key/value state other parts persist (expected returns, profile history, replay epochs).
CREATE TABLE kv (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;
