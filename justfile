# Tasks for developers. Nothing here is needed to build or test: the README's
# plain cargo commands do the same.

# Run the server on SQLite in ./data.
run:
    cargo run --release -p mfa-server

# The whole test suite (SQLite; PostgreSQL too when MFA_TEST_DATABASE_URL is set).
test:
    cargo test --workspace

# The test suite against the local PostgreSQL as well.
test-pg:
    MFA_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo test --workspace

# What CI runs.
ci:
    bash .ci/run

lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
