#!/usr/bin/env bash
# PostgreSQL's own cost of an MFA verify, without the server: pgbench runs
# the statements mfa-store sends on the locked path (verify.sql) and on the
# fast path of a right code (verify-fast.sql), the locked path's work in one
# server-side function (verify-function.sql) and eight empty round trips
# (round-trips.sql) against a database of 100,000 members.
#
#   crates/mfa-loadgen/pgbench/run.sh [clients...]     (default: 16 64)
#
# Needs psql and pgbench (Debian: in /usr/lib/postgresql/<version>/bin) and
# a PostgreSQL that PG_URL (default postgres://postgres@127.0.0.1:5432)
# reaches as a user that may create databases. The database mfa_pgbench is
# created afresh and dropped at the end.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
migrations="$here/../../../migrations/postgres"
base=${PG_URL:-postgres://postgres@127.0.0.1:5432}
db=mfa_pgbench
seconds=${PGBENCH_SECONDS:-15}
clients=("$@")
[ ${#clients[@]} -gt 0 ] || clients=(16 64)

pgbench=$(command -v pgbench || ls /usr/lib/postgresql/*/bin/pgbench 2>/dev/null | tail -n 1 || true)
[ -n "$pgbench" ] || { echo "pgbench not found (Debian: postgresql-contrib / postgresql-<version>)" >&2; exit 1; }

psql -q "$base/postgres" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
trap 'psql -q "$base/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"' EXIT
echo "applying migrations and seeding 100,000 members ..."
for up in "$migrations"/*/up.sql; do
    psql -q -v ON_ERROR_STOP=1 "$base/$db" -f "$up" >/dev/null
done
psql -q -v ON_ERROR_STOP=1 "$base/$db" -f "$here/setup.sql" >/dev/null

for script in verify verify-fast verify-function round-trips; do
    for n in "${clients[@]}"; do
        tps=$("$pgbench" -n -M prepared -c "$n" -j 2 -T "$seconds" -f "$here/$script.sql" "$base/$db" 2>/dev/null |
            sed -n 's/^tps = \([0-9.]*\).*/\1/p')
        printf '%-16s %3d clients  %10s transactions/s\n' "$script" "$n" "$tps"
    done
done
