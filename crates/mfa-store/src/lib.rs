#![doc = include_str!("../README.md")]

mod crypto;
mod error;
mod fair_pool;
mod lock_rule;
mod log_throttle;
mod models;
mod pg_pool;
mod prepared;
#[allow(missing_docs)]
mod schema;
mod sql;
mod sqlite;
mod sqlite_writer;
mod store;
mod tx;

#[cfg(feature = "test-support")]
pub mod test_support;

pub use crypto::{
    EncryptionKey, KEY_LEN, KeyFingerprint, format_key_base64, generate_key, parse_key_base64,
};
pub use error::Error;
pub use log_throttle::LogThrottle;
pub use store::{
    Backend, DEFAULT_POOL_TIMEOUT, DbStore, KEY_FINGERPRINT_MIGRATION, KeyCheck, KeyRotation,
    KeyVerification, LostKeyReplacement, MigrationStatus, PING_TIMEOUT, StoreOptions,
    postgres_userinfo_is_unambiguous, with_database,
};
