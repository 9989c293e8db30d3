//! One DNS query over UDP, retried over TCP when the UDP answer is truncated.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::wire::{self, Message, WireError};

/// Why a query got no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("no answer from nameserver {server} within {timeout:?}")]
    Timeout { server: SocketAddr, timeout: Duration },
    #[error("cannot reach nameserver {server}: {reason}")]
    Io { server: SocketAddr, reason: String },
    #[error("cannot encode the query: {0}")]
    Encode(WireError),
    #[error("the answer was truncated over UDP and the TCP retry to {server} failed: {reason}")]
    TruncatedTcpFailed { server: SocketAddr, reason: String },
    #[error("malformed answer over TCP from {server}: {error}")]
    Malformed { server: SocketAddr, error: WireError },
}

fn io(server: SocketAddr, e: std::io::Error) -> QueryError {
    QueryError::Io { server, reason: e.to_string() }
}

/// Whether `msg` answers the query `id` for `name`/`qtype`.
fn answers(msg: &Message, id: u16, name: &str, qtype: u16) -> bool {
    msg.header.id == id
        && msg.header.response
        && msg.header.opcode == 0
        && (msg.questions.is_empty()
            || msg.questions.iter().any(|q| q.qtype == qtype && q.name == wire::normalize(name)))
}

/// Sends one query for `name`/`qtype` to `server` and returns the response. Packets that do not decode or do not
/// answer this query (wrong id, not a response, other question) are ignored; the wait ends at `timeout`. A
/// truncated UDP answer is asked again over TCP within the same deadline.
pub async fn query(server: SocketAddr, name: &str, qtype: u16, timeout: Duration) -> Result<Message, QueryError> {
    let id: u16 = rand::random();
    let packet = wire::encode_query(id, name, qtype).map_err(QueryError::Encode)?;
    let deadline = tokio::time::Instant::now() + timeout;
    let timed_out = || QueryError::Timeout { server, timeout };

    let udp = async {
        let bind: SocketAddr =
            if server.is_ipv4() { (Ipv4Addr::UNSPECIFIED, 0).into() } else { (Ipv6Addr::UNSPECIFIED, 0).into() };
        let socket = UdpSocket::bind(bind).await.map_err(|e| io(server, e))?;
        socket.connect(server).await.map_err(|e| io(server, e))?;
        socket.send(&packet).await.map_err(|e| io(server, e))?;
        let mut buf = vec![0u8; 65_535];
        loop {
            // A connected UDP socket reports an ICMP "port unreachable" as an error here: nothing listens.
            let n = socket.recv(&mut buf).await.map_err(|e| io(server, e))?;
            match wire::parse_message(&buf[..n]) {
                Ok(msg) if answers(&msg, id, name, qtype) => return Ok(msg),
                Ok(_) => tracing::debug!(%server, name, "ignoring a DNS packet that does not answer the query"),
                Err(e) => tracing::debug!(%server, name, error = %e, "ignoring a malformed DNS packet"),
            }
        }
    };
    let msg = tokio::time::timeout_at(deadline, udp).await.map_err(|_| timed_out())??;
    if !msg.header.truncated {
        return Ok(msg);
    }

    tracing::debug!(%server, name, "DNS answer truncated over UDP; retrying over TCP");
    let tcp = async {
        let mut stream = TcpStream::connect(server).await.map_err(|e| e.to_string())?;
        let mut framed = Vec::with_capacity(packet.len() + 2);
        framed.extend_from_slice(&(packet.len() as u16).to_be_bytes());
        framed.extend_from_slice(&packet);
        stream.write_all(&framed).await.map_err(|e| e.to_string())?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(buf)
    };
    let buf = match tokio::time::timeout_at(deadline, tcp).await {
        Ok(Ok(buf)) => buf,
        Ok(Err(reason)) => return Err(QueryError::TruncatedTcpFailed { server, reason }),
        Err(_) => {
            return Err(QueryError::TruncatedTcpFailed { server, reason: format!("no answer within {timeout:?}") });
        }
    };
    let msg = wire::parse_message(&buf).map_err(|error| QueryError::Malformed { server, error })?;
    if !answers(&msg, id, name, qtype) {
        return Err(QueryError::TruncatedTcpFailed {
            server,
            reason: "the TCP answer does not match the query".into(),
        });
    }
    Ok(msg)
}
