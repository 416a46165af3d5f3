// @generated automatically by Diesel CLI.

diesel::table! {
    audit_events (id) {
        id -> Int8,
        at -> Int8,
        org_id -> Nullable<Int8>,
        actor_user_id -> Nullable<Int8>,
        target_user_id -> Nullable<Int8>,
        action -> Text,
        detail -> Text,
        client_address -> Nullable<Text>,
    }
}

diesel::table! {
    authenticators (user_id) {
        user_id -> Int8,
        secret_ciphertext -> Bytea,
        algorithm -> Text,
        digits -> Int4,
        period -> Int8,
        verified -> Bool,
        expires_at -> Int8,
        verified_at -> Nullable<Int8>,
        last_used_step -> Nullable<Int8>,
        created_at -> Int8,
    }
}

diesel::table! {
    email_changes (id) {
        id -> Int8,
        user_id -> Int8,
        new_email -> Text,
        token_hash -> Text,
        created_at -> Int8,
        expires_at -> Int8,
        consumed_at -> Nullable<Int8>,
    }
}

diesel::table! {
    email_codes (id) {
        id -> Int8,
        user_id -> Int8,
        purpose -> Text,
        code_hash -> Text,
        salt -> Text,
        sent_at -> Int8,
        expires_at -> Int8,
        consumed_at -> Nullable<Int8>,
    }
}

diesel::table! {
    email_factors (user_id) {
        user_id -> Int8,
        verified_at -> Int8,
    }
}

diesel::table! {
    encryption_key_fingerprint (id) {
        id -> Int4,
        fingerprint -> Text,
    }
}

diesel::table! {
    failure_counters (user_id, kind) {
        user_id -> Int8,
        kind -> Text,
        failures -> Int4,
        locked_until -> Nullable<Int8>,
        last_failure_at -> Nullable<Int8>,
    }
}

diesel::table! {
    memberships (user_id, org_id) {
        user_id -> Int8,
        org_id -> Int8,
        is_active -> Bool,
        is_admin -> Bool,
        all_access -> Bool,
        mfa_opt_out -> Bool,
        exclude_from_membership_count -> Bool,
        has_advanced_permissions -> Bool,
        search_text -> Text,
    }
}

diesel::table! {
    notices (id) {
        id -> Int8,
        recipient -> Text,
        payload -> Text,
        queued_at -> Int8,
        due_at -> Int8,
        attempts -> Int4,
    }
}

diesel::table! {
    orgs (id) {
        id -> Int8,
        name -> Text,
        is_mfa_enforced -> Bool,
        mfa_enforced_at -> Nullable<Int8>,
        mfa_grace_period_hours -> Int4,
        created_at -> Int8,
    }
}

diesel::table! {
    password_failures (email_key) {
        email_key -> Text,
        failures -> Int4,
        locked_until -> Nullable<Int8>,
        last_failure_at -> Int8,
    }
}

diesel::table! {
    recovery_codes (id) {
        id -> Int8,
        user_id -> Int8,
        code_hash -> Text,
        created_at -> Int8,
        used_at -> Nullable<Int8>,
    }
}

diesel::table! {
    sessions (id) {
        id -> Int8,
        token_hash -> Text,
        user_id -> Int8,
        org_id -> Int8,
        level -> Text,
        created_at -> Int8,
        expires_at -> Int8,
        last_seen_at -> Int8,
        revoked_at -> Nullable<Int8>,
        mfa_passed -> Bool,
    }
}

diesel::table! {
    users (id) {
        id -> Int8,
        email -> Text,
        first_name -> Text,
        last_name -> Text,
        password_hash -> Text,
        is_super_admin -> Bool,
        mfa_opt_in -> Bool,
        last_login_at -> Nullable<Int8>,
        created_at -> Int8,
        search_text -> Text,
    }
}

diesel::joinable!(authenticators -> users (user_id));
diesel::joinable!(email_changes -> users (user_id));
diesel::joinable!(email_codes -> users (user_id));
diesel::joinable!(email_factors -> users (user_id));
diesel::joinable!(failure_counters -> users (user_id));
diesel::joinable!(memberships -> orgs (org_id));
diesel::joinable!(memberships -> users (user_id));
diesel::joinable!(recovery_codes -> users (user_id));
diesel::joinable!(sessions -> orgs (org_id));
diesel::joinable!(sessions -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(
    audit_events,
    authenticators,
    email_changes,
    email_codes,
    email_factors,
    encryption_key_fingerprint,
    failure_counters,
    memberships,
    notices,
    orgs,
    password_failures,
    recovery_codes,
    sessions,
    users,
);
