//! The `[discovery]` configuration (as it sits in the server's TOML file), `build`, `Router` and `StaticDiscovery`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use rota_core::{Candidate, Discovery, DiscoveryError};
use rota_discovery::{
    DiscoveryConfig, DnsService, DnsTarget, Protocol, Router, ServiceConfig, StaticDiscovery, StaticNode, build,
};
use rota_store::{NodeKind, NodeRegistration, NodeStore};
use tokio::net::UdpSocket;

/// The server's file: other keys beside `[discovery]`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerFile {
    #[allow(dead_code)]
    listen: Option<String>,
    #[serde(default)]
    discovery: DiscoveryConfig,
}

fn parse(text: &str) -> Result<DiscoveryConfig, String> {
    toml::from_str::<ServerFile>(text).map(|f| f.discovery).map_err(|e| e.to_string())
}

fn parse_err(text: &str) -> String {
    match parse(text) {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(e) => e,
    }
}

const EXAMPLE: &str = r#"
listen = "127.0.0.1:7070"
[discovery]
registry_cache = "250ms"
nameserver = "127.0.0.1:5353"
dns-timeout = "1s"
[discovery.services.billing-worker]
static = ["http://10.0.0.5:8080", { address = "http://10.0.0.6:8080", labels = { zone = "b" }, weight = 3 }]
[discovery.services.reports]
dns = "srv:_rota._tcp.reports.example.com"
scheme = "http"
protocol = "http"
[discovery.services.grpc-workers]
dns = "a:workers.example.com:9000"
scheme = "grpc"
"#;

#[test]
fn the_example_parses() {
    let c = parse(EXAMPLE).expect("parses");
    assert_eq!(c.registry_cache.map(|d| d.as_std()), Some(Duration::from_millis(250)));
    assert_eq!(c.nameserver, Some("127.0.0.1:5353".parse().unwrap()));
    assert_eq!(c.dns_timeout.map(|d| d.as_std()), Some(Duration::from_secs(1)));
    let mut b = StaticNode::new("http://10.0.0.6:8080");
    b.labels = BTreeMap::from([("zone".into(), "b".into())]);
    b.weight = 3;
    assert_eq!(c.services["billing-worker"], ServiceConfig::Static(vec![StaticNode::new("http://10.0.0.5:8080"), b]));
    assert_eq!(
        c.services["reports"],
        ServiceConfig::Dns(DnsService {
            target: DnsTarget::Srv { name: "_rota._tcp.reports.example.com".into() },
            scheme: "http".into(),
            protocol: Protocol::Http,
        })
    );
    let ServiceConfig::Dns(grpc) = &c.services["grpc-workers"] else { panic!("dns") };
    assert_eq!(grpc.protocol, Protocol::Grpc, "protocol follows a grpc scheme by default");
    assert_eq!(grpc.target, DnsTarget::Addr { host: "workers.example.com".into(), port: 9000 });

    assert_eq!(parse("").unwrap(), DiscoveryConfig::default(), "no [discovery]: registry only");
    assert_eq!(parse("[discovery]\nnameserver = \"::1\"").unwrap().nameserver, Some("[::1]:53".parse().unwrap()));
    assert_eq!(
        parse("[discovery]\nnameserver = \"10.0.0.1\"").unwrap().nameserver,
        Some("10.0.0.1:53".parse().unwrap())
    );
}

#[test]
fn bad_configs_name_the_field() {
    let cases: &[(&str, &[&str])] = &[
        ("[discovery]\nregistry-cach = \"1s\"", &["unknown field `registry-cach`", "registry-cache"]),
        ("[discovery]\nregistry_cache = \"soon\"", &["invalid duration", "soon", "registry_cache"]),
        ("[discovery]\nregistry_cache = \"0s\"", &["invalid duration", "registry_cache"]),
        ("[discovery]\nnameserver = \"dns.example\"", &["invalid nameserver", "dns.example"]),
        (
            "[discovery.services.x]\nstatic = [\"http://a:1\"]\nweight = 2",
            &["unknown field `weight`", "line 3", "expected one of `static`, `dns`"],
        ),
        ("[discovery.services.x]\nstatic = [{ address = \"http://a:1\", weigth = 2 }]", &["unknown field `weigth`"]),
        ("[discovery.services.x]\nstatic = [{ labels = { a = \"b\" } }]", &["missing field `address`"]),
        ("[discovery.services.x]\nstatic = [{ address = \"http://a:1\", weight = 0 }]", &["`weight`", "at least 1"]),
        (
            "[discovery.services.x]\nstatic = [{ address = \"http://a:1\", protocol = \"ftp\" }]",
            &["unknown variant `ftp`"],
        ),
        ("[discovery.services.x]\nstatic = [\"\"]", &["invalid node address"]),
        ("[discovery.services.x]\nstatic = [42]", &["node address string or a table"]),
        ("[discovery.services.x]\ndns = \"srv:_a._tcp.x\"\nstatic = []", &["`static` and `dns` exclude each other"]),
        ("[discovery.services.x]\nscheme = \"http\"", &["needs `static`", "or `dns`"]),
        ("[discovery.services.x]\ndns = \"mx:example.com\"", &["`dns`: invalid DNS target", "a:HOST:PORT"]),
        ("[discovery.services.x]\ndns = \"a:example.com\"", &["`dns`: invalid DNS target", "a:HOST:PORT"]),
        ("[discovery.services.x]\ndns = \"a:example.com:70000\"", &["`dns`: invalid DNS target", "port"]),
        ("[discovery.services.x]\ndns = \"a:x:80\"\nscheme = \"ht tp\"", &["`scheme`: invalid scheme"]),
        ("[discovery.services.x]\ndns = \"a:x:80\"\nprotocol = \"soap\"", &["unknown variant `soap`", "http", "grpc"]),
        ("[discovery.services.x]\nstatic = []\nscheme = \"https\"", &["`scheme` applies to `dns` services only"]),
        ("[discovery.services.x]\nstatic = []\nprotocol = \"grpc\"", &["`protocol` of a static service"]),
    ];
    for (text, needles) in cases {
        let err = parse_err(text);
        for needle in *needles {
            assert!(err.contains(needle), "error for {text:?} lacks {needle:?}:\n{err}");
        }
    }
}

#[tokio::test]
async fn static_discovery_serves_the_configured_nodes() {
    let c = parse(EXAMPLE).unwrap();
    let ServiceConfig::Static(nodes) = &c.services["billing-worker"] else { panic!("static") };
    let d = StaticDiscovery::new()
        .with_nodes("billing-worker", nodes)
        .with_service("g", vec![Candidate::from_address("grpc://10.0.0.9:9000")]);
    let got = d.candidates("billing-worker").await.unwrap();
    assert_eq!(got[0], Candidate::from_address("http://10.0.0.5:8080"));
    assert_eq!(got[1].id, "http://10.0.0.6:8080");
    assert_eq!(got[1].weight, 3);
    assert_eq!(got[1].labels["zone"], "b");
    assert_eq!(got[1].protocol, "http");
    assert_eq!(d.candidates("g").await.unwrap()[0].protocol, "grpc");
    let mut n = StaticNode::new("10.0.0.7:9000");
    n.protocol = Some(Protocol::Grpc);
    n.capacity = 4;
    let c = n.candidate();
    assert_eq!((c.protocol.as_str(), c.capacity, c.address.as_str()), ("grpc", 4, "10.0.0.7:9000"));
    assert!(matches!(d.candidates("nope").await, Err(DiscoveryError::UnknownService(s)) if s == "nope"));
}

struct Fixed(&'static str);

#[async_trait]
impl Discovery for Fixed {
    async fn candidates(&self, service: &str) -> Result<Vec<Candidate>, DiscoveryError> {
        if service == "unknown-to-fixed" {
            return Err(DiscoveryError::UnknownService(service.into()));
        }
        Ok(vec![Candidate::from_address(&format!("http://{}/{service}", self.0))])
    }
}

#[tokio::test]
async fn router_routes_and_falls_back() {
    let r = Router::new(Arc::new(Fixed("fallback")))
        .with_route("a", Arc::new(Fixed("first")))
        .with_route("unknown-to-fixed", Arc::new(StaticDiscovery::new()));
    assert!(r.is_routed("a") && !r.is_routed("b"));
    assert_eq!(r.candidates("a").await.unwrap()[0].address, "http://first/a");
    assert_eq!(r.candidates("b").await.unwrap()[0].address, "http://fallback/b");
    assert!(
        matches!(r.candidates("unknown-to-fixed").await, Err(DiscoveryError::UnknownService(_))),
        "a routed service is not retried on the fallback"
    );
    let bare = Router::without_fallback().with_route("a", Arc::new(Fixed("x")));
    assert!(matches!(bare.candidates("b").await, Err(DiscoveryError::UnknownService(s)) if s == "b"));
}

/// `build` wires static, DNS and registry services behind one `Discovery`.
#[tokio::test]
async fn build_wires_every_source() {
    // A DNS server answering every A query with 10.0.0.1 and every AAAA query with nothing.
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let ns: SocketAddr = udp.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((n, peer)) = udp.recv_from(&mut buf).await {
            let q = &buf[..n];
            let qtype = u16::from_be_bytes([q[n - 4], q[n - 3]]);
            let mut p = q.to_vec();
            p[2] = 0x81;
            p[3] = 0x80;
            if qtype == 1 {
                p[7] = 1; // ANCOUNT
                p.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 1]);
            }
            let _ = udp.send_to(&p, peer).await;
        }
    });

    let sql = rota_store_sql::testing::fresh_sqlite().await;
    let reg = NodeRegistration {
        id: "exec-1".into(),
        kind: NodeKind::Executor,
        service: "registered".into(),
        address: "http://10.9.0.1:8080".into(),
        protocol: "http".into(),
        labels: BTreeMap::new(),
        weight: 1,
        capacity: 0,
    };
    sql.register_node(reg, Duration::from_secs(30), Utc::now()).await.unwrap();
    let store: Arc<dyn rota_store::Store> = Arc::new(sql);
    let text = format!(
        "[discovery]\nnameserver = \"{ns}\"\n[discovery.services.st]\nstatic = [\"http://10.0.0.5:8080\"]\n\
         [discovery.services.dn]\ndns = \"a:exec.example:7000\"\nscheme = \"https\"\n"
    );
    let d = build(store.clone(), &parse(&text).unwrap()).expect("build");
    assert_eq!(d.candidates("st").await.unwrap()[0].address, "http://10.0.0.5:8080");
    assert_eq!(d.candidates("dn").await.unwrap()[0].address, "https://10.0.0.1:7000");
    assert_eq!(d.candidates("registered").await.unwrap()[0].id, "exec-1");
    assert_eq!(d.candidates("anything-else").await.unwrap(), Vec::<Candidate>::new(), "registry: no nodes");

    // Without services nothing needs a nameserver.
    let d = build(store, &DiscoveryConfig::default()).expect("build");
    assert_eq!(d.candidates("registered").await.unwrap().len(), 1);
}
