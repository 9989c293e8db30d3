//! Error types.

use std::fmt;

/// One problem with one field. Displayed as `path: message`, e.g.
/// `spec.retry.maxAttempts: must be >= 1`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldError {
    /// Field path using the document's (camelCase) names, e.g. `spec.after[1].task`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl FieldError {
    /// A new field error.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { path: path.into(), message: message.into() }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for FieldError {}

/// Every problem found while validating a document (never empty when returned as an error).
/// Displayed as the field errors joined with `; `.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationErrors {
    errors: Vec<FieldError>,
}

impl ValidationErrors {
    /// No errors yet.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds an error.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError::new(path, message));
    }
    /// Appends all errors from `other`.
    pub fn extend(&mut self, other: ValidationErrors) {
        self.errors.extend(other.errors);
    }
    /// The errors, in the order found.
    pub fn errors(&self) -> &[FieldError] {
        &self.errors
    }
    /// Iterates over the errors.
    pub fn iter(&self) -> std::slice::Iter<'_, FieldError> {
        self.errors.iter()
    }
    /// Number of errors.
    pub fn len(&self) -> usize {
        self.errors.len()
    }
    /// `true` when there are no errors.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }
    /// `true` when some error is about exactly this path.
    pub fn has_path(&self, path: &str) -> bool {
        self.errors.iter().any(|e| e.path == path)
    }
    /// The errors as a vector.
    pub fn into_vec(self) -> Vec<FieldError> {
        self.errors
    }
    /// `Ok(())` when empty, else `Err(self)`.
    pub fn into_result(self) -> Result<(), ValidationErrors> {
        if self.errors.is_empty() { Ok(()) } else { Err(self) }
    }
    /// Prefixes every path (used for multi-document input).
    pub(crate) fn prefixed(mut self, prefix: &str) -> Self {
        for e in &mut self.errors {
            e.path = format!("{prefix}{}", e.path);
        }
        self
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

impl IntoIterator for ValidationErrors {
    type Item = FieldError;
    type IntoIter = std::vec::IntoIter<FieldError>;
    fn into_iter(self) -> Self::IntoIter {
        self.errors.into_iter()
    }
}

impl<'a> IntoIterator for &'a ValidationErrors {
    type Item = &'a FieldError;
    type IntoIter = std::slice::Iter<'a, FieldError>;
    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

impl From<FieldError> for ValidationErrors {
    fn from(e: FieldError) -> Self {
        ValidationErrors { errors: vec![e] }
    }
}

/// Why a document could not be turned into a valid [`Task`](crate::Task).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// Malformed YAML/JSON, a wrong type, an unknown field or a bad scalar value.
    /// `path` is the field path (e.g. `spec.retry.maxAttempts`), `(root)` for the
    /// document itself; in multi-document YAML it starts with `documents[i].`.
    #[error("{path}: {message}")]
    Parse {
        /// Field path.
        path: String,
        /// Parser message (includes line/column where available).
        message: String,
    },
    /// The document parsed but breaks validation rules.
    #[error("{0}")]
    Invalid(ValidationErrors),
}

impl SpecError {
    /// All problems as field errors (a parse error becomes a single field error).
    pub fn field_errors(&self) -> Vec<FieldError> {
        match self {
            SpecError::Parse { path, message } => vec![FieldError::new(path, message)],
            SpecError::Invalid(v) => v.errors().to_vec(),
        }
    }

    pub(crate) fn prefixed(self, prefix: &str) -> Self {
        match self {
            SpecError::Parse { path, message } => SpecError::Parse {
                path: if path == ROOT_PATH {
                    prefix.trim_end_matches('.').to_string()
                } else {
                    format!("{prefix}{path}")
                },
                message,
            },
            SpecError::Invalid(v) => SpecError::Invalid(v.prefixed(prefix)),
        }
    }
}

impl From<ValidationErrors> for SpecError {
    fn from(v: ValidationErrors) -> Self {
        SpecError::Invalid(v)
    }
}

/// Path used for errors about the document as a whole.
pub const ROOT_PATH: &str = "(root)";
