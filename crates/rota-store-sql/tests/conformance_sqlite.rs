//! The storage conformance suite against SQLite: a new database file per case under the system temp dir.

rota_store::conformance_tests!(rota_store_sql::testing::fresh_sqlite().await);
