//! Snapshot of the OpenAPI document: the generated document must equal the committed
//! `crates/rota-api/openapi.json`. After an intended API change, run
//! `ROTA_BLESS=1 cargo nextest run -p rota-api --test openapi` (or `cargo test`) and commit the file.

use std::path::Path;

#[test]
fn openapi_document_matches_the_committed_snapshot() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    let generated = rota_api::openapi::document_pretty();
    let bless_hint = "if the change is intended, run `ROTA_BLESS=1 cargo nextest run -p rota-api --test openapi` \
                      and commit crates/rota-api/openapi.json";
    if std::env::var("ROTA_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &generated).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        return;
    }
    let committed =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {} ({e}); {bless_hint}", path.display()));
    if committed != generated {
        let (line, (old, new)) = committed
            .lines()
            .chain(std::iter::repeat(""))
            .zip(generated.lines().chain(std::iter::repeat("")))
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .expect("documents differ somewhere");
        panic!(
            "the OpenAPI document drifted from {}: first difference at line {}:\n  committed: {old}\n  generated: {new}\n{bless_hint}",
            path.display(),
            line + 1
        );
    }
}
