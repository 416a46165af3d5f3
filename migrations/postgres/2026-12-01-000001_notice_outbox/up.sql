-- Notices waiting to be mailed: mail that reports a change already made
-- (a factor enrolled or reset, a replay refused, a recovery code used, an
-- email change, a password or an opt-out set). A notice is written in the
-- transaction of its change, so that a process stopped after the commit
-- loses none, and deleted once sent or given up. `due_at` is when it may
-- be sent next: at once when queued; the end of a claiming process's lease
-- while it sends; later after a failed send. The payload is the notice as
-- JSON; messages with a code or a token are never written here. Ids are
-- never reused: a process whose lease ran out must not delete another
-- notice under the same id.
CREATE TABLE notices (
    id BIGSERIAL PRIMARY KEY,
    recipient TEXT NOT NULL,
    payload TEXT NOT NULL,
    queued_at BIGINT NOT NULL,
    due_at BIGINT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX notices_due_at_idx ON notices (due_at, id);
