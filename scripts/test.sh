#!/usr/bin/env bash
# Runs Rota's whole test suite: formatting, lints, every test (unit, conformance against SQLite, PostgreSQL and
# MySQL/MariaDB, end-to-end) and doc tests. Starts the database servers it needs if they are down, idempotently.
# With CI=true a service that cannot be started is a failure (it always is: no test is skipped for lack of one).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }
: "${ROTA_TEST_POSTGRES_URL:=postgres://postgres@127.0.0.1:5432/postgres}"
: "${ROTA_TEST_MYSQL_URL:=mysql://root@127.0.0.1:3306/test}"
export ROTA_TEST_POSTGRES_URL ROTA_TEST_MYSQL_URL

wait_for() { # wait_for NAME SECONDS CMD...
  local name=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then echo "FATAL: $name is not available after ${secs}s" >&2; return 1; fi
    sleep 1
  done
}

ensure_postgres() {
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    log "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
  wait_for PostgreSQL 60 pg_isready -q -h 127.0.0.1 -p 5432
}

ensure_mariadb() {
  if ! mysqladmin -h 127.0.0.1 -P 3306 -uroot ping >/dev/null 2>&1; then
    log "starting MariaDB"
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
  fi
  wait_for MariaDB 60 mysqladmin -h 127.0.0.1 -P 3306 -uroot ping
}

drop_stale_databases() { # test databases are named rota_t_*; each test creates its own fresh one
  psql -h 127.0.0.1 -U postgres -d postgres -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'rota\_t\_%'" |
    xargs -r -P 8 -I{} psql -q -h 127.0.0.1 -U postgres -d postgres -c 'DROP DATABASE IF EXISTS "{}" WITH (FORCE)'
  mysql -h 127.0.0.1 -uroot -N -e "SHOW DATABASES LIKE 'rota\_t\_%'" |
    xargs -r -P 8 -I{} mysql -h 127.0.0.1 -uroot -e 'DROP DATABASE IF EXISTS `{}`'
  return 0
}

log "services"
ensure_postgres
ensure_mariadb
drop_stale_databases
bash scripts/podman-setup.sh; export ROTA_TEST_CONTAINER_SOCKET=/run/rota-podman.sock # Podman API + test image for rota-executor's container tests
echo "PostgreSQL and MariaDB are up (CI=${CI:-false})"

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy (-D warnings)"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

log "tests (cargo nextest)"
if ! command -v cargo-nextest >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi
cargo nextest run --workspace --all-features --locked --no-fail-fast

log "doc tests"
cargo test --workspace --all-features --locked --doc

log "all green"
