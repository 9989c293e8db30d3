//! The identity in a verified peer certificate: subject and subject alternative names.
//!
//! A minimal DER walk over the parts of an X.509 certificate that identify its holder (subject name and the
//! subjectAltName extension). The chain has already been verified by rustls/webpki when this runs; this only
//! reads names, so a small reader is enough and spares the build a full X.509/ASN.1 stack.

use std::net::IpAddr;

/// The verified client (or server) certificate of a connection, as a request extension.
///
/// [`crate::serve`] inserts it into every request of a connection whose peer presented a certificate that the
/// server verified against its client CA; without one the extension is absent. Use the most specific name your
/// policy knows: a SAN (`dns_names`, `uris` such as SPIFFE ids, `emails`) or the subject's `common_name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    /// The subject distinguished name in RFC 4514 form, most specific first (`CN=node-a,O=Acme`).
    pub subject: String,
    /// The subject's (last) common name, when it has one.
    pub common_name: Option<String>,
    /// `dNSName` subject alternative names.
    pub dns_names: Vec<String>,
    /// `uniformResourceIdentifier` subject alternative names (e.g. `spiffe://…`).
    pub uris: Vec<String>,
    /// `rfc822Name` (e-mail) subject alternative names.
    pub emails: Vec<String>,
    /// `iPAddress` subject alternative names.
    pub ip_addresses: Vec<IpAddr>,
    /// The whole certificate (DER), e.g. to pin a fingerprint.
    pub der: Vec<u8>,
}

/// Reads the identity of a DER certificate; `None` when it is not a well-formed X.509 certificate.
pub fn parse_certificate(der: &[u8]) -> Option<PeerCertificate> {
    let mut top = Reader::new(der);
    let (tag, cert) = top.next()?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs) = Reader::new(cert).next()?;
    if tag != SEQUENCE {
        return None;
    }
    let mut tbs = Reader::new(tbs);
    let (mut tag, mut value) = tbs.next()?;
    if tag == 0xA0 {
        (tag, value) = tbs.next()?; // version
    }
    if tag != INTEGER {
        return None; // serial number
    }
    let _ = value;
    let _signature = tbs.expect(SEQUENCE)?;
    let _issuer = tbs.expect(SEQUENCE)?;
    let _validity = tbs.expect(SEQUENCE)?;
    let subject = tbs.expect(SEQUENCE)?;
    let _spki = tbs.expect(SEQUENCE)?;
    let mut peer = PeerCertificate {
        subject: String::new(),
        common_name: None,
        dns_names: Vec::new(),
        uris: Vec::new(),
        emails: Vec::new(),
        ip_addresses: Vec::new(),
        der: der.to_vec(),
    };
    name(subject, &mut peer)?;
    while let Some((tag, value)) = tbs.next() {
        if tag == 0xA3 {
            extensions(value, &mut peer)?;
        }
    }
    Some(peer)
}

const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const BOOLEAN: u8 = 0x01;

const OID_SAN: &[u8] = &[0x55, 0x1D, 0x11];
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
const NAMES: &[(&[u8], &str)] = &[
    (OID_CN, "CN"),
    (&[0x55, 0x04, 0x06], "C"),
    (&[0x55, 0x04, 0x07], "L"),
    (&[0x55, 0x04, 0x08], "ST"),
    (&[0x55, 0x04, 0x09], "STREET"),
    (&[0x55, 0x04, 0x0A], "O"),
    (&[0x55, 0x04, 0x0B], "OU"),
    (&[0x55, 0x04, 0x05], "SERIALNUMBER"),
    (&[0x09, 0x92, 0x26, 0x89, 0x93, 0xF2, 0x2C, 0x64, 0x01, 0x19], "DC"),
    (&[0x09, 0x92, 0x26, 0x89, 0x93, 0xF2, 0x2C, 0x64, 0x01, 0x01], "UID"),
    (&[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x01], "emailAddress"),
];

/// Name ::= SEQUENCE OF RelativeDistinguishedName (SET OF AttributeTypeAndValue).
fn name(der: &[u8], peer: &mut PeerCertificate) -> Option<()> {
    let mut rdns = Vec::new();
    let mut r = Reader::new(der);
    while let Some((tag, set)) = r.next() {
        if tag != SET {
            return None;
        }
        let mut parts = Vec::new();
        let mut s = Reader::new(set);
        while let Some((tag, atv)) = s.next() {
            if tag != SEQUENCE {
                return None;
            }
            let mut a = Reader::new(atv);
            let oid = a.expect(OID)?;
            let (vtag, value) = a.next()?;
            let text = string_value(vtag, value);
            if oid == OID_CN
                && let Some(t) = &text
            {
                peer.common_name = Some(t.clone());
            }
            let key = NAMES.iter().find(|(o, _)| *o == oid).map(|(_, n)| n.to_string()).unwrap_or_else(|| dotted(oid));
            let value = match (&text, NAMES.iter().any(|(o, _)| *o == oid)) {
                (Some(t), true) => escape(t),
                _ => format!("#{}", hex(&tlv(vtag, value))),
            };
            parts.push(format!("{key}={value}"));
        }
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    peer.subject = rdns.join(",");
    Some(())
}

/// Extensions ::= SEQUENCE OF Extension { extnID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING }.
fn extensions(explicit: &[u8], peer: &mut PeerCertificate) -> Option<()> {
    let exts = Reader::new(explicit).expect(SEQUENCE)?;
    let mut r = Reader::new(exts);
    while let Some((tag, ext)) = r.next() {
        if tag != SEQUENCE {
            return None;
        }
        let mut e = Reader::new(ext);
        let oid = e.expect(OID)?;
        let (mut tag, mut value) = e.next()?;
        if tag == BOOLEAN {
            (tag, value) = e.next()?;
        }
        if tag != OCTET_STRING {
            return None;
        }
        if oid == OID_SAN {
            let names = Reader::new(value).expect(SEQUENCE)?;
            let mut n = Reader::new(names);
            while let Some((tag, v)) = n.next() {
                let text = || String::from_utf8(v.to_vec()).ok();
                match tag {
                    0x81 => peer.emails.extend(text()),
                    0x82 => peer.dns_names.extend(text()),
                    0x86 => peer.uris.extend(text()),
                    0x87 => match v.len() {
                        4 => peer.ip_addresses.push(IpAddr::from(<[u8; 4]>::try_from(v).ok()?)),
                        16 => peer.ip_addresses.push(IpAddr::from(<[u8; 16]>::try_from(v).ok()?)),
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
    }
    Some(())
}

fn string_value(tag: u8, v: &[u8]) -> Option<String> {
    match tag {
        // UTF8String, PrintableString, TeletexString (treated as Latin-1 compatible ASCII), IA5String
        0x0C | 0x13 | 0x16 => String::from_utf8(v.to_vec()).ok(),
        0x14 => Some(v.iter().map(|&b| b as char).collect()),
        // BMPString: UTF-16BE
        0x1E if v.len().is_multiple_of(2) => {
            let units: Vec<u16> = v.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

/// RFC 4514 escaping of an attribute value.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, c) in s.chars().enumerate() {
        let edge = (i == 0 && (c == ' ' || c == '#')) || (i + 1 == s.chars().count() && c == ' ');
        if edge || matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=') {
            out.push('\\');
        }
        if c == '\0' {
            out.push_str("\\00");
        } else {
            out.push(c);
        }
    }
    out
}

fn dotted(oid: &[u8]) -> String {
    let mut arcs = Vec::new();
    let mut value: u64 = 0;
    for &b in oid {
        value = (value << 7) | u64::from(b & 0x7F);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
        }
    }
    arcs.iter().map(u64::to_string).collect::<Vec<_>>().join(".")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(value);
    out
}

/// Reads DER TLVs with single-byte tags (all X.509 needs) and definite lengths.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(der: &'a [u8]) -> Self {
        Reader { rest: der }
    }

    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        let (&tag, rest) = self.rest.split_first()?;
        if tag & 0x1F == 0x1F {
            return None; // multi-byte tags do not occur in the parts read here
        }
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7F);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n].iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            rest = &rest[n..];
            len
        };
        if rest.len() < len {
            return None;
        }
        let (value, rest) = rest.split_at(len);
        self.rest = rest;
        Some((tag, value))
    }

    fn expect(&mut self, tag: u8) -> Option<&'a [u8]> {
        match self.next()? {
            (t, v) if t == tag => Some(v),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_subject_and_sans_of_an_rcgen_certificate() {
        let mut params =
            rcgen::CertificateParams::new(vec!["node-a.example".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "Acme, Inc.");
        params.distinguished_name.push(rcgen::DnType::CommonName, "scheduler-1");
        params.subject_alt_names.push(rcgen::SanType::URI("spiffe://acme/rota".try_into().unwrap()));
        params.subject_alt_names.push(rcgen::SanType::Rfc822Name("ops@acme.example".try_into().unwrap()));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let peer = parse_certificate(cert.der()).unwrap();
        assert_eq!(peer.common_name.as_deref(), Some("scheduler-1"));
        assert_eq!(peer.subject, "CN=scheduler-1,O=Acme\\, Inc.");
        assert_eq!(peer.dns_names, vec!["node-a.example"]);
        assert_eq!(peer.ip_addresses, vec!["127.0.0.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(peer.uris, vec!["spiffe://acme/rota"]);
        assert_eq!(peer.emails, vec!["ops@acme.example"]);
        assert_eq!(peer.der, cert.der().to_vec());
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert_eq!(parse_certificate(b""), None);
        assert_eq!(parse_certificate(&[0x30, 0x03, 0x02, 0x01]), None);
        assert_eq!(parse_certificate(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }

    #[test]
    fn oids_and_escapes() {
        assert_eq!(dotted(&[0x55, 0x04, 0x03]), "2.5.4.3");
        assert_eq!(dotted(&[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D]), "1.2.840.113549");
        assert_eq!(escape(" a,b "), "\\ a\\,b\\ ");
        assert_eq!(escape("#x"), "\\#x");
    }
}
