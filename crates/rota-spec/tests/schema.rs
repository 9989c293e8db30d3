//! The committed JSON Schema must match the types. Run with `ROTA_BLESS=1` to rewrite it.

use std::path::PathBuf;

fn schema_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schema/task-v1.json")
}

#[test]
fn committed_schema_is_up_to_date() {
    let generated = rota_spec::json_schema();
    let text = serde_json::to_string_pretty(&generated).unwrap() + "\n";
    let path = schema_path();
    if std::env::var_os("ROTA_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let committed_value: Option<serde_json::Value> = serde_json::from_str(&committed).ok();
    assert!(
        committed_value.as_ref() == Some(&generated),
        "{} is out of date with the rota-spec types.\n\
         Regenerate it with: ROTA_BLESS=1 cargo test -p rota-spec --test schema",
        path.display()
    );
}

#[test]
fn schema_has_the_expected_shape() {
    let s = rota_spec::json_schema();
    assert_eq!(s["title"], "Rota Task (rota/v1)");
    assert_eq!(s["additionalProperties"], false);
    let required: Vec<&str> = s["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    for f in ["apiVersion", "kind", "metadata", "spec"] {
        assert!(required.contains(&f), "{f} should be required");
    }
    let defs = &s["$defs"];
    assert_eq!(defs["Duration"]["type"], "string");
    assert_eq!(defs["Duration"]["pattern"], rota_spec::DURATION_PATTERN);
    assert_eq!(defs["Retry"]["additionalProperties"], false);
    assert!(defs["Candidates"]["properties"]["static"].is_object());
    assert!(defs["Schedule"]["properties"]["catchUpLimit"].is_object());
}
