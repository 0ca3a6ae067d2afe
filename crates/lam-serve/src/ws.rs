//! WebSocket connections of the policy server. Framing, masking, fragments, ping / pong and
//! close are tungstenite's; the HTTP upgrade request is read here, so that a request that is
//! not a WebSocket upgrade is answered with an HTTP 400 naming what is missing, one longer
//! than 16 KiB with a 431, and one that never finishes is dropped after a timeout.
//!
//! A message larger than the configured limit is not buffered: tungstenite stops reading it
//! at the limit and [`Incoming::TooLarge`] reports its size; the connection cannot continue
//! inside the unread message, so the caller answers with an error naming the limit and closes
//! with [`CLOSE_TOO_BIG`].

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use anyhow::{Context, Result, bail};
use tungstenite::error::{CapacityError, Error as WsError};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tungstenite::{Message, handshake::derive_accept_key};

/// Longest HTTP upgrade request accepted (all header lines together).
const MAX_HANDSHAKE_BYTES: usize = 16 * 1024;
/// How long a new connection may take to send its upgrade request.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Close codes used by the server.
pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
pub const CLOSE_TOO_BIG: u16 = 1009;
pub const CLOSE_TRY_AGAIN_LATER: u16 = 1013;

/// A complete message from the client.
#[derive(Debug)]
pub enum Incoming {
    Binary(Vec<u8>),
    Text(String),
    /// A message whose payload exceeded the limit; `size` is how many bytes it had when the
    /// limit was passed. The connection must be closed after it.
    TooLarge {
        size: u64,
    },
    /// The client closed the connection (a close frame or end of stream).
    Closed,
}

/// One accepted WebSocket connection.
pub struct WebSocket {
    socket: tungstenite::WebSocket<TcpStream>,
    closed: bool,
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    derive_accept_key(key.trim().as_bytes())
}

fn http_error(stream: &mut TcpStream, status: &str, reason: &str) {
    let body = format!("{reason}\n");
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.flush();
}

impl WebSocket {
    /// Reads the client's HTTP upgrade request from `stream` and accepts it. A request that is
    /// not a WebSocket upgrade is answered with an HTTP 400 naming what is missing.
    pub fn accept(stream: TcpStream, max_message: usize) -> Result<Self> {
        Self::accept_within(stream, max_message, HANDSHAKE_TIMEOUT)
    }

    /// [`WebSocket::accept`], giving the client `timeout` for each read of its request.
    pub fn accept_within(
        stream: TcpStream,
        max_message: usize,
        timeout: std::time::Duration,
    ) -> Result<Self> {
        // A client that connects and sends nothing does not hold its thread for long.
        stream.set_read_timeout(Some(timeout))?;
        let mut writer = stream.try_clone().context("cannot clone the TCP stream")?;
        let mut reader = BufReader::new(stream);
        let mut headers: Vec<(String, String)> = Vec::new();
        let mut request_line = String::new();
        let mut total = 0usize;
        loop {
            let mut line = String::new();
            let n = (&mut reader)
                .take((MAX_HANDSHAKE_BYTES - total) as u64 + 1)
                .read_line(&mut line)
                .context("reading the HTTP upgrade request")?;
            if n == 0 {
                bail!("the client closed the connection during the handshake");
            }
            total += n;
            if total > MAX_HANDSHAKE_BYTES {
                http_error(
                    &mut writer,
                    "431 Request Header Fields Too Large",
                    "the upgrade request exceeds 16 KiB",
                );
                bail!("upgrade request longer than {MAX_HANDSHAKE_BYTES} bytes");
            }
            let line = line.trim_end_matches(['\r', '\n']).to_string();
            if line.is_empty() {
                break;
            }
            if request_line.is_empty() {
                request_line = line;
            } else if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let has_token = |name: &str, token: &str| {
            header(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        };
        let problem = if !request_line.starts_with("GET ") {
            Some(format!(
                "expected a GET WebSocket upgrade request, got `{request_line}`"
            ))
        } else if !has_token("upgrade", "websocket") {
            Some("missing header `Upgrade: websocket` (this is a WebSocket server)".into())
        } else if !has_token("connection", "upgrade") {
            Some("missing header `Connection: Upgrade`".into())
        } else if header("sec-websocket-version") != Some("13") {
            Some(format!(
                "unsupported Sec-WebSocket-Version {:?} (expected 13)",
                header("sec-websocket-version")
            ))
        } else if header("sec-websocket-key").is_none() {
            Some("missing header `Sec-WebSocket-Key`".into())
        } else {
            None
        };
        if let Some(p) = problem {
            http_error(&mut writer, "400 Bad Request", &p);
            bail!("bad upgrade request: {p}");
        }
        let accept = accept_key(header("sec-websocket-key").unwrap_or_default());
        write!(
            writer,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        .context("writing the handshake response")?;
        writer.flush()?;
        // Frames the client sent right behind its request are in the reader's buffer.
        let early = reader.buffer().to_vec();
        let mut config = WebSocketConfig::default();
        config.max_message_size = Some(max_message);
        config.max_frame_size = Some(max_message);
        config.write_buffer_size = 0;
        Ok(Self {
            socket: tungstenite::WebSocket::from_partially_read(
                reader.into_inner(),
                early,
                Role::Server,
                Some(config),
            ),
            closed: false,
        })
    }

    /// Closes the connection if no byte arrives for `idle` (a read waiting that long fails
    /// with an I/O error of kind `WouldBlock` or `TimedOut`, see [`is_timeout`]); a reply the
    /// client does not read for that long fails the same way.
    pub fn set_idle_timeout(&self, idle: std::time::Duration) -> io::Result<()> {
        self.socket.get_ref().set_read_timeout(Some(idle))?;
        self.socket.get_ref().set_write_timeout(Some(idle))
    }

    /// Sends one binary message.
    pub fn send_binary(&mut self, payload: &[u8]) -> io::Result<()> {
        self.socket
            .send(Message::binary(payload.to_vec()))
            .map_err(io::Error::other)
    }

    /// Sends a close frame with `code` and a short reason (cut to the 123 bytes allowed).
    pub fn close(&mut self, code: u16, reason: &str) {
        if self.closed {
            return;
        }
        self.closed = true;
        let mut cut = reason.len().min(123);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason[..cut].to_string().into(),
        };
        let _ = self.socket.close(Some(frame));
        let _ = self.socket.flush();
        let _ = self.socket.get_ref().shutdown(std::net::Shutdown::Write);
    }

    /// [`close`](Self::close), then reads and drops what the client still sends (at most
    /// `max_bytes`, until it stops or the idle timeout passes), so that a client still writing
    /// an oversized message finishes its write and reads the replies instead of failing on a
    /// reset connection.
    pub fn close_draining(&mut self, code: u16, reason: &str, max_bytes: u64) {
        self.close(code, reason);
        let _ = io::copy(&mut self.socket.get_mut().take(max_bytes), &mut io::sink());
    }

    /// Reads until a whole message (or a close) has arrived. Pings are answered; protocol
    /// violations are errors (the caller closes the connection).
    pub fn read_message(&mut self) -> Result<Incoming> {
        loop {
            match self.socket.read() {
                Ok(Message::Binary(b)) => return Ok(Incoming::Binary(b.to_vec())),
                Ok(Message::Text(t)) => return Ok(Incoming::Text(t.to_string())),
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {
                    // The pong is queued by tungstenite; send it now.
                    let _ = self.socket.flush();
                }
                Ok(Message::Close(_)) => {
                    // tungstenite queued the close echo; send it and end.
                    let _ = self.socket.flush();
                    self.closed = true;
                    return Ok(Incoming::Closed);
                }
                Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {
                    return Ok(Incoming::Closed);
                }
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Ok(Incoming::Closed);
                }
                Err(WsError::Protocol(
                    tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                )) => {
                    return Ok(Incoming::Closed);
                }
                Err(WsError::Capacity(CapacityError::MessageTooLong { size, .. })) => {
                    return Ok(Incoming::TooLarge { size: size as u64 });
                }
                Err(e) => return Err(anyhow::Error::new(e).context("reading a message")),
            }
        }
    }
}

/// Whether `e` (from [`WebSocket::read_message`]) is a read that timed out.
pub fn is_timeout(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        let io = c
            .downcast_ref::<io::Error>()
            .or_else(|| match c.downcast_ref::<WsError>() {
                Some(WsError::Io(io)) => Some(io),
                _ => None,
            });
        io.is_some_and(|io| {
            matches!(
                io.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        let n = payload.len();
        if n < 126 {
            f.push(0x80 | n as u8);
        } else {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    /// Connects a client that sends the upgrade request and `frames` at once and returns
    /// all the server wrote; and the server's side of the connection.
    fn connect(frames: Vec<u8>, limit: usize) -> (std::thread::JoinHandle<Vec<u8>>, WebSocket) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            let mut out = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".to_vec();
            out.extend(frames);
            s.write_all(&out).unwrap();
            let mut reply = Vec::new();
            let _ = s.read_to_end(&mut reply);
            reply
        });
        let (stream, _) = listener.accept().unwrap();
        (client, WebSocket::accept(stream, limit).unwrap())
    }

    #[test]
    fn fragments_pings_and_close() {
        let mut out = Vec::new();
        // A message in two fragments with a ping between them, then a close.
        out.extend(frame(false, 0x2, b"hel"));
        out.extend(frame(true, 0x9, b"p"));
        out.extend(frame(true, 0x0, b"lo"));
        out.extend(frame(true, 0x8, &1000u16.to_be_bytes()));
        let (client, mut ws) = connect(out, 100);
        assert!(matches!(ws.read_message().unwrap(), Incoming::Binary(b) if b == b"hello"));
        assert!(matches!(ws.read_message().unwrap(), Incoming::Closed));
        drop(ws);
        let reply = client.join().unwrap();
        let text = String::from_utf8_lossy(&reply);
        assert!(text.starts_with("HTTP/1.1 101"), "{text}");
        assert!(text.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{text}");
        let body = &reply[text.find("\r\n\r\n").unwrap() + 4..];
        // The pong (unmasked, same payload), then the close echo.
        assert_eq!(&body[..3], &[0x8A, 1, b'p']);
        assert_eq!(&body[3..7], &[0x88, 2, 0x03, 0xE8]);
    }

    #[test]
    fn an_oversized_message_is_reported_not_buffered() {
        // 300 bytes over a 100-byte limit, in two fragments.
        let mut out = frame(false, 0x2, &[1u8; 60]);
        out.extend(frame(true, 0x0, &[2u8; 240]));
        let (client, mut ws) = connect(out, 100);
        match ws.read_message().unwrap() {
            Incoming::TooLarge { size } => assert!(size > 100, "{size}"),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        ws.close(CLOSE_TOO_BIG, "message too big");
        drop(ws);
        let reply = client.join().unwrap();
        let text = String::from_utf8_lossy(&reply);
        let body = &reply[text.find("\r\n\r\n").unwrap() + 4..];
        assert_eq!(
            &body[..4],
            &[0x88, 17, 0x03, 0xF1],
            "close 1009 with its reason"
        );
    }

    #[test]
    fn accept_key_matches_rfc6455_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
