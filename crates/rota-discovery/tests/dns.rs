//! `DnsDiscovery` against a fake DNS server on 127.0.0.1 (UDP, plus TCP on the same port). The server's answers
//! are built by hand in this file (byte helpers and literal packets), independent of the crate's codec.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use rota_core::{Candidate, Discovery, DiscoveryError};
use rota_discovery::{DnsDiscovery, DnsService, DnsTarget, ManualClock, Protocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

const A: u16 = 1;
const CNAME: u16 = 5;
const SOA: u16 = 6;
const AAAA: u16 = 28;
const SRV: u16 = 33;
/// Flags of a plain answer: QR, RD, RA.
const OK: u16 = 0x8180;
const NXDOMAIN: u16 = 0x8183;
const SERVFAIL: u16 = 0x8182;
/// OK with the TC bit.
const TRUNCATED: u16 = 0x8380;
/// Offset of the question name in every packet: right after the 12-byte header.
const QNAME: [u8; 2] = [0xC0, 12];

/// A query as the fake server saw it.
#[derive(Debug, Clone)]
struct Query {
    id: u16,
    name: String,
    qtype: u16,
    /// The question section as sent (name, type, class), echoed in answers.
    question: Vec<u8>,
    tcp: bool,
}

/// Parses a query by hand (no compression in queries).
fn parse_query(p: &[u8], tcp: bool) -> Option<Query> {
    let id = u16::from_be_bytes([*p.first()?, *p.get(1)?]);
    let mut pos = 12;
    let mut labels = Vec::new();
    loop {
        let len = *p.get(pos)? as usize;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(p.get(pos + 1..pos + 1 + len)?).to_ascii_lowercase());
        pos += 1 + len;
    }
    let qtype = u16::from_be_bytes([*p.get(pos + 1)?, *p.get(pos + 2)?]);
    let question = p.get(12..pos + 5)?.to_vec();
    Some(Query { id, name: labels.join("."), qtype, question, tcp })
}

/// `name` as uncompressed wire labels.
fn labels(name: &str) -> Vec<u8> {
    let mut v = Vec::new();
    for l in name.split('.').filter(|l| !l.is_empty()) {
        v.push(l.len() as u8);
        v.extend_from_slice(l.as_bytes());
    }
    v.push(0);
    v
}

/// A resource record: owner (wire bytes), type, class IN, TTL, data.
fn rr(owner: &[u8], rtype: u16, ttl: u32, data: &[u8]) -> Vec<u8> {
    let mut v = owner.to_vec();
    v.extend_from_slice(&rtype.to_be_bytes());
    v.extend_from_slice(&1u16.to_be_bytes());
    v.extend_from_slice(&ttl.to_be_bytes());
    v.extend_from_slice(&(data.len() as u16).to_be_bytes());
    v.extend_from_slice(data);
    v
}

fn srv_data(priority: u16, weight: u16, port: u16, target: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [priority, weight, port] {
        v.extend_from_slice(&x.to_be_bytes());
    }
    v.extend_from_slice(target);
    v
}

fn soa_data(minimum: u32) -> Vec<u8> {
    let mut v = labels("ns.example");
    v.extend_from_slice(&labels("admin.example"));
    for x in [1u32, 3600, 600, 86400, minimum] {
        v.extend_from_slice(&x.to_be_bytes());
    }
    v
}

/// An answer to `q`: header, the question echoed, then the sections.
fn answer(q: &Query, flags: u16, an: &[Vec<u8>], ns: &[Vec<u8>], ar: &[Vec<u8>]) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [q.id, flags, 1, an.len() as u16, ns.len() as u16, ar.len() as u16] {
        v.extend_from_slice(&x.to_be_bytes());
    }
    v.extend_from_slice(&q.question);
    for r in an.iter().chain(ns).chain(ar) {
        v.extend_from_slice(r);
    }
    v
}

fn a(ttl: u32, ip: [u8; 4]) -> Vec<u8> {
    rr(&QNAME, A, ttl, &ip)
}

fn aaaa(ttl: u32, ip: std::net::Ipv6Addr) -> Vec<u8> {
    rr(&QNAME, AAAA, ttl, &ip.octets())
}

type Handler = Box<dyn Fn(&Query) -> Vec<Vec<u8>> + Send>;

/// The fake server: answers each query with the packets the handler returns (none: no answer).
struct FakeDns {
    addr: SocketAddr,
    handler: Arc<Mutex<Handler>>,
    log: Arc<Mutex<Vec<Query>>>,
}

impl FakeDns {
    /// UDP only.
    async fn start(handler: impl Fn(&Query) -> Vec<Vec<u8>> + Send + 'static) -> FakeDns {
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
        FakeDns::serve(udp, None, Box::new(handler))
    }

    /// UDP and TCP on the same port.
    async fn start_with_tcp(handler: impl Fn(&Query) -> Vec<Vec<u8>> + Send + 'static) -> FakeDns {
        for _ in 0..50 {
            let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
            if let Ok(tcp) = TcpListener::bind(udp.local_addr().unwrap()).await {
                return FakeDns::serve(udp, Some(tcp), Box::new(handler));
            }
        }
        panic!("no port free for both UDP and TCP");
    }

    fn serve(udp: UdpSocket, tcp: Option<TcpListener>, handler: Handler) -> FakeDns {
        let addr = udp.local_addr().unwrap();
        let handler = Arc::new(Mutex::new(handler));
        let log = Arc::new(Mutex::new(Vec::new()));
        let respond = {
            let (handler, log) = (handler.clone(), log.clone());
            move |p: &[u8], tcp: bool| -> Vec<Vec<u8>> {
                let Some(q) = parse_query(p, tcp) else { return Vec::new() };
                log.lock().unwrap().push(q.clone());
                (handler.lock().unwrap())(&q)
            }
        };
        let udp_respond = respond.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, peer)) = udp.recv_from(&mut buf).await {
                for packet in udp_respond(&buf[..n], false) {
                    let _ = udp.send_to(&packet, peer).await;
                }
            }
        });
        if let Some(tcp) = tcp {
            tokio::spawn(async move {
                while let Ok((mut stream, _)) = tcp.accept().await {
                    let respond = respond.clone();
                    tokio::spawn(async move {
                        let mut len = [0u8; 2];
                        stream.read_exact(&mut len).await.ok()?;
                        let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
                        stream.read_exact(&mut msg).await.ok()?;
                        for packet in respond(&msg, true) {
                            stream.write_all(&(packet.len() as u16).to_be_bytes()).await.ok()?;
                            stream.write_all(&packet).await.ok()?;
                        }
                        Some(())
                    });
                }
            });
        }
        FakeDns { addr, handler, log }
    }

    fn set(&self, handler: impl Fn(&Query) -> Vec<Vec<u8>> + Send + 'static) {
        *self.handler.lock().unwrap() = Box::new(handler);
    }

    fn queries(&self) -> Vec<(String, u16, bool)> {
        self.log.lock().unwrap().iter().map(|q| (q.name.clone(), q.qtype, q.tcp)).collect()
    }

    fn count(&self) -> usize {
        self.log.lock().unwrap().len()
    }
}

fn service(target: &str) -> DnsService {
    DnsService::new(target.parse::<DnsTarget>().expect("target"))
}

fn addresses(c: &[Candidate]) -> Vec<&str> {
    c.iter().map(|c| c.address.as_str()).collect()
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(Utc.timestamp_opt(1_790_000_000, 0).single().unwrap()))
}

fn unavailable(r: Result<Vec<Candidate>, DiscoveryError>) -> String {
    match r {
        Err(DiscoveryError::Unavailable { reason, .. }) => reason,
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_and_aaaa_records_become_sorted_candidates() {
    let dns = FakeDns::start(|q| match (q.name.as_str(), q.qtype) {
        ("exec.example", A) => vec![answer(q, OK, &[a(30, [10, 0, 0, 2]), a(30, [10, 0, 0, 1])], &[], &[])],
        ("exec.example", AAAA) => vec![answer(q, OK, &[aaaa(30, "fd00::1".parse().unwrap())], &[], &[])],
        _ => vec![answer(q, NXDOMAIN, &[], &[], &[])],
    })
    .await;
    let d = DnsDiscovery::new(dns.addr).with_service("exec", service("a:Exec.Example.:8080")).with_service(
        "exec-grpc",
        DnsService { scheme: "grpcs".into(), protocol: Protocol::Grpc, ..service("a:exec.example:9090") },
    );
    let got = d.candidates("exec").await.expect("candidates");
    assert_eq!(addresses(&got), ["http://10.0.0.1:8080", "http://10.0.0.2:8080", "http://[fd00::1]:8080"]);
    assert_eq!(got[0], Candidate::from_address("http://10.0.0.1:8080"));
    let grpc = d.candidates("exec-grpc").await.expect("candidates");
    assert_eq!(grpc[0].address, "grpcs://10.0.0.1:9090");
    assert_eq!(grpc[0].protocol, "grpc");
    let mut asked = dns.queries();
    asked.sort();
    assert_eq!(asked.len(), 4);
    assert!(asked.iter().all(|(n, _, tcp)| n == "exec.example" && !tcp), "{asked:?}");
    assert!(matches!(d.candidates("other").await, Err(DiscoveryError::UnknownService(s)) if s == "other"));
}

#[tokio::test]
async fn a_records_behind_a_cname() {
    let dns = FakeDns::start(|q| {
        let target = labels("real.example");
        let mut cname_then_a = vec![rr(&QNAME, CNAME, 60, &target)];
        if q.qtype == A {
            // The A record's owner is the CNAME target, as a pointer into the CNAME's data (offset 12 + question
            // + 12 bytes of the CNAME record before its data).
            let ptr = 12 + q.question.len() + 12;
            cname_then_a.push(rr(&[0xC0, ptr as u8], A, 60, &[192, 0, 2, 7]));
        }
        vec![answer(q, OK, &cname_then_a, &[], &[])]
    })
    .await;
    let d = DnsDiscovery::new(dns.addr).with_service("s", service("a:alias.example:80"));
    assert_eq!(addresses(&d.candidates("s").await.unwrap()), ["http://192.0.2.7:80"]);
}

#[tokio::test]
async fn srv_with_additional_records_needs_no_follow_up() {
    let dns = FakeDns::start(|q| match (q.name.as_str(), q.qtype) {
        ("_rota._tcp.svc.example", SRV) => vec![answer(
            q,
            OK,
            &[
                rr(&QNAME, SRV, 60, &srv_data(20, 1, 9000, &labels("b.svc.example"))),
                rr(&QNAME, SRV, 60, &srv_data(10, 3, 8080, &labels("a.svc.example"))),
                rr(&QNAME, SRV, 60, &srv_data(10, 0, 8081, &labels("a.svc.example"))),
            ],
            &[],
            &[
                rr(&labels("b.svc.example"), AAAA, 60, &"fd00::b".parse::<std::net::Ipv6Addr>().unwrap().octets()),
                rr(&labels("a.svc.example"), A, 60, &[10, 0, 0, 1]),
                rr(&labels("b.svc.example"), A, 60, &[10, 0, 0, 2]),
                rr(&labels("unrelated.example"), A, 60, &[10, 9, 9, 9]),
            ],
        )],
        _ => vec![answer(q, SERVFAIL, &[], &[], &[])],
    })
    .await;
    let d = DnsDiscovery::new(dns.addr).with_service("svc", service("srv:_rota._tcp.svc.example"));
    let got = d.candidates("svc").await.expect("candidates");
    assert_eq!(
        addresses(&got),
        ["http://10.0.0.1:8080", "http://10.0.0.1:8081", "http://10.0.0.2:9000", "http://[fd00::b]:9000"]
    );
    assert_eq!(got.iter().map(|c| c.weight).collect::<Vec<_>>(), [3, 1, 1, 1], "SRV weight, 0 counted as 1");
    assert_eq!(dns.queries(), [("_rota._tcp.svc.example".to_string(), SRV, false)]);
}

#[tokio::test]
async fn srv_targets_without_additional_records_are_resolved() {
    let dns = FakeDns::start(|q| match (q.name.as_str(), q.qtype) {
        ("_rota._tcp.svc.example", SRV) => vec![answer(
            q,
            OK,
            &[
                rr(&QNAME, SRV, 60, &srv_data(1, 5, 7000, &labels("n2.svc.example"))),
                rr(&QNAME, SRV, 60, &srv_data(1, 5, 7000, &labels("n1.svc.example"))),
                rr(&QNAME, SRV, 60, &srv_data(2, 5, 7000, &labels("gone.svc.example"))),
                rr(&QNAME, SRV, 60, &srv_data(0, 0, 0, &[0])), // target "." is skipped
            ],
            &[],
            &[],
        )],
        ("n1.svc.example", A) => vec![answer(q, OK, &[a(60, [10, 1, 0, 1])], &[], &[])],
        ("n2.svc.example", A) => vec![answer(q, OK, &[a(60, [10, 1, 0, 2])], &[], &[])],
        (_, AAAA) => vec![answer(q, OK, &[], &[], &[])],
        _ => vec![answer(q, NXDOMAIN, &[], &[], &[])],
    })
    .await;
    let d = DnsDiscovery::new(dns.addr).with_service("svc", service("srv:_rota._tcp.svc.example"));
    let got = d.candidates("svc").await.expect("candidates");
    assert_eq!(addresses(&got), ["http://10.1.0.1:7000", "http://10.1.0.2:7000"]);
    assert!(got.iter().all(|c| c.weight == 5));
    let mut followups: Vec<_> = dns.queries().into_iter().filter(|(_, t, _)| *t != SRV).collect();
    followups.sort();
    assert_eq!(followups.len(), 6, "A and AAAA for each of the three targets: {followups:?}");
}

/// A literal response using compression pointers everywhere: answer owners point at the question, the SRV
/// target shares a suffix with it, and the additional record's owner points into the SRV data.
#[tokio::test]
async fn compression_pointers_in_a_literal_packet() {
    #[rustfmt::skip]
    const PACKET: &[u8] = &[
        0x00, 0x00, 0x81, 0x80, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01,
        // 12: question _r._t.ex SRV IN ("_r" at 12, "_t" at 15, "ex" at 18, root at 21)
        2, b'_', b'r', 2, b'_', b't', 2, b'e', b'x', 0, 0x00, 0x21, 0x00, 0x01,
        // 26: answer: owner -> 12, SRV, IN, TTL 300, RDLENGTH 11
        0xC0, 12, 0x00, 0x21, 0x00, 0x01, 0x00, 0x00, 0x01, 0x2C, 0x00, 11,
        // 38: priority 1, weight 7, port 8443, target "n1" + pointer to "ex" at 18 ("n1" at 44)
        0x00, 0x01, 0x00, 0x07, 0x20, 0xFB, 2, b'n', b'1', 0xC0, 18,
        // 49: additional: owner -> 44 (n1.ex), A, IN, TTL 300, 203.0.113.9
        0xC0, 44, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x01, 0x2C, 0x00, 4, 203, 0, 113, 9,
    ];
    let dns = FakeDns::start(|q| {
        let mut p = PACKET.to_vec();
        p[..2].copy_from_slice(&q.id.to_be_bytes());
        vec![p]
    })
    .await;
    let d = DnsDiscovery::new(dns.addr).with_service("s", service("srv:_r._t.ex"));
    let got = d.candidates("s").await.expect("candidates");
    assert_eq!(addresses(&got), ["http://203.0.113.9:8443"]);
    assert_eq!(got[0].weight, 7);
    assert_eq!(dns.count(), 1);
}

#[tokio::test]
async fn nxdomain_is_an_empty_list() {
    let dns =
        FakeDns::start(|q| vec![answer(q, NXDOMAIN, &[], &[rr(&labels("example"), SOA, 30, &soa_data(10))], &[])])
            .await;
    let clock = clock();
    let d = DnsDiscovery::new(dns.addr)
        .with_clock(clock.clone())
        .with_service("a", service("a:missing.example:80"))
        .with_service("srv", service("srv:_x._tcp.missing.example"));
    assert_eq!(d.candidates("a").await.unwrap(), Vec::<Candidate>::new());
    assert_eq!(d.candidates("srv").await.unwrap(), Vec::<Candidate>::new());
    assert_eq!(dns.count(), 3);
    // Cached for the SOA's negative TTL (min(30, 10) = 10 s).
    clock.advance(Duration::from_millis(9999));
    d.candidates("a").await.unwrap();
    assert_eq!(dns.count(), 3);
    clock.advance(Duration::from_millis(1));
    d.candidates("a").await.unwrap();
    assert_eq!(dns.count(), 5);
}

#[tokio::test]
async fn server_errors_and_silence_are_unavailable() {
    let dns = FakeDns::start(|q| match q.name.as_str() {
        "fail.example" => vec![answer(q, SERVFAIL, &[], &[], &[])],
        _ => vec![], // never answers
    })
    .await;
    let d = DnsDiscovery::new(dns.addr)
        .with_timeout(Duration::from_millis(200))
        .with_service("fail", service("a:fail.example:80"))
        .with_service("silent", service("srv:_x._tcp.silent.example"));
    let reason = unavailable(d.candidates("fail").await);
    assert!(reason.contains("SERVFAIL") && reason.contains("a:fail.example:80"), "{reason}");
    let started = tokio::time::Instant::now();
    let reason = unavailable(d.candidates("silent").await);
    assert!(reason.contains("no answer") && reason.contains(&dns.addr.to_string()), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(5), "the timeout bounds the wait");
}

#[tokio::test]
async fn nameserver_not_listening_is_unavailable() {
    let addr = UdpSocket::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap(); // bound, then closed
    let d =
        DnsDiscovery::new(addr).with_timeout(Duration::from_millis(500)).with_service("s", service("a:x.example:1"));
    let reason = unavailable(d.candidates("s").await);
    assert!(reason.contains(&addr.to_string()), "{reason}");
}

/// TTLs are honoured, clamped to [1 s, 60 s].
#[tokio::test]
async fn record_ttls_bound_the_cache() {
    let ttl = Arc::new(Mutex::new((30u32, 1u8)));
    let t = ttl.clone();
    let dns = FakeDns::start(move |q| {
        let (ttl, last) = *t.lock().unwrap();
        match q.qtype {
            A => vec![answer(q, OK, &[a(ttl, [10, 0, 0, last])], &[], &[])],
            _ => vec![answer(q, OK, &[], &[], &[])],
        }
    })
    .await;
    let clock = clock();
    let d = DnsDiscovery::new(dns.addr).with_clock(clock.clone()).with_service("s", service("a:x.example:80"));
    let set = |secs: u32, last: u8| *ttl.lock().unwrap() = (secs, last);
    let get = || async { addresses(&d.candidates("s").await.unwrap()).join(",") };

    assert_eq!(get().await, "http://10.0.0.1:80");
    set(0, 2); // the next answer has TTL 0 (cached 1 s)
    clock.advance(Duration::from_millis(29_999));
    assert_eq!(get().await, "http://10.0.0.1:80", "TTL 30 s");
    clock.advance(Duration::from_millis(1));
    assert_eq!(get().await, "http://10.0.0.2:80");
    set(3600, 3);
    clock.advance(Duration::from_millis(999));
    assert_eq!(get().await, "http://10.0.0.2:80", "TTL 0 counts as 1 s");
    clock.advance(Duration::from_millis(1));
    assert_eq!(get().await, "http://10.0.0.3:80");
    set(3600, 4);
    clock.advance(Duration::from_millis(59_999));
    assert_eq!(get().await, "http://10.0.0.3:80");
    clock.advance(Duration::from_millis(1));
    assert_eq!(get().await, "http://10.0.0.4:80", "TTL 3600 s counts as 60 s");
    // Each refresh asked A and AAAA once.
    assert_eq!(dns.count(), 8);
}

/// A failed refresh serves the last good answer and is retried after 1 s; without a good answer it fails.
#[tokio::test]
async fn stale_answer_served_when_a_refresh_fails() {
    let dns = FakeDns::start(|q| match q.qtype {
        A => vec![answer(q, OK, &[a(5, [10, 0, 0, 1])], &[], &[])],
        _ => vec![answer(q, OK, &[], &[], &[])],
    })
    .await;
    let clock = clock();
    let d = DnsDiscovery::new(dns.addr)
        .with_clock(clock.clone())
        .with_timeout(Duration::from_millis(200))
        .with_service("s", service("a:x.example:80"))
        .with_service("never", service("a:never.example:80"));
    assert_eq!(addresses(&d.candidates("s").await.unwrap()), ["http://10.0.0.1:80"]);
    assert_eq!(dns.count(), 2);

    dns.set(|_| vec![]); // the server goes silent
    clock.advance(Duration::from_secs(5));
    assert_eq!(addresses(&d.candidates("s").await.unwrap()), ["http://10.0.0.1:80"], "stale");
    assert_eq!(dns.count(), 4, "a refresh was tried");
    clock.advance(Duration::from_millis(999));
    assert_eq!(addresses(&d.candidates("s").await.unwrap()), ["http://10.0.0.1:80"]);
    assert_eq!(dns.count(), 4, "no retry within 1 s");
    clock.advance(Duration::from_millis(1));
    assert_eq!(addresses(&d.candidates("s").await.unwrap()), ["http://10.0.0.1:80"]);
    assert_eq!(dns.count(), 6, "retried after 1 s");
    // No good answer ever: Unavailable (and that failure too is kept for 1 s).
    assert!(unavailable(d.candidates("never").await).contains("no answer"));
    assert!(unavailable(d.candidates("never").await).contains("no answer"));
    assert_eq!(dns.count(), 8);

    dns.set(|q| match q.qtype {
        A => vec![answer(q, OK, &[a(5, [10, 0, 0, 9])], &[], &[])],
        _ => vec![answer(q, OK, &[], &[], &[])],
    });
    clock.advance(Duration::from_secs(1));
    assert_eq!(addresses(&d.candidates("s").await.unwrap()), ["http://10.0.0.9:80"], "recovered");
    assert_eq!(addresses(&d.candidates("never").await.unwrap()), ["http://10.0.0.9:80"]);
}

/// Packets that are not the answer are ignored (garbage, wrong id, a query, a short header, a bad pointer);
/// a server sending only such packets is a timeout. Nothing panics.
#[tokio::test]
async fn garbage_packets_are_ignored() {
    let garbage = |q: &Query| {
        let mut wrong_id = answer(q, OK, &[a(60, [10, 6, 6, 6])], &[], &[]);
        wrong_id[..2].copy_from_slice(&q.id.wrapping_add(1).to_be_bytes());
        let mut not_a_response = answer(q, OK, &[a(60, [10, 6, 6, 6])], &[], &[]);
        not_a_response[2] &= 0x7F;
        let mut looping = answer(q, OK, &[], &[], &[]);
        looping[7] = 1; // one answer, whose owner points at itself
        let here = looping.len() as u8;
        looping.extend_from_slice(&[0xC0, here, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 6, 6, 6]);
        let mut other_question = answer(q, OK, &[a(60, [10, 6, 6, 6])], &[], &[]);
        other_question[13] = b'z'; // the answer to another name
        vec![
            vec![],
            vec![0xFF; 3],
            vec![0x13, 0x37, 0xDE, 0xAD, 0xBE, 0xEF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xC0],
            wrong_id,
            not_a_response,
            looping,
            other_question,
            (0..=255u8).cycle().skip(q.id as usize % 7).take(700).collect(),
        ]
    };
    let dns = FakeDns::start(move |q| {
        let mut packets = garbage(q);
        if q.name == "ok.example" {
            let good = match q.qtype {
                A => answer(q, OK, &[a(60, [10, 0, 0, 1])], &[], &[]),
                _ => answer(q, OK, &[], &[], &[]),
            };
            packets.push(good);
        }
        packets
    })
    .await;
    let d = DnsDiscovery::new(dns.addr)
        .with_timeout(Duration::from_millis(300))
        .with_service("ok", service("a:ok.example:80"))
        .with_service("junk", service("srv:_x._tcp.junk.example"));
    assert_eq!(addresses(&d.candidates("ok").await.unwrap()), ["http://10.0.0.1:80"]);
    assert!(unavailable(d.candidates("junk").await).contains("no answer"));
}

/// A truncated UDP answer is asked again over TCP; when TCP fails the error says so.
#[tokio::test]
async fn truncated_answers_retry_over_tcp() {
    let dns = FakeDns::start_with_tcp(|q| match (q.tcp, q.qtype) {
        (false, SRV) => vec![answer(q, TRUNCATED, &[], &[], &[])],
        (true, SRV) => {
            let records: Vec<Vec<u8>> = (1..=40u8)
                .map(|i| rr(&QNAME, SRV, 60, &srv_data(1, 1, 8000 + i as u16, &labels("big.example"))))
                .collect();
            vec![answer(q, OK, &records, &[], &[rr(&labels("big.example"), A, 60, &[10, 0, 0, 1])])]
        }
        _ => vec![answer(q, NXDOMAIN, &[], &[], &[])],
    })
    .await;
    let d = DnsDiscovery::new(dns.addr).with_service("big", service("srv:_rota._tcp.big.example"));
    let got = d.candidates("big").await.expect("candidates");
    assert_eq!(got.len(), 40);
    assert_eq!(got[0].address, "http://10.0.0.1:8001");
    assert_eq!(
        dns.queries(),
        [("_rota._tcp.big.example".to_string(), SRV, false), ("_rota._tcp.big.example".to_string(), SRV, true)]
    );

    // UDP only: the TCP retry is refused.
    let udp_only = FakeDns::start(|q| vec![answer(q, TRUNCATED, &[], &[], &[])]).await;
    let d = DnsDiscovery::new(udp_only.addr)
        .with_timeout(Duration::from_millis(500))
        .with_service("big", service("srv:_rota._tcp.big.example"));
    let reason = unavailable(d.candidates("big").await);
    assert!(reason.contains("truncated"), "{reason}");
}

/// Concurrent lookups of one service share one refresh; while a refresh waits for a silent server, callers with
/// a last good answer get it at once.
#[tokio::test]
async fn concurrent_lookups_share_a_refresh_and_do_not_wait_with_a_stale_answer() {
    let dns = FakeDns::start(|q| match q.qtype {
        A => vec![answer(q, OK, &[a(5, [10, 0, 0, 1])], &[], &[])],
        _ => vec![answer(q, OK, &[], &[], &[])],
    })
    .await;
    let clock = clock();
    let d = Arc::new(
        DnsDiscovery::new(dns.addr)
            .with_clock(clock.clone())
            .with_timeout(Duration::from_secs(3))
            .with_service("s", service("a:x.example:80")),
    );
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let d = d.clone();
            tokio::spawn(async move { d.candidates("s").await })
        })
        .collect();
    for c in calls {
        assert_eq!(addresses(&c.await.unwrap().unwrap()), ["http://10.0.0.1:80"]);
    }
    assert_eq!(dns.count(), 2, "one A and one AAAA query for 20 callers");

    dns.set(|_| vec![]);
    clock.advance(Duration::from_secs(5));
    let first = {
        let d = d.clone();
        tokio::spawn(async move { d.candidates("s").await })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while dns.count() < 4 {
        assert!(tokio::time::Instant::now() < deadline, "the refresh never asked");
        tokio::task::yield_now().await;
    }
    // The refresh is now waiting for its 3 s timeout.
    assert_eq!(addresses(&d.candidates("s").await.unwrap()), ["http://10.0.0.1:80"]);
    assert!(!first.is_finished(), "the second caller did not wait for the refresh");
    assert_eq!(dns.count(), 4, "no second refresh");
    assert_eq!(addresses(&first.await.unwrap().unwrap()), ["http://10.0.0.1:80"]);
}
