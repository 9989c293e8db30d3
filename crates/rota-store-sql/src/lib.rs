//! rota-store-sql
