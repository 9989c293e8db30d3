//! The storage conformance suite against MySQL / MariaDB: a new `rota_t_*` database per case on the server of
//! `ROTA_TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306/test`). An unreachable server fails every case (with
//! or without `CI=true`); nothing is skipped.

rota_store::conformance_tests!(rota_store_sql::testing::fresh_mysql().await);
