//! Extractors whose rejections are [`ApiError`]s (so every failure has the one JSON shape and names the input).

use std::collections::BTreeMap;
use std::str::FromStr;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ErrorCode};

/// `{namespace}/{name}` of a task route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskPath {
    pub namespace: String,
    pub name: String,
}

impl TaskPath {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for TaskPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path((namespace, name)) = Path::<(String, String)>::from_request_parts(parts, state).await?;
        Ok(TaskPath { namespace, name })
    }
}

/// `{id}` of a run route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunId(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for RunId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state).await?;
        match raw.parse::<i64>() {
            Ok(id) if id > 0 => Ok(RunId(id)),
            _ => Err(ApiError::invalid_argument("id", format!("run ids are positive integers; got {raw:?}"))),
        }
    }
}

/// The request body as bytes, within the configured limit (`413 payload_too_large` beyond it).
#[derive(Debug, Clone)]
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Ok(RawBody(Bytes::from_request(req, state).await?))
    }
}

/// The media type of a request (lower-cased, without parameters); `None` when there is no `Content-Type`.
pub fn media_type(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(CONTENT_TYPE) else { return Ok(None) };
    let s = value.to_str().map_err(|_| ApiError::invalid_argument("Content-Type", "the header is not valid ASCII"))?;
    let essence = s.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    Ok(if essence.is_empty() { None } else { Some(essence) })
}

fn is_json(media: &str) -> bool {
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

/// Deserializes JSON with the failing field's path in the error.
pub fn parse_json_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    fn invalid(path: String, message: String) -> ApiError {
        let path = if path.is_empty() || path == "." { "(body)".to_string() } else { path };
        ApiError::new(ErrorCode::InvalidArgument, format!("the request body is invalid: {path}: {message}"))
            .with_detail(path, message)
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T =
        serde_path_to_error::deserialize(&mut de).map_err(|e| invalid(e.path().to_string(), e.inner().to_string()))?;
    de.end().map_err(|e| invalid(String::new(), e.to_string()))?;
    Ok(value)
}

fn check_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    match media_type(headers)? {
        None => Ok(()),
        Some(m) if is_json(&m) => Ok(()),
        Some(m) => Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!("this operation takes application/json, not {m}"),
        )
        .with_detail("Content-Type", "expected application/json")),
    }
}

/// A JSON request body (`Content-Type: application/json` or none). Errors name the field.
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        check_json_content_type(req.headers())?;
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        Ok(JsonBody(parse_json_body(&bytes)?))
    }
}

/// An optional JSON request body: an empty body (or `null`) is `None`.
#[derive(Debug, Clone)]
pub struct OptionalJsonBody<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = req.headers().clone();
        let RawBody(bytes) = RawBody::from_request(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(None));
        }
        check_json_content_type(&headers)?;
        Ok(OptionalJsonBody(parse_json_body::<Option<T>>(&bytes)?))
    }
}

/// The query string as (name, value) pairs, consumed parameter by parameter; [`QueryParams::finish`] rejects
/// parameters nobody asked for (so a misspelt filter is an error, not a silently ignored one).
#[derive(Debug, Clone, Default)]
pub struct QueryParams {
    pairs: Vec<(String, String)>,
}

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(QueryParams::parse(parts.uri.query().unwrap_or("")))
    }
}

impl QueryParams {
    pub fn parse(query: &str) -> Self {
        QueryParams { pairs: url::form_urlencoded::parse(query.as_bytes()).into_owned().collect() }
    }

    /// Every value of a repeatable parameter, in order.
    pub fn take_all(&mut self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.pairs.retain(|(k, v)| {
            if k == name {
                out.push(v.clone());
                false
            } else {
                true
            }
        });
        out
    }

    /// The value of a single-valued parameter; an error when given more than once. Empty values count as absent.
    pub fn take(&mut self, name: &str) -> Result<Option<String>, ApiError> {
        let mut all = self.take_all(name);
        match all.len() {
            0 => Ok(None),
            1 => {
                let v = all.pop().expect("one");
                Ok(if v.is_empty() { None } else { Some(v) })
            }
            _ => Err(ApiError::invalid_argument(name, "given more than once")),
        }
    }

    /// A single-valued parameter parsed with `FromStr`; `what` describes the expected form.
    pub fn take_parsed<T: FromStr>(&mut self, name: &str, what: &str) -> Result<Option<T>, ApiError> {
        match self.take(name)? {
            None => Ok(None),
            Some(v) => v
                .parse::<T>()
                .map(Some)
                .map_err(|_| ApiError::invalid_argument(name, format!("expected {what}, got {v:?}"))),
        }
    }

    /// Rejects any parameter not consumed.
    pub fn finish(self) -> Result<(), ApiError> {
        let mut unknown: Vec<&str> = self.pairs.iter().map(|(k, _)| k.as_str()).collect();
        unknown.dedup();
        if unknown.is_empty() {
            return Ok(());
        }
        let mut err =
            ApiError::new(ErrorCode::InvalidArgument, format!("unknown query parameter(s): {}", unknown.join(", ")));
        for k in unknown {
            err = err.with_detail(k, "unknown query parameter");
        }
        Err(err)
    }
}

/// Parses `k=v` label selectors from repeated `label=k=v` and comma-separated `labels=k=v,k2=v2` parameters.
pub fn parse_label_selectors(singles: Vec<String>, lists: Vec<String>) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    let items = singles.into_iter().map(|s| ("label", s)).chain(
        lists.iter().flat_map(|l| l.split(',')).filter(|s| !s.trim().is_empty()).map(|s| ("labels", s.to_string())),
    );
    for (param, item) in items {
        let Some((k, v)) = item.split_once('=') else {
            return Err(ApiError::invalid_argument(param, format!("expected key=value, got {item:?}")));
        };
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() {
            return Err(ApiError::invalid_argument(param, format!("empty label key in {item:?}")));
        }
        if let Some(prev) = out.insert(k.to_string(), v.to_string())
            && prev != v
        {
            return Err(ApiError::invalid_argument(param, format!("label {k:?} selected with two values")));
        }
    }
    Ok(out)
}

/// Formats an entity tag for a task version.
pub fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("digits are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_consumed_and_unknown_ones_rejected() {
        let mut q = QueryParams::parse("namespace=a&label=x%3D1&label=y=2&limit=5&bogus=1");
        assert_eq!(q.take("namespace").unwrap().as_deref(), Some("a"));
        assert_eq!(q.take_all("label"), ["x=1", "y=2"]);
        assert_eq!(q.take_parsed::<u32>("limit", "an integer").unwrap(), Some(5));
        let err = q.finish().unwrap_err();
        assert_eq!(err.details[0].path, "bogus");
    }

    #[test]
    fn duplicate_single_parameter_is_an_error() {
        let mut q = QueryParams::parse("limit=1&limit=2");
        assert_eq!(q.take("limit").unwrap_err().details[0].path, "limit");
    }

    #[test]
    fn label_selectors() {
        let m = parse_label_selectors(vec!["team=finance".into()], vec!["env=prod,tier=1".into()]).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m["tier"], "1");
        assert!(parse_label_selectors(vec!["nokey".into()], vec![]).is_err());
        assert!(parse_label_selectors(vec!["a=1".into(), "a=2".into()], vec![]).is_err());
    }

    #[test]
    fn json_errors_name_the_field() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct B {
            inner: Inner,
        }
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Inner {
            n: u32,
        }
        let err = parse_json_body::<B>(br#"{"inner": {"n": "x"}}"#).unwrap_err();
        assert_eq!(err.details[0].path, "inner.n");
        let err = parse_json_body::<B>(b"{not json").unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        let err = parse_json_body::<B>(br#"{"inner": {"n": 1}} trailing"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
    }
}
