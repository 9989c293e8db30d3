//! [`DnsDiscovery`]: executor nodes from DNS A/AAAA or SRV records, through a small built-in client.

mod client;
mod wire;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rota_core::{Candidate, Discovery, DiscoveryError};

use crate::clock::{self, Clock, SystemClock};
use crate::{Protocol, valid_scheme};
use wire::{Message, RData};

/// Default per-query timeout.
pub const DEFAULT_DNS_TIMEOUT: Duration = Duration::from_secs(2);
/// Shortest time an answer is cached, whatever its TTL (also the retry interval after a failed refresh).
pub const MIN_CACHE_TTL: Duration = Duration::from_secs(1);
/// Longest time an answer is cached, whatever its TTL.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(60);
/// Cache time of an empty answer (NXDOMAIN or no records) that carries no SOA record to say otherwise.
const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(5);

/// What to look up for a service.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DnsTarget {
    /// `a:HOST:PORT`: every A and AAAA record of `HOST`, each a node at `PORT`.
    Addr { host: String, port: u16 },
    /// `srv:_service._proto.name`: every SRV record of the name; targets resolved through the additional section
    /// or A/AAAA queries.
    Srv { name: String },
}

/// Why a DNS target string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid DNS target {input:?}: {reason}")]
pub struct DnsTargetError {
    pub input: String,
    pub reason: String,
}

impl FromStr for DnsTarget {
    type Err = DnsTargetError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| DnsTargetError { input: input.to_string(), reason: reason.to_string() };
        let check = |name: &str| {
            if name.is_empty() || name == "." {
                return Err(err("the host name is empty"));
            }
            wire::check_name(name).map_err(|_| err("not a valid DNS name (labels of 1 to 63 octets, 253 in all)"))
        };
        if let Some(rest) = input.strip_prefix("a:") {
            let (host, port) = rest.rsplit_once(':').ok_or_else(|| err("expected a:HOST:PORT"))?;
            let port: u16 = port.parse().map_err(|_| err("the port must be a number from 1 to 65535"))?;
            if port == 0 {
                return Err(err("the port must be a number from 1 to 65535"));
            }
            check(host)?;
            Ok(DnsTarget::Addr { host: wire::normalize(host), port })
        } else if let Some(name) = input.strip_prefix("srv:") {
            check(name)?;
            Ok(DnsTarget::Srv { name: wire::normalize(name) })
        } else {
            Err(err("expected a:HOST:PORT or srv:_service._proto.name"))
        }
    }
}

impl fmt::Display for DnsTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsTarget::Addr { host, port } => write!(f, "a:{host}:{port}"),
            DnsTarget::Srv { name } => write!(f, "srv:{name}"),
        }
    }
}

/// One service answered from DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsService {
    pub target: DnsTarget,
    /// URL scheme of the candidate addresses (`SCHEME://IP:PORT`).
    pub scheme: String,
    pub protocol: Protocol,
}

impl DnsService {
    /// A service of `target` with scheme `http` and protocol `http`.
    pub fn new(target: DnsTarget) -> DnsService {
        DnsService { target, scheme: "http".into(), protocol: Protocol::Http }
    }
}

/// The first usable `nameserver` line of a resolv.conf text (port 53).
pub fn parse_resolv_conf(text: &str) -> Option<SocketAddr> {
    text.lines()
        .map(|l| l.split(['#', ';']).next().unwrap_or(""))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next()).flatten()
        })
        .find_map(|addr| addr.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
}

/// The first nameserver of `/etc/resolv.conf`, if any.
pub fn system_nameserver() -> Option<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf").ok().and_then(|t| parse_resolv_conf(&t))
}

/// One resolved node before it becomes a candidate.
#[derive(Debug, Clone)]
struct Node {
    addr: SocketAddr,
    weight: u32,
}

/// An answer and how long it may be cached.
struct Lookup<T> {
    value: T,
    ttl: Duration,
}

struct CacheEntry {
    /// The last good answer, or the last error when there never was one.
    result: Result<Vec<Candidate>, String>,
    fetched_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

struct ServiceSlot {
    service: DnsService,
    cache: std::sync::Mutex<Option<CacheEntry>>,
    /// Held across a refresh, so concurrent dispatches of one service send one set of queries.
    refreshing: tokio::sync::Mutex<()>,
}

/// Executor nodes from DNS: each configured service is an A/AAAA or SRV lookup ([`DnsTarget`]).
///
/// Answers are cached for their TTL clamped to [[`MIN_CACHE_TTL`], [`MAX_CACHE_TTL`]]. When a refresh fails the
/// last good answer is served (stale) and the refresh is retried after [`MIN_CACHE_TTL`]; while a refresh is
/// running, callers that have a last good answer get it without waiting. NXDOMAIN (or no
/// records) is an empty list; a failure with no earlier answer is [`DiscoveryError::Unavailable`]. The order is
/// stable: SRV priority, then target name and port, then address (IPv4 before IPv6); duplicates are dropped.
pub struct DnsDiscovery {
    nameserver: SocketAddr,
    timeout: Duration,
    clock: Arc<dyn Clock>,
    services: HashMap<String, ServiceSlot>,
}

impl DnsDiscovery {
    /// A source asking `nameserver` (UDP, TCP for truncated answers) with the default timeout and no services.
    pub fn new(nameserver: SocketAddr) -> DnsDiscovery {
        DnsDiscovery {
            nameserver,
            timeout: DEFAULT_DNS_TIMEOUT,
            clock: Arc::new(SystemClock),
            services: HashMap::new(),
        }
    }

    /// The per-query timeout (an SRV lookup may need a second round of queries for its targets).
    pub fn with_timeout(mut self, timeout: Duration) -> DnsDiscovery {
        self.timeout = timeout;
        self
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> DnsDiscovery {
        self.clock = clock;
        self
    }

    /// Adds (or replaces) a service.
    pub fn with_service(mut self, name: impl Into<String>, service: DnsService) -> DnsDiscovery {
        self.services.insert(
            name.into(),
            ServiceSlot { service, cache: std::sync::Mutex::new(None), refreshing: tokio::sync::Mutex::new(()) },
        );
        self
    }

    pub fn nameserver(&self) -> SocketAddr {
        self.nameserver
    }

    async fn query(&self, name: &str, qtype: u16) -> Result<Message, String> {
        let msg = client::query(self.nameserver, name, qtype, self.timeout).await.map_err(|e| e.to_string())?;
        match msg.header.rcode {
            wire::RCODE_NOERROR | wire::RCODE_NXDOMAIN => Ok(msg),
            rcode => Err(format!("nameserver {} answered {} for {name}", self.nameserver, rcode_name(rcode))),
        }
    }

    /// Every address of `host` (A and AAAA, following CNAMEs in the answer), sorted. The TTL is that of the
    /// records found; an empty half (an IPv4-only host's AAAA) does not shorten it.
    async fn addresses(&self, host: &str) -> Result<Lookup<BTreeSet<IpAddr>>, String> {
        let (a, aaaa) = tokio::join!(self.query(host, wire::TYPE_A), self.query(host, wire::TYPE_AAAA));
        let mut value = BTreeSet::new();
        let mut ttl: Option<Duration> = None;
        let mut negative = MAX_CACHE_TTL;
        for msg in [a?, aaaa?] {
            let (ips, t) = addresses_in(&msg, host);
            if ips.is_empty() {
                negative = negative.min(t);
            } else {
                ttl = Some(ttl.map_or(t, |x| x.min(t)));
                value.extend(ips);
            }
        }
        Ok(Lookup { value, ttl: ttl.unwrap_or(negative) })
    }

    async fn resolve(&self, target: &DnsTarget) -> Result<Lookup<Vec<Node>>, String> {
        match target {
            DnsTarget::Addr { host, port } => {
                let found = self.addresses(host).await?;
                let nodes = found.value.into_iter().map(|ip| Node { addr: SocketAddr::new(ip, *port), weight: 1 });
                Ok(Lookup { value: nodes.collect(), ttl: found.ttl })
            }
            DnsTarget::Srv { name } => self.resolve_srv(name).await,
        }
    }

    async fn resolve_srv(&self, name: &str) -> Result<Lookup<Vec<Node>>, String> {
        let msg = self.query(name, wire::TYPE_SRV).await?;
        if msg.header.rcode == wire::RCODE_NXDOMAIN {
            return Ok(Lookup { value: Vec::new(), ttl: negative_ttl(&msg) });
        }
        let owners = cname_chain(&msg, name);
        let mut ttl = MAX_CACHE_TTL;
        let mut srvs = Vec::new();
        for r in &msg.answers {
            if let RData::Srv { priority, weight, port, target } = &r.data
                && owners.contains(&r.name)
            {
                ttl = ttl.min(Duration::from_secs(r.ttl.into()));
                // A target of "." means "no service here" (RFC 2782).
                if !target.is_empty() {
                    srvs.push((*priority, target.clone(), *port, *weight));
                }
            }
        }
        if srvs.is_empty() {
            return Ok(Lookup { value: Vec::new(), ttl: negative_ttl(&msg).min(ttl) });
        }
        srvs.sort();

        // Addresses of each target: from the additional section, else asked for.
        let mut targets: HashMap<String, BTreeSet<IpAddr>> = HashMap::new();
        for (_, target, _, _) in &srvs {
            let mut ips = BTreeSet::new();
            for r in msg.additional.iter().filter(|r| &r.name == target) {
                match r.data {
                    RData::A(ip) => ips.insert(IpAddr::V4(ip)),
                    RData::Aaaa(ip) => ips.insert(IpAddr::V6(ip)),
                    _ => continue,
                };
                ttl = ttl.min(Duration::from_secs(r.ttl.into()));
            }
            if !ips.is_empty() {
                targets.insert(target.clone(), ips);
            }
        }
        let missing: Vec<String> = srvs
            .iter()
            .map(|(_, t, _, _)| t.clone())
            .filter(|t| !targets.contains_key(t))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let looked_up = futures::future::try_join_all(missing.iter().map(|t| self.addresses(t))).await?;
        for (target, found) in missing.into_iter().zip(looked_up) {
            ttl = ttl.min(found.ttl);
            targets.insert(target, found.value);
        }

        let nodes = srvs
            .iter()
            .flat_map(|(_, target, port, weight)| {
                let ips = targets.get(target).into_iter().flatten();
                ips.map(|ip| Node { addr: SocketAddr::new(*ip, *port), weight: u32::from(*weight).max(1) })
            })
            .collect();
        Ok(Lookup { value: nodes, ttl })
    }
}

fn candidates_of(service: &DnsService, nodes: Vec<Node>) -> Vec<Candidate> {
    let mut seen = HashSet::new();
    nodes
        .into_iter()
        .filter(|n| seen.insert(n.addr))
        .map(|n| {
            let address = format!("{}://{}", service.scheme, n.addr);
            Candidate {
                id: address.clone(),
                address,
                protocol: service.protocol.as_str().to_string(),
                labels: Default::default(),
                weight: n.weight,
                capacity: 0,
                draining: false,
            }
        })
        .collect()
}

/// `name` and every name it is a CNAME of (in the answer section), normalized.
fn cname_chain(msg: &Message, name: &str) -> HashSet<String> {
    let mut owners = HashSet::from([wire::normalize(name)]);
    // Bounded by the number of records: each round adds at least one name or stops.
    for _ in 0..msg.answers.len() {
        let before = owners.len();
        for r in &msg.answers {
            if let RData::Cname(target) = &r.data
                && owners.contains(&r.name)
            {
                owners.insert(target.clone());
            }
        }
        if owners.len() == before {
            break;
        }
    }
    owners
}

/// The addresses answering `host` in `msg`, and the TTL of the answer.
fn addresses_in(msg: &Message, host: &str) -> (Vec<IpAddr>, Duration) {
    let owners = cname_chain(msg, host);
    let mut ttl = MAX_CACHE_TTL;
    let mut ips = Vec::new();
    for r in msg.answers.iter().filter(|r| owners.contains(&r.name)) {
        let ip = match r.data {
            RData::A(ip) => IpAddr::V4(ip),
            RData::Aaaa(ip) => IpAddr::V6(ip),
            RData::Cname(_) => {
                ttl = ttl.min(Duration::from_secs(r.ttl.into()));
                continue;
            }
            _ => continue,
        };
        ttl = ttl.min(Duration::from_secs(r.ttl.into()));
        ips.push(ip);
    }
    if ips.is_empty() { (ips, negative_ttl(msg)) } else { (ips, ttl) }
}

/// How long an empty answer may be cached: the SOA's negative TTL (RFC 2308), else a default.
fn negative_ttl(msg: &Message) -> Duration {
    msg.authority
        .iter()
        .find_map(|r| match r.data {
            RData::Soa { minimum } => Some(Duration::from_secs(r.ttl.min(minimum).into())),
            _ => None,
        })
        .unwrap_or(DEFAULT_NEGATIVE_TTL)
}

fn rcode_name(rcode: u8) -> String {
    match rcode {
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        n => format!("RCODE {n}"),
    }
}

impl DnsDiscovery {
    /// The cached answer of `slot` if it is fresh at `now`.
    fn cached(slot: &ServiceSlot, now: DateTime<Utc>) -> Option<Result<Vec<Candidate>, String>> {
        let cache = slot.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.as_ref().filter(|e| clock::fresh(now, e.fetched_at, e.expires_at)).map(|e| e.result.clone())
    }

    /// The last good answer of `slot`, however old.
    fn last_good(slot: &ServiceSlot) -> Option<Vec<Candidate>> {
        let cache = slot.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.as_ref().and_then(|e| e.result.as_ref().ok()).cloned()
    }

    async fn refresh(&self, service: &str, slot: &ServiceSlot) -> Result<Vec<Candidate>, String> {
        let now = self.clock.now();
        let (result, ttl) = match self.resolve(&slot.service.target).await {
            Ok(found) => {
                let ttl = found.ttl.clamp(MIN_CACHE_TTL, MAX_CACHE_TTL);
                let candidates = candidates_of(&slot.service, found.value);
                tracing::debug!(service, target = %slot.service.target, nodes = candidates.len(), ?ttl, "DNS discovery");
                (Ok(candidates), ttl)
            }
            Err(reason) => {
                let reason = format!("DNS lookup of {} failed: {reason}", slot.service.target);
                let stale = DnsDiscovery::last_good(slot);
                if stale.is_some() {
                    tracing::warn!(service, %reason, "serving the last good DNS answer");
                } else {
                    tracing::warn!(service, %reason, "DNS discovery failed");
                }
                (stale.ok_or(reason), MIN_CACHE_TTL)
            }
        };
        let entry = CacheEntry { result: result.clone(), fetched_at: now, expires_at: clock::add(now, ttl) };
        *slot.cache.lock().unwrap_or_else(|e| e.into_inner()) = Some(entry);
        result
    }
}

#[async_trait]
impl Discovery for DnsDiscovery {
    async fn candidates(&self, service: &str) -> Result<Vec<Candidate>, DiscoveryError> {
        let slot = self.services.get(service).ok_or_else(|| DiscoveryError::UnknownService(service.to_string()))?;
        let unavailable = |reason| DiscoveryError::Unavailable { service: service.to_string(), reason };
        if let Some(result) = DnsDiscovery::cached(slot, self.clock.now()) {
            return result.map_err(unavailable);
        }
        // One refresh at a time per service. While one runs, callers with a last good answer get it at once
        // instead of waiting for the refresh (which may be waiting for a timeout); the others wait for it.
        let _refreshing = match slot.refreshing.try_lock() {
            Ok(guard) => guard,
            Err(_) => {
                if let Some(stale) = DnsDiscovery::last_good(slot) {
                    return Ok(stale);
                }
                let guard = slot.refreshing.lock().await;
                if let Some(result) = DnsDiscovery::cached(slot, self.clock.now()) {
                    return result.map_err(unavailable);
                }
                guard
            }
        };
        // Another caller may have finished a refresh between the first check and taking the lock.
        if let Some(result) = DnsDiscovery::cached(slot, self.clock.now()) {
            return result.map_err(unavailable);
        }
        self.refresh(service, slot).await.map_err(unavailable)
    }
}

/// Checks a scheme for [`DnsService::scheme`].
pub(crate) fn check_scheme(scheme: &str) -> Result<(), String> {
    if valid_scheme(scheme) {
        Ok(())
    } else {
        Err(format!("invalid scheme {scheme:?}: expected e.g. \"http\", \"https\" or \"grpc\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_print() {
        assert_eq!(
            "a:Exec.Example.com.:8080".parse::<DnsTarget>().unwrap(),
            DnsTarget::Addr { host: "exec.example.com".into(), port: 8080 }
        );
        let srv: DnsTarget = "srv:_rota._tcp.example.com".parse().unwrap();
        assert_eq!(srv.to_string(), "srv:_rota._tcp.example.com");
        for bad in ["", "a:host", "a:host:0", "a:host:99999", "a::80", "srv:", "srv:a..b", "aaaa:x:1", "host:80"] {
            assert!(bad.parse::<DnsTarget>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn resolv_conf() {
        let text = "# comment\nsearch x\nnameserver fe80::1%eth0\nnameserver 10.0.0.2 # second\nnameserver 10.0.0.3\n";
        assert_eq!(parse_resolv_conf(text), Some("10.0.0.2:53".parse().unwrap()));
        assert_eq!(parse_resolv_conf("nameserver ::1\n"), Some("[::1]:53".parse().unwrap()));
        assert_eq!(parse_resolv_conf("search x\n"), None);
    }
}
