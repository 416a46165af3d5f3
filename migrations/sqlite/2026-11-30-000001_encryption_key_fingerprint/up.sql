-- The fingerprint of the encryption key the database's secrets and
-- password failure counters are written with: claimed by the first start,
-- replaced by a key rotation in its transaction. A process whose key has
-- another fingerprint is refused at its start, so servers sharing the
-- database cannot run with different keys (each would read the others'
-- secrets as undecryptable, and count an address's password failures on a
-- counter of its own). The fingerprint is an HMAC under the key: it tells
-- nothing about the key.
CREATE TABLE encryption_key_fingerprint (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    fingerprint TEXT NOT NULL
);
