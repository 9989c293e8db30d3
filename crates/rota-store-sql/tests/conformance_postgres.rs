//! The storage conformance suite against PostgreSQL: a new `rota_t_*` database per case on the server of
//! `ROTA_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`). An unreachable server fails
//! every case (with or without `CI=true`); nothing is skipped.

rota_store::conformance_tests!(rota_store_sql::testing::fresh_postgres().await);
