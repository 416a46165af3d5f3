//! Integration tests of mfa-store. One binary (linking is slow on two
//! cores); the modules share the helpers in `support`.
//!
//! Every behavioural test is written once, taking a `TestDatabase`, and
//! instantiated per backend by `backend_tests!`: `<module>::sqlite::<test>`
//! always runs; `<module>::postgres::<test>` runs when
//! `MFA_TEST_DATABASE_URL` names a PostgreSQL server (e.g.
//! `postgres://postgres@127.0.0.1:5432/postgres`) and otherwise prints a
//! "skipped" line.

/// Instantiate `fn name(db: TestDatabase)` tests for both backends.
macro_rules! backend_tests {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name(mfa_store::test_support::TestDatabase::sqlite());
                }
            )+
        }

        mod postgres {
            $(
                #[test]
                fn $name() {
                    if let Some(db) = mfa_store::test_support::TestDatabase::postgres() {
                        super::$name(db);
                    }
                }
            )+
        }
    };
}

mod authenticator_success;
mod behaviour;
mod concurrency;
mod crash;
mod encryption;
mod group_commit;
mod hot_paths;
mod key_rotation;
mod notices;
mod open;
mod search;
mod support;
