//! End-to-end tests of the HTTP API over a real socket: the application
//! runs in-process on 127.0.0.1 port 0 with a fresh database (SQLite always;
//! PostgreSQL too when `MFA_TEST_DATABASE_URL` is set), a fresh data
//! directory, a real SMTP sink for mail and a fixed clock, so that codes
//! and expiry are deterministic.
//!
//! One test binary on purpose: every `tests/*.rs` would be its own link.

mod helpers;

mod attacks;
mod auth;
mod binary;
mod browser;
mod cli;
mod conventions;
mod logs;
mod mail;
mod multinode;
mod operations;
mod orgs;
mod seed000;
mod seed004;
mod sessions;
mod storm;
mod trail;
mod users;
