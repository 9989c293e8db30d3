//! rota-spec
