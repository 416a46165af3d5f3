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

# Benchmarks, then the load harness at 100,000 users on SQLite and on the
# local PostgreSQL (docs/PERFORMANCE.md). About 15 minutes; figures are only
# worth something on an otherwise idle machine.
bench:
    cargo bench -p mfa-totp -p mfa-core --benches
    cargo build --release -p mfa-server -p mfa-loadgen
    cargo run --release -p mfa-loadgen -- --db sqlite --users 100000 --json target/loadgen-sqlite.json
    cargo run --release -p mfa-loadgen -- --db postgres --users 100000 --json target/loadgen-postgres.json

# PostgreSQL's own cost of an MFA verify, without the server (pgbench; needs
# psql and pgbench and the local PostgreSQL; docs/PERFORMANCE.md).
pgbench:
    crates/mfa-loadgen/pgbench/run.sh
