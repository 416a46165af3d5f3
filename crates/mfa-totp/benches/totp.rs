//! TOTP code generation and ±1-step verification, mfa-totp against totp-rs
//! in one group, so that the ratio comes from one run on one machine.
//!
//! `cargo bench -p mfa-totp`. Both libraries get the same 160-bit secret,
//! SHA-1, 6 digits, 30 s steps and a window of one step either side.
//!
//! The two verifiers differ by design: mfa-totp computes every step of the
//! window and compares in constant time (always 3 HMACs), and refuses a
//! replay of the last used step; totp-rs stops at the first match (2 HMACs
//! for a code of the current step, 3 for a wrong one). Hence both a valid
//! and a wrong code are measured.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use mfa_totp::{Secret, TotpParams, totp, verify_totp};

/// 1_750_000_000 s after the epoch: an arbitrary fixed time, so runs compare.
const NOW: u64 = 1_750_000_000;

fn secret_bytes() -> Vec<u8> {
    // The RFC 4226 test secret: 20 bytes.
    b"12345678901234567890".to_vec()
}

fn baseline() -> totp_rs::Totp {
    totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(6)
        .with_skew(1)
        .with_step_duration(30)
        .with_secret(secret_bytes())
        .build()
        .unwrap_or_else(|e| panic!("totp-rs refused the parameters: {e:?}"))
}

fn generate(c: &mut Criterion) {
    let secret = Secret::from_bytes(secret_bytes());
    let params = TotpParams::default();
    let other = baseline();
    // Both must agree before their speed is worth comparing.
    assert_eq!(totp(&secret, NOW, &params), other.generate(NOW).to_string());

    let mut group = c.benchmark_group("totp_generate");
    group.bench_function("mfa-totp", |b| {
        b.iter(|| totp(black_box(&secret), black_box(NOW), &params))
    });
    // `generate` returns totp-rs's `Token`; `to_string` gives the same
    // `String` mfa-totp returns.
    group.bench_function("totp-rs", |b| {
        b.iter(|| other.generate(black_box(NOW)).to_string())
    });
    group.bench_function("totp-rs (Token, no String)", |b| {
        b.iter(|| other.generate(black_box(NOW)))
    });
    group.finish();
}

fn verify(c: &mut Criterion) {
    let secret = Secret::from_bytes(secret_bytes());
    let params = TotpParams::default();
    let other = baseline();
    let valid = totp(&secret, NOW, &params);
    // A code of none of the three steps.
    let wrong = (0..1_000_000u32)
        .map(|n| format!("{n:06}"))
        .find(|code| other.check(code, NOW).is_none())
        .unwrap_or_else(|| panic!("every code matches"));
    assert!(verify_totp(&secret, &valid, NOW, &params, 1, None).is_ok());
    assert!(other.check(&valid, NOW).is_some());
    assert!(verify_totp(&secret, &wrong, NOW, &params, 1, None).is_err());

    let mut group = c.benchmark_group("totp_verify_window_1");
    group.bench_function("mfa-totp/valid", |b| {
        b.iter(|| {
            verify_totp(
                black_box(&secret),
                black_box(&valid),
                black_box(NOW),
                &params,
                1,
                None,
            )
        })
    });
    group.bench_function("totp-rs/valid", |b| {
        b.iter(|| other.check(black_box(&valid), black_box(NOW)))
    });
    group.bench_function("mfa-totp/wrong", |b| {
        b.iter(|| {
            verify_totp(
                black_box(&secret),
                black_box(&wrong),
                black_box(NOW),
                &params,
                1,
                None,
            )
        })
    });
    group.bench_function("totp-rs/wrong", |b| {
        b.iter(|| other.check(black_box(&wrong), black_box(NOW)))
    });
    group.finish();
}

criterion_group!(benches, generate, verify);
criterion_main!(benches);
