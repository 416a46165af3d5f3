#![doc = include_str!("../README.md")]

pub mod authz;
pub mod crypto;
pub mod error;
pub mod memory;
pub mod model;
pub mod policy;
pub mod ports;
mod redact;
pub mod service;
pub mod text;

pub use authz::{Caller, FullCaller};
pub use error::{MailError, MfaError, MfaResult, StoreError};
pub use memory::InMemoryStore;
pub use model::*;
pub use policy::{
    CLOCK_SKEW_TOLERANCE_SECS, FactorSummary, LockoutPolicy, LoginDecision, MfaRequirement,
};
pub use ports::{Clock, Mail, MailKind, Mailer, Randomness, SignInChange, Store, StoreTx};
pub use service::{Environment, MfaService, OperatorConsole, ServiceConfig};
pub use text::{composed, mask_email, mask_email_apart, normalize_email};

/// The TOTP crate whose types the service's API takes and returns
/// (`Secret`, `TotpParams`): an embedder needs no dependency of its own
/// on it.
pub use mfa_totp;
