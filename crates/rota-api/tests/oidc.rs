//! OIDC bearer tokens against a fake issuer (axum on 127.0.0.1:0 serving the discovery document and the JWKS)
//! with ECDSA P-256 keys generated here: valid, expired, not yet valid, wrong audience, wrong issuer, unknown
//! kid, bad signature, `alg: none`; roles from the roles claim and from role bindings of groups; key rotation.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::routing;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Server, assert_error, into_json, task_json, task_yaml};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use rota_api::auth::{Auth, AuthChain, OidcAuthenticator, OidcConfig, RolePolicy, TokenAuthenticator};
use serde_json::{Value, json};

const AUDIENCE: &str = "rota";

/// A P-256 key: its PKCS#8 document (for signing) and its public JWK.
struct Key {
    kid: String,
    pkcs8: Vec<u8>,
}

impl Key {
    fn generate(kid: &str) -> Key {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap().as_ref().to_vec();
        Key { kid: kid.into(), pkcs8 }
    }

    fn jwk(&self) -> Value {
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &self.pkcs8, &SystemRandom::new()).unwrap();
        let point = pair.public_key().as_ref();
        assert_eq!((point.len(), point[0]), (65, 4), "uncompressed point");
        json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..]),
        })
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_as(&self.kid, claims)
    }

    fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(&self.pkcs8)).unwrap()
    }
}

#[derive(Clone)]
struct Issuer {
    url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    jwks_fetches: Arc<AtomicUsize>,
}

async fn discovery(State(i): State<Issuer>) -> Json<Value> {
    Json(json!({"issuer": i.url, "jwks_uri": format!("{}/keys", i.url)}))
}

async fn jwks(State(i): State<Issuer>) -> Json<Value> {
    i.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    Json(json!({"keys": *i.keys.lock().unwrap()}))
}

async fn start_issuer(keys: Vec<Value>) -> Issuer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let issuer = Issuer { url, keys: Arc::new(Mutex::new(keys)), jwks_fetches: Arc::new(AtomicUsize::new(0)) };
    let app = axum::Router::new()
        .route("/.well-known/openid-configuration", routing::get(discovery))
        .route("/keys", routing::get(jwks))
        .with_state(issuer.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    issuer
}

async fn server(issuer: &Issuer, refetch: Duration) -> Server {
    let mut config = OidcConfig::new(issuer.url.clone(), AUDIENCE);
    config.roles_claim = Some("rota_roles".into());
    config.groups_claim = Some("groups".into());
    config.refetch_interval = Some(refetch);
    Server::start_with_auth(move |store| {
        let oidc = OidcAuthenticator::new(config, store.clone()).unwrap();
        let chain = AuthChain::new().with(Arc::new(TokenAuthenticator::new(store))).with(Arc::new(oidc));
        Auth::new(Arc::new(chain), Arc::new(RolePolicy))
    })
    .await
}

fn claims(issuer: &Issuer, sub: &str, extra: Value) -> Value {
    let now = chrono::Utc::now().timestamp();
    let mut c = json!({"iss": issuer.url, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 300});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

async fn get(s: &Server, token: &str, path: &str) -> (StatusCode, Value) {
    into_json(s.client(token).get(s.url(path)).send().await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_of_the_issuer_are_validated() {
    let key = Key::generate("k1");
    let issuer = start_issuer(vec![key.jwk()]).await;
    let s = server(&issuer, Duration::from_secs(60)).await;
    s.apply_yaml("ns", "t", &task_yaml("ns", "t", &[], "succeed")).await;

    let good = key.sign(&claims(&issuer, "alice", json!({"rota_roles": ["ns:editor", "bogus"], "email": "a@x"})));
    let (status, body) = get(&s, &good, "/api/v1/tasks/ns/t").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let res = s.client(&good).put(s.url("/api/v1/tasks/ns/u")).json(&task_json("ns", "u", "succeed")).send().await;
    assert_eq!(res.unwrap().status(), StatusCode::CREATED);
    let (status, err) = get(&s, &good, "/api/v1/tasks/other/t").await;
    assert_error(status, &err, 403, "forbidden");
    let (_, audit) = s.get("/api/v1/audit?action=put_task").await;
    assert_eq!(audit["items"][0]["actor"], "oidc:alice", "{audit}");

    let now = chrono::Utc::now().timestamp();
    let roles = json!({"rota_roles": ["*:admin"]});
    let other = Key::generate("k1");
    let mut none_header = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "kid": "k1", "typ": "JWT"}).to_string());
    none_header.push('.');
    none_header.push_str(&URL_SAFE_NO_PAD.encode(claims(&issuer, "mallory", roles.clone()).to_string()));
    none_header.push('.');
    let cases = [
        ("expired", key.sign(&claims(&issuer, "a", json!({"exp": now - 600, "rota_roles": ["*:admin"]})))),
        ("not valid yet", key.sign(&claims(&issuer, "a", json!({"nbf": now + 600, "rota_roles": ["*:admin"]})))),
        ("wrong audience", key.sign(&claims(&issuer, "a", json!({"aud": "other", "rota_roles": ["*:admin"]})))),
        ("wrong issuer", key.sign(&claims(&issuer, "a", json!({"iss": "http://evil", "rota_roles": ["*:admin"]})))),
        ("unknown kid", key.sign_as("k9", &claims(&issuer, "a", roles.clone()))),
        ("bad signature", other.sign(&claims(&issuer, "a", roles.clone()))),
        ("alg none", none_header),
        ("no sub", key.sign(&json!({"iss": issuer.url, "aud": AUDIENCE, "exp": now + 300}))),
    ];
    for (what, token) in cases {
        let (status, err) = get(&s, &token, "/api/v1/tasks/ns/t").await;
        assert_error(status, &err, 401, "unauthenticated");
        assert!(!err.to_string().contains(&token), "{what}: the answer echoes the token");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn groups_get_roles_through_role_bindings() {
    let key = Key::generate("k1");
    let issuer = start_issuer(vec![key.jwk()]).await;
    let s = server(&issuer, Duration::from_secs(60)).await;
    s.apply_yaml("ns", "t", &task_yaml("ns", "t", &[], "succeed")).await;
    let bob = key.sign(&claims(&issuer, "bob", json!({"groups": ["devs", "other"]})));
    let (status, err) = get(&s, &bob, "/api/v1/tasks/ns/t").await;
    assert_error(status, &err, 403, "forbidden");

    let ns_admin = s.token(&["ns:admin"]).await;
    let bind = |path: &str, role: &str| {
        let req = s.client(&ns_admin).put(s.url(path)).json(&json!({"role": role}));
        async move { into_json(req.send().await.unwrap()).await }
    };
    let (status, b) = bind("/api/v1/role-bindings/ns/group/devs", "operator").await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!((b["kind"].as_str(), b["role"].as_str()), (Some("group"), Some("operator")));
    let (status, err) = bind("/api/v1/role-bindings/other/group/devs", "viewer").await;
    assert_error(status, &err, 403, "forbidden");
    let (status, err) = bind("/api/v1/role-bindings/ns/team/devs", "viewer").await;
    assert_error(status, &err, 400, "invalid_argument");

    let (status, _) = get(&s, &bob, "/api/v1/tasks/ns/t").await;
    assert_eq!(status, StatusCode::OK);
    let res = s.client(&bob).post(s.url("/api/v1/tasks/ns/t/trigger")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let (status, list) = get(&s, &ns_admin, "/api/v1/role-bindings?namespace=ns").await;
    assert_eq!((status, list["items"].as_array().unwrap().len()), (StatusCode::OK, 1));
    let (status, err) = get(&s, &ns_admin, "/api/v1/role-bindings").await;
    assert_error(status, &err, 403, "forbidden");
    let res = s.client(&ns_admin).delete(s.url("/api/v1/role-bindings/ns/group/devs")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let (status, _) = get(&s, &bob, "/api/v1/tasks/ns/t").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_kids_refetch_the_keys_at_a_bounded_rate() {
    let k1 = Key::generate("k1");
    let issuer = start_issuer(vec![k1.jwk()]).await;
    // A long refetch interval: unknown kids do not make Rota fetch again.
    let s = server(&issuer, Duration::from_secs(3600)).await;
    let admin = json!({"rota_roles": ["*:viewer"]});
    let (status, _) = get(&s, &k1.sign(&claims(&issuer, "a", admin.clone())), "/api/v1/tasks").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(issuer.jwks_fetches.load(Ordering::SeqCst), 1);
    for _ in 0..5 {
        let (status, _) =
            get(&s, &k1.sign_as("k-unknown", &claims(&issuer, "a", admin.clone())), "/api/v1/tasks").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(issuer.jwks_fetches.load(Ordering::SeqCst), 1, "unknown kids within the interval fetch nothing");

    // With no interval, a rotated key is picked up on first sight.
    let k2 = Key::generate("k2");
    let issuer = start_issuer(vec![k1.jwk()]).await;
    let s = server(&issuer, Duration::ZERO).await;
    let (status, _) = get(&s, &k1.sign(&claims(&issuer, "a", admin.clone())), "/api/v1/tasks").await;
    assert_eq!(status, StatusCode::OK);
    issuer.keys.lock().unwrap().push(k2.jwk());
    let (status, body) = get(&s, &k2.sign(&claims(&issuer, "a", admin.clone())), "/api/v1/tasks").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(issuer.jwks_fetches.load(Ordering::SeqCst), 2);
}
