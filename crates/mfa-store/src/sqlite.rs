//! SQLite connections: per-connection settings and their verification.
//!
//! Every pooled connection is set up by [`Setup`] (an r2d2
//! `CustomizeConnection`) with `batch_execute`, because diesel's `sql_query`
//! runs only the first statement of a string. At open the settings are read
//! back once per pool, so a silently ignored pragma fails the start-up
//! instead of showing up later as "database is locked".

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::CustomizeConnection;
use diesel::sql_types::{Integer, Text};

use crate::Error;
use crate::sql::lower_utils;

/// How long a connection waits for a lock held by another connection (or
/// process) before failing with "database is locked".
pub(crate) const BUSY_TIMEOUT_MS: i32 = 5_000;

/// What a pooled connection is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// The write pool: `BEGIN IMMEDIATE` transactions, one at a time.
    Writer,
    /// The read pool: `query_only`, so a read transaction cannot write.
    Reader,
}

/// Applies [`configure`] to every connection the pool opens.
#[derive(Debug)]
pub(crate) struct Setup(pub(crate) Role);

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for Setup {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        configure(conn, self.0).map_err(diesel::r2d2::Error::QueryError)
    }
}

/// Per-connection settings. `journal_mode = WAL` is a property of the file
/// (set by the first connection, a no-op afterwards); the others are per
/// connection. The busy timeout comes first so that switching to WAL waits
/// for other connections instead of failing.
///
/// `synchronous = FULL`: each commit syncs the WAL, so a committed change
/// survives a power failure or a crash of the machine. Under `NORMAL` the
/// last commits before such a crash may roll back: an accepted TOTP step
/// that could be replayed, a password changed because it leaked, a reset
/// or a revoked session undone. The writer commits queued transactions
/// together (`sqlite_writer`), so the sync is paid once per batch.
/// [`configure`], tried again while SQLite answers "database is locked"
/// at once, for up to the busy timeout: processes opening a new file
/// together race to switch it to WAL, and the loser's switch fails without
/// waiting for the busy timeout (the store test
/// `concurrent_opens_migrate_once` failed so in 9 of 30 runs).
pub(crate) fn configure_first(conn: &mut SqliteConnection, role: Role) -> QueryResult<()> {
    let deadline = std::time::Instant::now()
        + std::time::Duration::from_millis(BUSY_TIMEOUT_MS.unsigned_abs().into());
    loop {
        match configure(conn, role) {
            Err(diesel::result::Error::DatabaseError(_, info))
                if info.message().contains("database is locked")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

pub(crate) fn configure(conn: &mut SqliteConnection, role: Role) -> QueryResult<()> {
    conn.batch_execute(&format!(
        "PRAGMA busy_timeout = {BUSY_TIMEOUT_MS};
         PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;"
    ))?;
    match role {
        Role::Reader => conn.batch_execute(&format!(
            "PRAGMA query_only = ON;
             PRAGMA cache_size = -{READER_CACHE_KIB};"
        ))?,
        // The checkpointer thread copies the WAL into the database file;
        // the writer's own checkpoint is what starts the WAL again from
        // its beginning under sustained writes (WRITER_AUTOCHECKPOINT_PAGES).
        Role::Writer => conn.batch_execute(&format!(
            "PRAGMA wal_autocheckpoint = {WRITER_AUTOCHECKPOINT_PAGES};"
        ))?,
    }
    lower_utils::register_impl(conn, |text: String| text.to_lowercase())
}

/// Page cache of each read connection, KiB (SQLite's default is 2,000).
/// The pool has several readers, each with its own cache, and at 100,000
/// users none of them holds the hot pages anyway: the operating system's
/// page cache does, for all of them at once. 512 KiB keeps the B-tree
/// interior pages; with 2,000 the eight readers' caches and the allocator
/// arenas they are spread over held ~15 MiB more for no faster read (the
/// authenticated read ran ~10% faster with 512 in interleaved runs, user
/// search the same; docs/PERFORMANCE.md).
const READER_CACHE_KIB: u32 = 512;

/// WAL size (frames of one page) at which a committing writer checkpoints
/// by itself, so that the next transaction starts the WAL again from its
/// beginning.
///
/// SQLite restarts the WAL only when a writer begins while every frame has
/// been copied into the database file. Under a steady stream of writes the
/// checkpointer never gets there (new frames keep coming while it copies),
/// so the WAL grows to this size whatever the checkpointer does, and the
/// writer's checkpoint ends the cycle. That checkpoint `fsync`s while the
/// writer waits: on the test machine's disk no write commits for 20–40 ms.
/// An MFA verify run appends ~33,000 frames a second. p99 at 64
/// connections, 100,000 users, by this value (docs/PERFORMANCE.md):
/// 10,000 frames 30–36 ms (three stalls a second), 25,000 16–19 ms,
/// 50,000 13–14 ms, 100,000 11–13 ms. Each frame is 4 KiB of WAL file,
/// which keeps its largest size until the last connection closes: 50,000
/// caps it at ~200 MiB, reached only under such sustained load (with
/// pauses between writes the WAL restarts on its own).
const WRITER_AUTOCHECKPOINT_PAGES: u32 = 50_000;

/// Size above which the checkpointer empties the WAL file once nothing
/// has been written for over half a second (its back-off up to
/// [`IDLE_CHECKPOINT_INTERVAL`]). SQLite reuses the file from its
/// beginning instead of shrinking it, so without this it keeps the largest
/// size a write storm gave it (up to ~200 MiB, see
/// [`WRITER_AUTOCHECKPOINT_PAGES`]) for as long as the server runs.
/// Cutting it back at the writer's own restarts of the WAL
/// (`journal_size_limit`) cost 13% of MFA verify throughput: every cycle
/// of a storm grew the file again (docs/PERFORMANCE.md). A WAL below this
/// size is left as it is, so light traffic does not empty and regrow it
/// at every pause.
const WAL_TRUNCATE_ABOVE_BYTES: u64 = 16 * 1024 * 1024;

/// How often the checkpointer copies the WAL into the database file while
/// there are writes. The less the writer's own checkpoint
/// ([`WRITER_AUTOCHECKPOINT_PAGES`]) finds left to copy and sync, the
/// shorter it holds the writes back. MFA verify at 100,000 users, p99 at 64
/// connections, when the writer checkpointed every 10,000 frames: 75 ms
/// checkpointing every second, 44 ms every 100 ms, 35 ms every 25 ms, 31 ms
/// every 10 ms (13 ms with no checkpoint at all, which would let the WAL
/// grow without end).
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(10);

/// The longest pause between checkpoints while there are no writes.
const IDLE_CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);

/// Copies committed pages from the WAL into the database file on a thread
/// of its own, with its own connection.
///
/// SQLite's default is that the transaction whose commit takes the WAL past
/// 1,000 pages copies them, `fsync`s and all, while it still holds the
/// write lock: every writer waits for it. With MFA verifications appending
/// some ten pages each, that was a checkpoint every hundred or so
/// transactions, and a fifth of the server's CPU time in a verify run
/// (`perf`) spent inside the single writer's turn. A `PASSIVE` checkpoint
/// from another connection runs beside the writer instead (it never takes
/// the write lock, nor waits for readers); the next writer restarts the WAL
/// from its beginning if every frame has been copied by then, and under
/// sustained writes its own checkpoint does ([`WRITER_AUTOCHECKPOINT_PAGES`]).
/// Stops when dropped.
pub(crate) struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// Start checkpointing the database at `path`.
    pub(crate) fn start(path: &str) -> Result<Checkpointer, Error> {
        let mut conn = SqliteConnection::establish(path)?;
        conn.batch_execute(&format!("PRAGMA busy_timeout = {BUSY_TIMEOUT_MS};"))?;
        let wal = PathBuf::from(format!("{path}-wal"));
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                let mut pause = CHECKPOINT_INTERVAL;
                let mut last = None;
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(pause) {
                    // A failed checkpoint loses nothing (the pages stay in
                    // the WAL); the next one, or the writer's backstop,
                    // copies them.
                    let state = diesel::sql_query("PRAGMA wal_checkpoint(PASSIVE)")
                        .get_result::<CheckpointResult>(&mut conn)
                        .ok()
                        .map(|r| (r.log, r.checkpointed));
                    // Nothing written since the last one: back off, up to
                    // IDLE_CHECKPOINT_INTERVAL.
                    let idle = state == last;
                    pause = if idle {
                        (pause * 2).min(IDLE_CHECKPOINT_INTERVAL)
                    } else {
                        CHECKPOINT_INTERVAL
                    };
                    last = state;
                    // Quiet for the whole back-off (over half a second),
                    // not just a stall between two commits of a storm.
                    let quiet = idle && pause == IDLE_CHECKPOINT_INTERVAL;
                    let all_copied = state.is_some_and(|(log, copied)| log == copied);
                    if quiet && all_copied && file_size(&wal) > WAL_TRUNCATE_ABOVE_BYTES {
                        truncate_wal(&mut conn);
                    }
                }
            })
            .map_err(|e| Error::Configuration(format!("cannot start the checkpointer: {e}")))?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Size of a file, 0 if it cannot be read.
fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Empty the WAL file, if no connection is in the middle of using it
/// right now: `wal_checkpoint(TRUNCATE)` without a busy timeout takes the
/// write lock only if it is free and gives up at once if a reader still
/// reads an older snapshot, so it never holds a writer back for longer
/// than the truncation itself. Failing loses nothing: the WAL stays as it
/// was, and the next quiet moment tries again.
fn truncate_wal(conn: &mut SqliteConnection) {
    if conn.batch_execute("PRAGMA busy_timeout = 0;").is_ok() {
        let _ = conn.batch_execute("PRAGMA wal_checkpoint(TRUNCATE);");
    }
    // Restored whatever the checkpoint did (a batch would stop at its
    // first error).
    let _ = conn.batch_execute(&format!("PRAGMA busy_timeout = {BUSY_TIMEOUT_MS};"));
}

/// The answer of `PRAGMA wal_checkpoint`.
#[derive(QueryableByName)]
struct CheckpointResult {
    /// Frames in the WAL.
    #[diesel(sql_type = Integer)]
    log: i32,
    /// Of those, the frames copied into the database file.
    #[diesel(sql_type = Integer)]
    checkpointed: i32,
}

#[derive(QueryableByName)]
struct JournalMode {
    #[diesel(sql_type = Text)]
    journal_mode: String,
}

#[derive(QueryableByName)]
struct Synchronous {
    #[diesel(sql_type = Integer)]
    synchronous: i32,
}

#[derive(QueryableByName)]
struct ForeignKeys {
    #[diesel(sql_type = Integer)]
    foreign_keys: i32,
}

#[derive(QueryableByName)]
struct BusyTimeout {
    #[diesel(sql_type = Integer)]
    timeout: i32,
}

#[derive(QueryableByName)]
struct QueryOnly {
    #[diesel(sql_type = Integer)]
    query_only: i32,
}

#[derive(QueryableByName)]
struct WalAutocheckpoint {
    #[diesel(sql_type = Integer)]
    wal_autocheckpoint: i32,
}

#[derive(QueryableByName)]
struct CacheSize {
    #[diesel(sql_type = Integer)]
    cache_size: i32,
}

#[derive(QueryableByName)]
struct Lowered {
    #[diesel(sql_type = Text)]
    lowered: String,
}

/// Read the settings back and fail unless they are what [`configure`] set.
pub(crate) fn verify(conn: &mut SqliteConnection, role: Role) -> Result<(), Error> {
    let wrong = |what: String| Err(Error::Configuration(what));

    let mode = diesel::sql_query("PRAGMA journal_mode").get_result::<JournalMode>(conn)?;
    if !mode.journal_mode.eq_ignore_ascii_case("wal") {
        return wrong(format!(
            "journal_mode is {:?}, expected \"wal\" (is the file on a local file system?)",
            mode.journal_mode
        ));
    }
    let sync = diesel::sql_query("PRAGMA synchronous").get_result::<Synchronous>(conn)?;
    if sync.synchronous != 2 {
        return wrong(format!(
            "synchronous is {}, expected 2 (FULL)",
            sync.synchronous
        ));
    }
    let fk = diesel::sql_query("PRAGMA foreign_keys").get_result::<ForeignKeys>(conn)?;
    if fk.foreign_keys != 1 {
        return wrong(format!("foreign_keys is {}, expected 1", fk.foreign_keys));
    }
    let busy = diesel::sql_query("PRAGMA busy_timeout").get_result::<BusyTimeout>(conn)?;
    if busy.timeout != BUSY_TIMEOUT_MS {
        return wrong(format!(
            "busy_timeout is {} ms, expected {BUSY_TIMEOUT_MS} ms",
            busy.timeout
        ));
    }
    let query_only = diesel::sql_query("PRAGMA query_only").get_result::<QueryOnly>(conn)?;
    let expected = i32::from(role == Role::Reader);
    if query_only.query_only != expected {
        return wrong(format!(
            "query_only is {}, expected {expected}",
            query_only.query_only
        ));
    }
    if role == Role::Writer {
        let pages = diesel::sql_query("PRAGMA wal_autocheckpoint")
            .get_result::<WalAutocheckpoint>(conn)?
            .wal_autocheckpoint;
        if u32::try_from(pages) != Ok(WRITER_AUTOCHECKPOINT_PAGES) {
            return wrong(format!(
                "wal_autocheckpoint is {pages}, expected {WRITER_AUTOCHECKPOINT_PAGES}"
            ));
        }
    }
    if role == Role::Reader {
        let cache = diesel::sql_query("PRAGMA cache_size").get_result::<CacheSize>(conn)?;
        let expected = -i64::from(READER_CACHE_KIB);
        if i64::from(cache.cache_size) != expected {
            return wrong(format!(
                "cache_size is {}, expected {expected} (KiB)",
                cache.cache_size
            ));
        }
    }
    let lowered = diesel::sql_query("SELECT lower('ÄÉ') AS lowered").get_result::<Lowered>(conn)?;
    if lowered.lowered != "äé" {
        return wrong("lower() is not Unicode-aware".to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(QueryableByName)]
    struct CompileOption {
        #[diesel(sql_type = Text)]
        compile_options: String,
    }

    /// The workspace's `.cargo/config.toml` builds the bundled SQLite
    /// without the shared page cache and without memory statistics.
    #[test]
    fn bundled_sqlite_has_the_workspace_compile_options() {
        let mut conn = SqliteConnection::establish(":memory:").unwrap_or_else(|e| panic!("{e}"));
        let options: Vec<String> = diesel::sql_query("PRAGMA compile_options")
            .load::<CompileOption>(&mut conn)
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|o| o.compile_options)
            .collect();
        assert!(
            options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
            "{options:?}"
        );
        assert!(
            !options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"),
            "{options:?}"
        );
    }

    #[test]
    fn readers_get_the_small_page_cache() {
        let mut conn = SqliteConnection::establish(":memory:").unwrap_or_else(|e| panic!("{e}"));
        configure(&mut conn, Role::Reader).unwrap_or_else(|e| panic!("{e}"));
        let cache = diesel::sql_query("PRAGMA cache_size")
            .get_result::<CacheSize>(&mut conn)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(i64::from(cache.cache_size), -i64::from(READER_CACHE_KIB));
    }

    /// A connection whose commits could roll back after a power failure
    /// is refused at start.
    #[test]
    fn commits_are_synced() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("sync.db");
        let path = path.to_str().unwrap_or_else(|| panic!("non-UTF-8 path"));
        let mut conn = SqliteConnection::establish(path).unwrap_or_else(|e| panic!("{e}"));
        configure(&mut conn, Role::Writer).unwrap_or_else(|e| panic!("{e}"));
        verify(&mut conn, Role::Writer).unwrap_or_else(|e| panic!("{e}"));

        conn.batch_execute("PRAGMA synchronous = NORMAL;")
            .unwrap_or_else(|e| panic!("{e}"));
        let refused = verify(&mut conn, Role::Writer).err().map(|e| e.to_string());
        assert!(
            refused
                .as_deref()
                .is_some_and(|e| e.contains("synchronous is 1, expected 2 (FULL)")),
            "{refused:?}"
        );
    }

    /// The writer's checkpoint threshold is read back at start: a writer
    /// left with SQLite's default (1,000 frames) is refused.
    #[test]
    fn the_writer_checkpoints_only_a_long_wal() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("wal.db");
        let path = path.to_str().unwrap_or_else(|| panic!("non-UTF-8 path"));
        let mut conn = SqliteConnection::establish(path).unwrap_or_else(|e| panic!("{e}"));
        configure(&mut conn, Role::Writer).unwrap_or_else(|e| panic!("{e}"));
        verify(&mut conn, Role::Writer).unwrap_or_else(|e| panic!("{e}"));

        conn.batch_execute("PRAGMA wal_autocheckpoint = 1000;")
            .unwrap_or_else(|e| panic!("{e}"));
        let refused = verify(&mut conn, Role::Writer).err().map(|e| e.to_string());
        assert!(
            refused
                .as_deref()
                .is_some_and(|e| e.contains("wal_autocheckpoint is 1000")),
            "{refused:?}"
        );
    }
}
