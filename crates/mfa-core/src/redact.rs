//! `Debug` that keeps secrets out: an embedder's `tracing::debug!(?result)`
//! or a mail adapter's `?mail` must not write a bearer token, a code, a
//! password or a hash into a log.

use std::fmt;

/// What a secret field prints instead of its value.
pub(crate) struct Redacted {
    present: bool,
}

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.present { "\"***\"" } else { "None" })
    }
}

/// A field that prints as [`Redacted`].
pub(crate) trait Redact {
    fn redacted(&self) -> Redacted;
}

impl Redact for String {
    fn redacted(&self) -> Redacted {
        Redacted { present: true }
    }
}

impl Redact for Vec<String> {
    fn redacted(&self) -> Redacted {
        Redacted {
            present: !self.is_empty(),
        }
    }
}

impl Redact for Option<String> {
    fn redacted(&self) -> Redacted {
        Redacted {
            present: self.is_some(),
        }
    }
}

/// `Debug` for a struct, with its `secret` fields printed as `"***"`.
/// Every field must be named in one list or the other (the destructuring
/// does not compile otherwise), so a new field is never left out unseen.
macro_rules! debug_without_secrets {
    ($ty:ident { $($field:ident),* $(,)? } secret { $($secret:ident),+ $(,)? }) => {
        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                use $crate::redact::Redact as _;
                let $ty { $($field,)* $($secret,)+ } = self;
                f.debug_struct(stringify!($ty))
                    $(.field(stringify!($field), $field))*
                    $(.field(stringify!($secret), &$secret.redacted()))+
                    .finish()
            }
        }
    };
}

pub(crate) use debug_without_secrets;

#[cfg(test)]
mod tests {
    use crate::service::{LoginResult, NewUserRequest, PendingAuthenticator, UserPatch};
    use crate::{
        LoginDecision, Mail, MailKind, MfaRequirement, NewUser, OrgId, Timestamp, User, UserId,
    };

    const SECRET: &str = "s3cr3t-value";

    fn shows_no_secret(value: &impl std::fmt::Debug) -> String {
        let shown = format!("{value:?}");
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(shown.contains("***"), "{shown}");
        shown
    }

    #[test]
    fn secrets_never_print() {
        let user = User {
            id: UserId(1),
            email: "ada@example.com".into(),
            first_name: "Ada".into(),
            last_name: "L".into(),
            password_hash: SECRET.into(),
            is_super_admin: false,
            mfa_opt_in: false,
            last_login_at: None,
            created_at: Timestamp(0),
        };
        assert!(shows_no_secret(&user).contains("ada@example.com"));
        shows_no_secret(&NewUser {
            email: "ada@example.com".into(),
            first_name: "Ada".into(),
            last_name: "L".into(),
            password_hash: SECRET.into(),
            is_super_admin: false,
            created_at: Timestamp(0),
        });
        let login = LoginResult {
            token: SECRET.into(),
            expires_at: Timestamp(0),
            user_id: UserId(1),
            org_id: OrgId(1),
            decision: LoginDecision {
                requirement: MfaRequirement::None,
                methods: Vec::new(),
                setup_due_at: None,
            },
        };
        assert!(shows_no_secret(&login).contains("org_id"));
        shows_no_secret(&crate::service::NewToken {
            token: SECRET.into(),
            expires_at: Timestamp(0),
        });
        shows_no_secret(&NewUserRequest {
            email: "ada@example.com".into(),
            first_name: "Ada".into(),
            last_name: "L".into(),
            password: SECRET.into(),
            is_admin: false,
        });
        let patch = UserPatch {
            password: Some(SECRET.into()),
            current_password: Some(SECRET.into()),
            ..UserPatch::default()
        };
        shows_no_secret(&patch);
        assert!(format!("{:?}", UserPatch::default()).contains("password: None"));
        // The in-memory store's code hash is unkeyed: hash and salt find
        // the code in a million tries.
        let code = crate::EmailCode {
            id: 1,
            user_id: UserId(1),
            purpose: crate::EmailCodePurpose::Login,
            code_hash: SECRET.into(),
            salt: SECRET.into(),
            sent_at: Timestamp(0),
            expires_at: Timestamp(0),
            consumed_at: None,
        };
        assert!(shows_no_secret(&code).contains("purpose"));
        shows_no_secret(&crate::NewEmailCode {
            user_id: UserId(1),
            purpose: crate::EmailCodePurpose::Enroll,
            code_hash: SECRET.into(),
            salt: SECRET.into(),
            sent_at: Timestamp(0),
            expires_at: Timestamp(0),
        });
        shows_no_secret(&crate::EmailChange {
            id: 1,
            user_id: UserId(1),
            new_email: "new@example.com".into(),
            token_hash: SECRET.into(),
            created_at: Timestamp(0),
            expires_at: Timestamp(0),
            consumed_at: None,
        });
        let uri = format!("otpauth://totp/Acme:ada?secret={SECRET}&issuer=Acme");
        shows_no_secret(&PendingAuthenticator {
            secret: mfa_totp::Secret::generate(),
            otpauth_uri: uri,
            expires_at: Timestamp(0),
        });
        for kind in [
            MailKind::EnrollmentCode {
                code: SECRET.into(),
                valid_for_secs: 600,
            },
            MailKind::LoginCode {
                code: SECRET.into(),
                valid_for_secs: 600,
            },
            MailKind::EmailChangeConfirm {
                token: SECRET.into(),
                valid_for_secs: 86_400,
            },
        ] {
            let shown = shows_no_secret(&Mail {
                to: "ada@example.com".into(),
                kind,
            });
            assert!(shown.contains("valid_for_secs"), "{shown}");
        }
        let notice = format!("{:?}", MailKind::ReplayRefused);
        assert_eq!(notice, "ReplayRefused");
    }
}
