//! Signed dispatches: HMAC-SHA256 over method, path, timestamp and body digest, with a replay window.
//!
//! The scheduler signs every dispatch with a secret it shares with the executor service; the executor verifies
//! before it runs anything. Headers (HTTP) or metadata (gRPC):
//!
//! * `x-rota-timestamp`: Unix seconds when the request was signed;
//! * `x-rota-signature`: `v1=<hex HMAC-SHA256(secret, string_to_sign)>`;
//! * `x-rota-key-id` (optional): which secret signed it, so secrets can be rotated (the verifier accepts any of
//!   its keys; the id only picks one faster).
//!
//! The string to sign is `v1\n{METHOD}\n{path and query}\n{timestamp}\n{hex SHA-256 of the body}`. A request
//! is accepted when the signature matches (compared in constant time), its timestamp is within the window
//! (default ±300 s) of the verifier's clock, and — with a [`ReplayGuard`] — its signature has not been seen
//! within the window. For gRPC the method is `POST`, the path is `/rota.executor.v1.Executor/Run` and the body is
//! the protobuf encoding of the request message.
//!
//! Pure: no I/O; time is passed in by the caller.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// Header carrying the signing time (Unix seconds).
pub const HEADER_TIMESTAMP: &str = "x-rota-timestamp";
/// Header carrying `v1=<hex signature>`.
pub const HEADER_SIGNATURE: &str = "x-rota-signature";
/// Header naming the signing key (optional).
pub const HEADER_KEY_ID: &str = "x-rota-key-id";
/// Default tolerance between the signer's and the verifier's clocks, and how long signatures are remembered.
pub const DEFAULT_WINDOW_SECS: i64 = 300;
/// Shortest accepted secret.
pub const MIN_SECRET_BYTES: usize = 32;

/// Why a request's signature was refused. Messages never contain the secret or the signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the request is not signed (missing {0} header)")]
    Missing(&'static str),
    #[error("malformed {0} header")]
    Malformed(&'static str),
    #[error("the request was signed {skew_secs}s away from this node's clock (window ±{window_secs}s)")]
    OutsideWindow { skew_secs: i64, window_secs: i64 },
    #[error("the signature does not match")]
    Mismatch,
    #[error("the request was already received (replay)")]
    Replayed,
    #[error("a signing secret must be at least {MIN_SECRET_BYTES} bytes")]
    WeakSecret,
}

/// A shared signing secret with its id.
#[derive(Clone)]
pub struct SigningKey {
    pub id: String,
    secret: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("id", &self.id).field("secret", &"<redacted>").finish()
    }
}

impl SigningKey {
    pub fn new(id: impl Into<String>, secret: impl Into<Vec<u8>>) -> Result<Self, SignatureError> {
        let secret = secret.into();
        if secret.len() < MIN_SECRET_BYTES {
            return Err(SignatureError::WeakSecret);
        }
        Ok(SigningKey { id: id.into(), secret })
    }

    fn mac(&self, method: &str, path: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(string_to_sign(method, path, timestamp, body).as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// The headers to send: `(name, value)` pairs.
    pub fn sign(&self, method: &str, path: &str, timestamp: i64, body: &[u8]) -> Vec<(&'static str, String)> {
        vec![
            (HEADER_TIMESTAMP, timestamp.to_string()),
            (HEADER_SIGNATURE, format!("v1={}", hex(&self.mac(method, path, timestamp, body)))),
            (HEADER_KEY_ID, self.id.clone()),
        ]
    }
}

/// `v1\n{METHOD}\n{path}\n{timestamp}\n{hex sha256(body)}`.
pub fn string_to_sign(method: &str, path: &str, timestamp: i64, body: &[u8]) -> String {
    format!("v1\n{}\n{path}\n{timestamp}\n{}", method.to_ascii_uppercase(), hex(&Sha256::digest(body)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// Constant-time equality of two byte strings (time depends only on the lengths).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Verifies signed requests against a set of keys (any may have signed).
pub struct Verifier {
    keys: Vec<SigningKey>,
    window_secs: i64,
    replay: Option<ReplayGuard>,
}

impl Verifier {
    /// A verifier with the default window and a replay guard.
    pub fn new(keys: Vec<SigningKey>) -> Self {
        Verifier { keys, window_secs: DEFAULT_WINDOW_SECS, replay: Some(ReplayGuard::default()) }
    }

    pub fn with_window_secs(mut self, secs: i64) -> Self {
        self.window_secs = secs.max(1);
        self
    }

    /// Without replay detection (only for verifiers that see each request more than once on purpose).
    pub fn without_replay_guard(mut self) -> Self {
        self.replay = None;
        self
    }

    /// Checks one request. `header` looks a header up by (lowercase) name.
    pub fn verify<'h>(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        header: impl Fn(&str) -> Option<&'h str>,
        now_secs: i64,
    ) -> Result<(), SignatureError> {
        let ts = header(HEADER_TIMESTAMP).ok_or(SignatureError::Missing(HEADER_TIMESTAMP))?;
        let ts: i64 = ts.trim().parse().map_err(|_| SignatureError::Malformed(HEADER_TIMESTAMP))?;
        let sig = header(HEADER_SIGNATURE).ok_or(SignatureError::Missing(HEADER_SIGNATURE))?;
        let sig = sig.trim().strip_prefix("v1=").and_then(unhex).ok_or(SignatureError::Malformed(HEADER_SIGNATURE))?;
        let skew = now_secs.saturating_sub(ts);
        if skew.abs() > self.window_secs {
            return Err(SignatureError::OutsideWindow { skew_secs: skew, window_secs: self.window_secs });
        }
        let key_id = header(HEADER_KEY_ID);
        let mut candidates: Vec<&SigningKey> = self.keys.iter().filter(|k| Some(k.id.as_str()) == key_id).collect();
        if candidates.is_empty() {
            candidates = self.keys.iter().collect();
        }
        let ok = candidates.iter().any(|k| constant_time_eq(&k.mac(method, path, ts, body), &sig));
        if !ok {
            return Err(SignatureError::Mismatch);
        }
        if let Some(guard) = &self.replay
            && !guard.first_sight(&sig, ts, now_secs, self.window_secs)
        {
            return Err(SignatureError::Replayed);
        }
        Ok(())
    }
}

/// Signatures seen, and the order to forget them in.
type Seen = (HashMap<Vec<u8>, i64>, VecDeque<(i64, Vec<u8>)>);

/// Remembers the signatures accepted within the window; a second sight is a replay.
#[derive(Default)]
pub struct ReplayGuard {
    seen: Mutex<Seen>,
}

impl ReplayGuard {
    /// `true` the first time `sig` (signed at `ts`) is seen; forgets signatures older than the window.
    pub fn first_sight(&self, sig: &[u8], ts: i64, now_secs: i64, window_secs: i64) -> bool {
        let mut guard = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let (map, order) = &mut *guard;
        while let Some((t, _)) = order.front() {
            if *t >= now_secs - 2 * window_secs {
                break;
            }
            let (_, old) = order.pop_front().expect("non-empty");
            map.remove(&old);
        }
        if map.contains_key(sig) {
            return false;
        }
        map.insert(sig.to_vec(), ts);
        order.push_back((ts.max(now_secs - window_secs), sig.to_vec()));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> SigningKey {
        SigningKey::new(id, format!("{id}-0123456789abcdef0123456789abcdef").into_bytes()).unwrap()
    }

    fn headers<'a>(h: &'a [(&'static str, String)]) -> impl Fn(&str) -> Option<&'a str> + 'a {
        move |name| h.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_signed_request_verifies_once() {
        let k = key("k1");
        let h = k.sign("POST", "/jobs/x", 1_000, b"{}");
        let v = Verifier::new(vec![k]);
        assert_eq!(v.verify("POST", "/jobs/x", b"{}", headers(&h), 1_010), Ok(()));
        assert_eq!(v.verify("POST", "/jobs/x", b"{}", headers(&h), 1_011), Err(SignatureError::Replayed));
    }

    #[test]
    fn any_change_breaks_the_signature() {
        let k = key("k1");
        let h = k.sign("POST", "/jobs/x", 1_000, b"{\"a\":1}");
        let v = Verifier::new(vec![k]).without_replay_guard();
        assert_eq!(v.verify("POST", "/jobs/x", b"{\"a\":2}", headers(&h), 1_000), Err(SignatureError::Mismatch));
        assert_eq!(v.verify("POST", "/jobs/y", b"{\"a\":1}", headers(&h), 1_000), Err(SignatureError::Mismatch));
        assert_eq!(v.verify("PUT", "/jobs/x", b"{\"a\":1}", headers(&h), 1_000), Err(SignatureError::Mismatch));
        let mut forged = h.clone();
        forged[0].1 = "1001".into(); // a moved timestamp
        assert_eq!(v.verify("POST", "/jobs/x", b"{\"a\":1}", headers(&forged), 1_000), Err(SignatureError::Mismatch));
        let other = Verifier::new(vec![key("k2")]);
        assert_eq!(other.verify("POST", "/jobs/x", b"{\"a\":1}", headers(&h), 1_000), Err(SignatureError::Mismatch));
    }

    #[test]
    fn window_missing_and_malformed_headers() {
        let k = key("k1");
        let h = k.sign("POST", "/p", 1_000, b"");
        let v = Verifier::new(vec![k]).with_window_secs(60);
        assert!(matches!(v.verify("POST", "/p", b"", headers(&h), 1_061), Err(SignatureError::OutsideWindow { .. })));
        assert!(matches!(v.verify("POST", "/p", b"", headers(&h), 939), Err(SignatureError::OutsideWindow { .. })));
        assert_eq!(v.verify("POST", "/p", b"", |_| None, 1_000), Err(SignatureError::Missing(HEADER_TIMESTAMP)));
        let bad = [(HEADER_TIMESTAMP, "1000".to_string()), (HEADER_SIGNATURE, "v1=zz".to_string())];
        assert_eq!(v.verify("POST", "/p", b"", headers(&bad), 1_000), Err(SignatureError::Malformed(HEADER_SIGNATURE)));
        let bad = [(HEADER_TIMESTAMP, "soon".to_string())];
        assert_eq!(v.verify("POST", "/p", b"", headers(&bad), 1_000), Err(SignatureError::Malformed(HEADER_TIMESTAMP)));
    }

    #[test]
    fn rotation_accepts_every_configured_key() {
        let (old, new) = (key("old"), key("new"));
        let v = Verifier::new(vec![new.clone(), old.clone()]);
        assert_eq!(v.verify("POST", "/p", b"1", headers(&old.sign("POST", "/p", 5, b"1")), 5), Ok(()));
        assert_eq!(v.verify("POST", "/p", b"2", headers(&new.sign("POST", "/p", 5, b"2")), 5), Ok(()));
    }

    #[test]
    fn weak_secrets_are_refused_and_never_printed() {
        assert_eq!(SigningKey::new("k", b"short".to_vec()).unwrap_err(), SignatureError::WeakSecret);
        assert!(!format!("{:?}", key("k1")).contains("0123456789"));
    }

    #[test]
    fn the_replay_guard_forgets_old_signatures() {
        let g = ReplayGuard::default();
        assert!(g.first_sight(b"a", 100, 100, 10));
        assert!(!g.first_sight(b"a", 100, 105, 10));
        assert!(g.first_sight(b"b", 200, 200, 10)); // "a" is long out of the window and forgotten
        assert_eq!(g.seen.lock().unwrap().0.len(), 1);
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
