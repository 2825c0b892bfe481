-- One row that health checking rewrites while writes are failing (a full
-- disk, an I/O error), to learn when a write of a normal batch's size
-- succeeds again. Never read by the service.
CREATE TABLE health_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    payload BLOB NOT NULL
);
