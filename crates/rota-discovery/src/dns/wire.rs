//! The DNS wire format (RFC 1035), as much of it as discovery needs: encoding one query, decoding a response
//! (header, questions, resource records of every section, with name compression). Decoding never panics: every
//! read is bounds-checked, compression pointers must point strictly backwards (so they cannot loop) and names
//! are limited to 255 octets.

use std::net::{Ipv4Addr, Ipv6Addr};

pub const TYPE_A: u16 = 1;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_SRV: u16 = 33;
pub const CLASS_IN: u16 = 1;

pub const RCODE_NOERROR: u8 = 0;
pub const RCODE_NXDOMAIN: u8 = 3;

/// Maximum length of a name on the wire (RFC 1035 §2.3.4).
const MAX_NAME_LEN: usize = 255;

/// Why a packet could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("packet truncated at offset {0}")]
    Truncated(usize),
    #[error("bad compression pointer at offset {0}")]
    BadPointer(usize),
    #[error("name longer than 255 octets")]
    NameTooLong,
    #[error("unsupported label type at offset {0}")]
    BadLabel(usize),
    #[error("record data of type {rtype} has the wrong length {len}")]
    BadRdata { rtype: u16, len: usize },
    #[error("invalid query name {0:?}")]
    BadQueryName(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub id: u16,
    /// QR bit: this is a response.
    pub response: bool,
    pub opcode: u8,
    /// TC bit: the answer did not fit (retry over TCP).
    pub truncated: bool,
    pub rcode: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// Lower-case, without the trailing dot (`""` is the root).
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(String),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
    },
    /// SOA: only the MINIMUM field (negative-caching TTL) is kept.
    Soa {
        minimum: u32,
    },
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub name: String,
    pub rtype: u16,
    pub class: u16,
    pub ttl: u32,
    pub data: RData,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub header: Header,
    pub questions: Vec<Question>,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
    pub additional: Vec<Record>,
}

/// A standard query (RD set) for `name` of type `qtype`, class IN.
pub fn encode_query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::with_capacity(18 + name.len());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&0x0100u16.to_be_bytes()); // RD
    out.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // AN, NS, AR
    encode_name(name, &mut out)?;
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(out)
}

fn encode_name(name: &str, out: &mut Vec<u8>) -> Result<(), WireError> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    let bad = || WireError::BadQueryName(name.to_string());
    let mut len = 1;
    if !trimmed.is_empty() {
        for label in trimmed.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(bad());
            }
            len += label.len() + 1;
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
    }
    if len > MAX_NAME_LEN {
        return Err(bad());
    }
    out.push(0);
    Ok(())
}

/// Checks that `name` can be sent as a query name (labels of 1 to 63 octets, at most 255 octets on the wire).
pub fn check_name(name: &str) -> Result<(), WireError> {
    encode_name(name, &mut Vec::new())
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or(WireError::Truncated(self.pos))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A possibly compressed name starting at the current position; the position moves past its in-place part.
    fn name(&mut self) -> Result<String, WireError> {
        let (name, end) = read_name(self.buf, self.pos)?;
        self.pos = end;
        Ok(name)
    }
}

/// Decodes the name at `start`; returns it and the offset just after its in-place part (after the first pointer,
/// or after the terminating zero octet).
fn read_name(buf: &[u8], start: usize) -> Result<(String, usize), WireError> {
    let mut name = String::new();
    let mut wire_len = 1; // the terminating root label
    let mut pos = start;
    let mut end = None;
    // Offsets of the labels read so far must only decrease through pointers: a pointer must target an offset
    // strictly before the start of the label sequence it occurs in, so every jump goes backwards and following
    // pointers terminates.
    let mut seq_start = start;
    loop {
        let len = *buf.get(pos).ok_or(WireError::Truncated(pos))?;
        match len & 0xC0 {
            0x00 => {
                if len == 0 {
                    return Ok((name, end.unwrap_or(pos + 1)));
                }
                let len = len as usize;
                let label = buf.get(pos + 1..pos + 1 + len).ok_or(WireError::Truncated(pos))?;
                wire_len += len + 1;
                if wire_len > MAX_NAME_LEN {
                    return Err(WireError::NameTooLong);
                }
                if !name.is_empty() {
                    name.push('.');
                }
                for &b in label {
                    name.push(b.to_ascii_lowercase() as char);
                }
                pos += 1 + len;
            }
            0xC0 => {
                let low = *buf.get(pos + 1).ok_or(WireError::Truncated(pos))?;
                let target = (((len & 0x3F) as usize) << 8) | low as usize;
                if target >= seq_start {
                    return Err(WireError::BadPointer(pos));
                }
                if end.is_none() {
                    end = Some(pos + 2);
                }
                seq_start = target;
                pos = target;
            }
            _ => return Err(WireError::BadLabel(pos)),
        }
    }
}

fn read_record(r: &mut Reader<'_>) -> Result<Record, WireError> {
    let name = r.name()?;
    let rtype = r.u16()?;
    let class = r.u16()?;
    let ttl = r.u32()?;
    let rdlen = r.u16()? as usize;
    let rdata_start = r.pos;
    let rdata = r.take(rdlen)?;
    let bad = || WireError::BadRdata { rtype, len: rdlen };
    let data = match rtype {
        TYPE_A => {
            let b: [u8; 4] = rdata.try_into().map_err(|_| bad())?;
            RData::A(Ipv4Addr::from(b))
        }
        TYPE_AAAA => {
            let b: [u8; 16] = rdata.try_into().map_err(|_| bad())?;
            RData::Aaaa(Ipv6Addr::from(b))
        }
        TYPE_CNAME => {
            let (target, end) = read_name(r.buf, rdata_start)?;
            if end != rdata_start + rdlen {
                return Err(bad());
            }
            RData::Cname(target)
        }
        TYPE_SRV => {
            if rdlen < 7 {
                return Err(bad());
            }
            let mut sub = Reader { buf: r.buf, pos: rdata_start };
            let priority = sub.u16()?;
            let weight = sub.u16()?;
            let port = sub.u16()?;
            let target = sub.name()?;
            if sub.pos != rdata_start + rdlen {
                return Err(bad());
            }
            RData::Srv { priority, weight, port, target }
        }
        TYPE_SOA => {
            let mut sub = Reader { buf: r.buf, pos: rdata_start };
            sub.name()?; // MNAME
            sub.name()?; // RNAME
            sub.take(16)?; // SERIAL, REFRESH, RETRY, EXPIRE
            let minimum = sub.u32()?;
            if sub.pos != rdata_start + rdlen {
                return Err(bad());
            }
            RData::Soa { minimum }
        }
        _ => RData::Other,
    };
    Ok(Record { name, rtype, class, ttl, data })
}

/// Decodes a whole message. Trailing bytes after the counted records are ignored.
pub fn parse_message(buf: &[u8]) -> Result<Message, WireError> {
    let mut r = Reader { buf, pos: 0 };
    let id = r.u16()?;
    let flags = r.u16()?;
    let qd = r.u16()?;
    let an = r.u16()?;
    let ns = r.u16()?;
    let ar = r.u16()?;
    let header = Header {
        id,
        response: flags & 0x8000 != 0,
        opcode: ((flags >> 11) & 0x0F) as u8,
        truncated: flags & 0x0200 != 0,
        rcode: (flags & 0x000F) as u8,
    };
    // Counts come from the packet: never pre-allocate from them.
    let mut questions = Vec::new();
    for _ in 0..qd {
        let name = r.name()?;
        let qtype = r.u16()?;
        let qclass = r.u16()?;
        questions.push(Question { name, qtype, qclass });
    }
    let mut sections: [Vec<Record>; 3] = Default::default();
    for (count, section) in [an, ns, ar].into_iter().zip(sections.iter_mut()) {
        for _ in 0..count {
            section.push(read_record(&mut r)?);
        }
    }
    let [answers, authority, additional] = sections;
    Ok(Message { header, questions, answers, authority, additional })
}

/// `name` in the form the decoder produces (lower case, no trailing dot), for comparisons.
pub fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Header of a response with the given counts.
    fn header(id: u16, flags: u16, qd: u16, an: u16, ns: u16, ar: u16) -> Vec<u8> {
        let mut v = Vec::new();
        for x in [id, flags, qd, an, ns, ar] {
            v.extend_from_slice(&x.to_be_bytes());
        }
        v
    }

    #[test]
    fn query_encoding_is_rfc1035() {
        let q = encode_query(0xABCD, "Ex.com.", TYPE_SRV).unwrap();
        assert_eq!(
            q,
            [0xAB, 0xCD, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 2, b'E', b'x', 3, b'c', b'o', b'm', 0, 0, 33, 0, 1]
        );
        assert!(encode_query(1, "a..b", TYPE_A).is_err());
        assert!(encode_query(1, &"x".repeat(64), TYPE_A).is_err());
        let long = vec!["abcdefghi"; 26].join(".");
        assert!(encode_query(1, &long, TYPE_A).is_err(), "260 octets on the wire");
    }

    #[test]
    fn decodes_an_answer_with_compression() {
        let mut p = header(7, 0x8180, 1, 1, 0, 0);
        p.extend_from_slice(&[3, b'W', b'w', b'w', 2, b'e', b'x', 0, 0, 1, 0, 1]); // question at 12
        p.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 1]);
        let m = parse_message(&p).unwrap();
        assert_eq!(m.header, Header { id: 7, response: true, opcode: 0, truncated: false, rcode: 0 });
        assert_eq!(m.questions[0].name, "www.ex");
        assert_eq!(m.answers[0].name, "www.ex");
        assert_eq!(m.answers[0].ttl, 60);
        assert_eq!(m.answers[0].data, RData::A(Ipv4Addr::new(10, 0, 0, 1)));
    }

    #[test]
    fn every_truncation_of_a_valid_packet_is_an_error() {
        let mut p = header(7, 0x8180, 1, 2, 0, 0);
        p.extend_from_slice(&[4, b'_', b's', b'v', b'c', 2, b'e', b'x', 0, 0, 33, 0, 1]);
        // SRV 10 5 8080 node.<ptr to "ex" at 17>
        p.extend_from_slice(&[0xC0, 12, 0, 33, 0, 1, 0, 0, 0, 30, 0, 13, 0, 10, 0, 5, 0x1F, 0x90]);
        p.extend_from_slice(&[4, b'n', b'o', b'd', b'e', 0xC0, 17]);
        p.extend_from_slice(&[0xC0, 12, 0, 28, 0, 1, 0, 0, 0, 30, 0, 16]);
        p.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        let m = parse_message(&p).unwrap();
        assert_eq!(m.answers[0].data, RData::Srv { priority: 10, weight: 5, port: 8080, target: "node.ex".into() });
        assert_eq!(m.answers[1].data, RData::Aaaa(Ipv6Addr::LOCALHOST));
        for n in 0..p.len() {
            assert!(parse_message(&p[..n]).is_err(), "prefix of {n} bytes decoded");
        }
    }

    #[test]
    fn pointer_loops_and_forward_pointers_are_rejected() {
        // A question name that is a pointer to itself.
        let mut p = header(1, 0x8180, 1, 0, 0, 0);
        p.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
        assert_eq!(parse_message(&p), Err(WireError::BadPointer(12)));
        // Two labels pointing at each other: 12: "a" -> ptr 17, 17: "b" -> ptr 12.
        let mut p = header(1, 0x8180, 1, 0, 0, 0);
        p.extend_from_slice(&[1, b'a', 0xC0, 17, 0, 1, b'b', 0xC0, 12]);
        assert!(matches!(parse_message(&p), Err(WireError::BadPointer(_))));
        // A pointer into the header region that loops back via a label (12 -> 0 region is a backwards jump
        // but then the name must end before reaching the pointer again).
        let mut p = header(0xC00C, 0x8180, 1, 0, 0, 0);
        p.extend_from_slice(&[0xC0, 0, 0, 1, 0, 1]);
        assert!(parse_message(&p).is_err());
        // Reserved label types 0x40 / 0x80.
        let mut p = header(1, 0x8180, 1, 0, 0, 0);
        p.extend_from_slice(&[0x41, 0, 0, 1, 0, 1]);
        assert_eq!(parse_message(&p), Err(WireError::BadLabel(12)));
    }

    #[test]
    fn overlong_names_and_bad_rdata_are_rejected() {
        // A name built from 5 chained 63-octet label runs exceeds 255 octets.
        let mut p = header(1, 0x8180, 1, 0, 0, 0);
        for _ in 0..5 {
            p.push(63);
            p.extend_from_slice(&[b'x'; 63]);
        }
        p.push(0);
        p.extend_from_slice(&[0, 1, 0, 1]);
        assert_eq!(parse_message(&p), Err(WireError::NameTooLong));
        // An A record with 3 bytes of data.
        let mut p = header(1, 0x8180, 0, 1, 0, 0);
        p.extend_from_slice(&[0, 0, 1, 0, 1, 0, 0, 0, 1, 0, 3, 1, 2, 3]);
        assert_eq!(parse_message(&p), Err(WireError::BadRdata { rtype: 1, len: 3 }));
        // A record claiming more data than the packet has.
        let mut p = header(1, 0x8180, 0, 1, 0, 0);
        p.extend_from_slice(&[0, 0, 1, 0, 1, 0, 0, 0, 1, 0xFF, 0xFF, 1, 2, 3, 4]);
        assert!(matches!(parse_message(&p), Err(WireError::Truncated(_))));
        // Counts far beyond the packet.
        assert!(parse_message(&header(1, 0x8180, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF)).is_err());
        // SRV whose target runs past its rdata.
        let mut p = header(1, 0x8180, 0, 1, 0, 0);
        p.extend_from_slice(&[0, 0, 33, 0, 1, 0, 0, 0, 1, 0, 7, 0, 1, 0, 1, 0, 80, 1, b'x', 0]);
        assert_eq!(parse_message(&p), Err(WireError::BadRdata { rtype: 33, len: 7 }));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        for round in 0..20_000 {
            let len = (round % 80) + 1;
            let mut p = Vec::with_capacity(len);
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                p.push(seed as u8);
            }
            let _ = parse_message(&p);
        }
    }
}
