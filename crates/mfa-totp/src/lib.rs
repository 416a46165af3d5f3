#![doc = include_str!("../README.md")]

mod error;
mod otp;
mod qr;
mod secret;
mod uri;

pub use error::{TotpError, VerifyError};
pub use otp::{
    Algorithm, DEFAULT_WINDOW, MAX_LOOK_AHEAD, MAX_PERIOD_SECS, MAX_WINDOW, TotpParams, hotp,
    is_well_formed_code, time_step, totp, totp_at_step, verify_hotp, verify_totp,
};
pub use qr::{MIN_MODULE_PX, qr_png, qr_svg, qr_terminal};
pub use secret::Secret;
pub use uri::{MAX_ACCOUNT_BYTES, MAX_ISSUER_BYTES, OtpauthUri, issuer_for_environment};
