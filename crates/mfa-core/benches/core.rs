//! The login decision, and argon2id password verification with the
//! production parameters: the cost that bounds password logins.
//!
//! `cargo bench -p mfa-core`. One argon2id verify (m = 7 MiB, t = 5, p = 1
//! by default) is single-threaded, so `cores / verify time` is the most
//! password logins per second a machine can do, whatever the server around
//! it.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use mfa_core::crypto::{PasswordHasher, PasswordParams};
use mfa_core::policy::decide_login;
use mfa_core::ports::OsRandomness;
use mfa_core::{FactorSummary, Membership, Org, OrgId, Timestamp, User, UserId};

const NOW: Timestamp = Timestamp(1_750_000_000);

fn org(enforced: bool, grace_hours: u32) -> Org {
    Org {
        id: OrgId(1),
        name: "Acme".into(),
        is_mfa_enforced: enforced,
        mfa_enforced_at: enforced.then_some(Timestamp(NOW.0 - 3600)),
        mfa_grace_period_hours: grace_hours,
        created_at: Timestamp(1_700_000_000),
    }
}

fn user() -> User {
    User {
        id: UserId(7),
        email: "ann@example.com".into(),
        first_name: "Ann".into(),
        last_name: "Example".into(),
        password_hash: String::new(),
        is_super_admin: false,
        mfa_opt_in: false,
        last_login_at: None,
        created_at: Timestamp(1_700_000_000),
    }
}

fn login_decision(c: &mut Criterion) {
    let user = user();
    let member = Membership::new(UserId(7), OrgId(1));
    let opted_out = Membership {
        mfa_opt_out: true,
        ..member.clone()
    };
    let enrolled = FactorSummary {
        authenticator: true,
        email: false,
        recovery_codes_left: 10,
    };
    let none = FactorSummary::default();
    let cases = [
        ("challenge_required", org(true, 0), &member, enrolled),
        ("setup_required", org(true, 0), &member, none),
        ("grace_period", org(true, 24), &member, none),
        ("opted_out", org(true, 0), &opted_out, enrolled),
        ("not_enforced", org(false, 0), &member, enrolled),
    ];
    let mut group = c.benchmark_group("login_decision");
    for (name, org, membership, factors) in &cases {
        group.bench_function(*name, |b| {
            b.iter(|| {
                decide_login(
                    black_box(org),
                    black_box(membership),
                    black_box(&user),
                    black_box(factors),
                    black_box(NOW),
                )
            })
        });
    }
    group.finish();
}

fn argon2id(c: &mut Criterion) {
    // The production default, and OWASP's m = 19 MiB, t = 2 beside it: the
    // two cost about the same time; the default holds less memory.
    let owasp_19_mib = PasswordParams {
        memory_kib: 19 * 1024,
        iterations: 2,
        parallelism: 1,
    };
    for params in [PasswordParams::default(), owasp_19_mib] {
        let rng = OsRandomness;
        let hasher = PasswordHasher::new(params, &rng).unwrap_or_else(|e| panic!("{e}"));
        let phc = hasher
            .hash("correct horse battery staple", &rng)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            phc.starts_with(&format!("$argon2id$v=19${params}$")),
            "{phc}"
        );

        let name = format!(
            "argon2id_m{}_t{}_p{}",
            params.memory_kib, params.iterations, params.parallelism
        );
        let mut group = c.benchmark_group(name);
        // ~15 ms an iteration: fewer samples, each of several iterations.
        group.sample_size(20);
        group.measurement_time(Duration::from_secs(6));
        group.bench_function("verify_correct", |b| {
            b.iter(|| hasher.verify(black_box("correct horse battery staple"), &phc))
        });
        if params == PasswordParams::default() {
            group.bench_function("verify_wrong", |b| {
                b.iter(|| hasher.verify(black_box("wrong horse battery staple"), &phc))
            });
            group.bench_function("verify_decoy_unknown_user", |b| {
                b.iter(|| hasher.verify_decoy(black_box("whatever password")))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, login_decision, argon2id);
criterion_main!(benches);
