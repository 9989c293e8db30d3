//! Task documents as the client sends them: raw YAML or JSON text, a JSON value, or a typed [`rota_spec::Task`].

use serde_json::Value;

use crate::ClientError;

/// A task document to [apply](crate::Client::apply).
///
/// Text is sent as it is (YAML as `application/yaml`, JSON — text starting with `{` — as `application/json`), so
/// the server's error messages point into the text the user wrote. The client only reads `metadata.namespace`
/// (default `default`) and `metadata.name` from it, to address the task; all validation happens on the server.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskDocument {
    /// One YAML or JSON document.
    Text(String),
    /// A JSON value.
    Json(Value),
}

impl From<&str> for TaskDocument {
    fn from(s: &str) -> Self {
        TaskDocument::Text(s.to_string())
    }
}

impl From<String> for TaskDocument {
    fn from(s: String) -> Self {
        TaskDocument::Text(s)
    }
}

impl From<&String> for TaskDocument {
    fn from(s: &String) -> Self {
        TaskDocument::Text(s.clone())
    }
}

impl From<Value> for TaskDocument {
    fn from(v: Value) -> Self {
        TaskDocument::Json(v)
    }
}

impl From<&rota_spec::Task> for TaskDocument {
    fn from(t: &rota_spec::Task) -> Self {
        TaskDocument::Json(serde_json::to_value(t).expect("a task serializes to JSON"))
    }
}

impl From<rota_spec::Task> for TaskDocument {
    fn from(t: rota_spec::Task) -> Self {
        (&t).into()
    }
}

/// What the client needs to send a document: its address and its body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Prepared {
    pub namespace: String,
    pub name: String,
    pub content_type: &'static str,
    pub body: String,
}

impl TaskDocument {
    /// `(namespace, name)` from `metadata` (namespace `default` when absent).
    pub fn key(&self) -> Result<(String, String), ClientError> {
        let p = self.prepare()?;
        Ok((p.namespace, p.name))
    }

    /// The document as a JSON value (YAML text parsed).
    pub(crate) fn to_value(&self) -> Result<Value, ClientError> {
        match self {
            TaskDocument::Json(v) => Ok(v.clone()),
            TaskDocument::Text(text) if text.trim_start().starts_with('{') => {
                serde_json::from_str(text).map_err(|e| ClientError::document("(root)", e.to_string()))
            }
            TaskDocument::Text(text) => {
                serde_yaml::from_str(text).map_err(|e| ClientError::document("(root)", e.to_string()))
            }
        }
    }

    pub(crate) fn prepare(&self) -> Result<Prepared, ClientError> {
        match self {
            TaskDocument::Json(v) => {
                let (namespace, name) = metadata_key(v)?;
                Ok(Prepared { namespace, name, content_type: "application/json", body: v.to_string() })
            }
            TaskDocument::Text(text) => {
                let is_json = text.trim_start().starts_with('{');
                let value: Value = if is_json {
                    serde_json::from_str(text).map_err(|e| ClientError::document("(root)", e.to_string()))?
                } else {
                    serde_yaml::from_str(text).map_err(|e| ClientError::document("(root)", e.to_string()))?
                };
                let (namespace, name) = metadata_key(&value)?;
                let content_type = if is_json { "application/json" } else { "application/yaml" };
                Ok(Prepared { namespace, name, content_type, body: text.clone() })
            }
        }
    }
}

fn metadata_key(doc: &Value) -> Result<(String, String), ClientError> {
    if !doc.is_object() {
        return Err(ClientError::document("(root)", "a task document must be a mapping"));
    }
    let metadata = doc.get("metadata").filter(|m| !m.is_null());
    let Some(metadata) = metadata else {
        return Err(ClientError::document("metadata", "missing field `metadata`"));
    };
    let name = match metadata.get("name") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) => return Err(ClientError::document("metadata.name", "must not be empty")),
        None | Some(Value::Null) => return Err(ClientError::document("metadata.name", "missing field `name`")),
        Some(other) => return Err(ClientError::document("metadata.name", format!("expected a string, got {other}"))),
    };
    let namespace = match metadata.get("namespace") {
        None | Some(Value::Null) => "default".to_string(),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) => return Err(ClientError::document("metadata.namespace", "must not be empty")),
        Some(other) => {
            return Err(ClientError::document("metadata.namespace", format!("expected a string, got {other}")));
        }
    };
    Ok((namespace, name))
}

/// One document of a YAML stream, with its 0-based index among all documents of the stream (empty ones
/// included, as `rota_spec::parse_yaml_documents` counts them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamDocument {
    pub index: usize,
    pub text: String,
}

/// Splits a YAML stream at its `---` document markers (and `...` end markers). Each document keeps its text as
/// written, preceded by as many empty lines as precede it in the stream, so that line numbers in parser messages
/// (the server's too) are the stream's. Documents that are empty or only comments are dropped (their indexes
/// still count). A JSON text (starting with `{`) is one document.
pub fn split_documents(text: &str) -> Vec<StreamDocument> {
    if text.trim_start().starts_with('{') {
        return vec![StreamDocument { index: 0, text: text.to_string() }];
    }
    // (explicitly started with `---`, text)
    let mut chunks: Vec<(bool, String)> = vec![(false, String::new())];
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches(['\n', '\r']);
        let is_start = bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t");
        let is_end = bare == "..." || bare.starts_with("... ");
        if is_start || is_end {
            let mut chunk = "\n".repeat(n);
            if is_start {
                let rest = bare[3..].trim_start();
                if !rest.is_empty() {
                    chunk.push_str(rest);
                    chunk.push('\n');
                } else {
                    chunk.push('\n');
                }
            } else {
                chunk.push('\n');
            }
            chunks.push((is_start, chunk));
        } else {
            chunks.last_mut().expect("never empty").1.push_str(line);
        }
    }
    let blank = |s: &str| s.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
    let mut out = Vec::new();
    let mut index = 0;
    for (explicit, chunk) in chunks {
        // Text before the first `---` (or after a `...`) is a document only when it has content.
        if !explicit && blank(&chunk) {
            continue;
        }
        if !blank(&chunk) {
            out.push(StreamDocument { index, text: chunk });
        }
        index += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_streams_like_serde_yaml_counts_them() {
        let docs = split_documents("# c\n---\na: 1\n---\n---\nb: 2\n...\n");
        assert_eq!(
            docs,
            vec![
                StreamDocument { index: 0, text: "\n\na: 1\n".into() },
                StreamDocument { index: 2, text: "\n\n\n\n\nb: 2\n".into() }
            ]
        );
        let docs = split_documents("a: 1\n--- {b: 2}\n");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].text, "\n{b: 2}\n");
        // Parser messages name the stream's line numbers.
        let docs = split_documents("a: 1\n---\nb: [\n");
        let err = serde_yaml::from_str::<serde_yaml::Value>(&docs[1].text).unwrap_err();
        assert_eq!(err.location().map(|l| l.line()), Some(4), "{err}");
        assert_eq!(split_documents("{\"a\": 1}").len(), 1);
        assert!(split_documents("# only a comment\n").is_empty());
        // Cross-check the indexes with serde_yaml on a stream with an empty document.
        let text = "a: 1\n---\n---\nb: 2\n";
        let parsed: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(text)
            .map(|d| <serde_yaml::Value as serde::Deserialize>::deserialize(d).unwrap())
            .collect();
        assert_eq!(parsed.len(), 3);
        assert_eq!(split_documents(text).iter().map(|d| d.index).collect::<Vec<_>>(), vec![0, 2]);
    }

    #[test]
    fn keys_come_from_metadata() {
        let doc = TaskDocument::from("metadata: {name: x}\nspec: {}\n");
        assert_eq!(doc.key().unwrap(), ("default".into(), "x".into()));
        let doc = TaskDocument::from(r#"{"metadata": {"namespace": "n", "name": "x"}}"#);
        let p = doc.prepare().unwrap();
        assert_eq!((p.namespace.as_str(), p.name.as_str(), p.content_type), ("n", "x", "application/json"));
        let err = TaskDocument::from("kind: Task\n").key().unwrap_err();
        assert_eq!(err.details()[0].path, "metadata");
        let err = TaskDocument::from("metadata: {namespace: n}\n").key().unwrap_err();
        assert_eq!(err.details()[0].path, "metadata.name");
    }
}
