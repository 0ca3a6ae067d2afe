//! The server side of the WebSocket protocol (RFC 6455), as much of it as the policy server
//! uses: the HTTP upgrade handshake, masked client frames (fragmented messages, ping, pong,
//! close) and unmasked server frames.
//!
//! A message larger than the configured limit is not buffered: its payload is read and
//! dropped as it arrives and [`Incoming::TooLarge`] reports its size, so the connection stays
//! usable and the caller can answer with an error naming the limit.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use anyhow::{Context, Result, bail};

/// Appended to the client's key before hashing (RFC 6455, section 1.3).
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Longest HTTP upgrade request accepted (all header lines together).
const MAX_HANDSHAKE_BYTES: usize = 16 * 1024;
/// How long a new connection may take to send its upgrade request.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Close codes used by the server.
pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
pub const CLOSE_TRY_AGAIN_LATER: u16 = 1013;

/// A complete message from the client.
#[derive(Debug)]
pub enum Incoming {
    Binary(Vec<u8>),
    Text(String),
    /// A message whose payload exceeded the limit; `size` is how many bytes it had (or had
    /// when the limit was passed, for a fragmented message still arriving).
    TooLarge {
        size: u64,
    },
    /// The client closed the connection (a close frame or end of stream).
    Closed,
}

/// One accepted WebSocket connection.
pub struct WebSocket {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    max_message: usize,
    closed: bool,
}

/// Standard base64 (with padding) of `bytes`.
pub fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        out.push(TABLE[(n >> 18) as usize & 63] as char);
        out.push(TABLE[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            TABLE[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            TABLE[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut h = sha1_smol::Sha1::new();
    h.update(key.trim().as_bytes());
    h.update(ACCEPT_GUID.as_bytes());
    base64(&h.digest().bytes())
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
        Ok(Self {
            reader,
            writer,
            max_message,
            closed: false,
        })
    }

    fn write_frame(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let mut head = Vec::with_capacity(10);
        head.push(0x80 | opcode);
        let n = payload.len();
        if n < 126 {
            head.push(n as u8);
        } else if n <= u16::MAX as usize {
            head.push(126);
            head.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            head.push(127);
            head.extend_from_slice(&(n as u64).to_be_bytes());
        }
        self.writer.write_all(&head)?;
        self.writer.write_all(payload)?;
        self.writer.flush()
    }

    /// Closes the connection if no byte arrives for `idle` (a read waiting that long fails
    /// with an I/O error of kind `WouldBlock` or `TimedOut`, see [`is_timeout`]); a reply the
    /// client does not read for that long fails the same way.
    pub fn set_idle_timeout(&self, idle: std::time::Duration) -> io::Result<()> {
        self.reader.get_ref().set_read_timeout(Some(idle))?;
        self.writer.set_write_timeout(Some(idle))
    }

    /// Sends one binary message.
    pub fn send_binary(&mut self, payload: &[u8]) -> io::Result<()> {
        self.write_frame(0x2, payload)
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
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(&reason.as_bytes()[..cut]);
        let _ = self.write_frame(0x8, &payload);
        let _ = self.writer.shutdown(std::net::Shutdown::Write);
    }

    /// Reads frames until a whole message (or a close) has arrived. Pings are answered;
    /// protocol violations are errors (the caller closes the connection).
    pub fn read_message(&mut self) -> Result<Incoming> {
        let mut message: Vec<u8> = Vec::new();
        let mut kind: Option<u8> = None;
        let mut dropped: Option<u64> = None;
        loop {
            let mut h = [0u8; 2];
            match self.reader.read_exact(&mut h) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Incoming::Closed),
                Err(e) => return Err(e).context("reading a frame header"),
            }
            let fin = h[0] & 0x80 != 0;
            if h[0] & 0x70 != 0 {
                bail!("frame with reserved bits set (no extension was negotiated)");
            }
            let opcode = h[0] & 0x0f;
            let masked = h[1] & 0x80 != 0;
            let len = match h[1] & 0x7f {
                126 => {
                    let mut b = [0u8; 2];
                    self.reader.read_exact(&mut b)?;
                    u16::from_be_bytes(b) as u64
                }
                127 => {
                    let mut b = [0u8; 8];
                    self.reader.read_exact(&mut b)?;
                    u64::from_be_bytes(b)
                }
                n => n as u64,
            };
            if !masked {
                bail!("client frame without a mask (RFC 6455 requires clients to mask)");
            }
            let mut mask = [0u8; 4];
            self.reader.read_exact(&mut mask)?;
            if opcode >= 0x8 {
                // Control frame: at most 125 bytes, never fragmented.
                if len > 125 || !fin {
                    bail!("control frame of {len} bytes or fragmented (at most 125, unfragmented)");
                }
                let mut payload = vec![0u8; len as usize];
                self.reader.read_exact(&mut payload)?;
                unmask(&mut payload, mask, 0);
                match opcode {
                    0x8 => {
                        let code = if payload.len() >= 2 {
                            u16::from_be_bytes([payload[0], payload[1]])
                        } else {
                            CLOSE_NORMAL
                        };
                        self.close(code, "");
                        return Ok(Incoming::Closed);
                    }
                    0x9 => self.write_frame(0xA, &payload)?,
                    0xA => {}
                    other => bail!("unknown control opcode {other:#x}"),
                }
                continue;
            }
            match (opcode, kind) {
                (0x0, None) => bail!("continuation frame without a message to continue"),
                (0x0, Some(_)) => {}
                (0x1 | 0x2, None) => kind = Some(opcode),
                (0x1 | 0x2, Some(_)) => {
                    bail!("new data frame while a fragmented message is unfinished")
                }
                (other, _) => bail!("unknown data opcode {other:#x}"),
            }
            let so_far = dropped.unwrap_or(message.len() as u64);
            if dropped.is_some() || so_far.saturating_add(len) > self.max_message as u64 {
                // Over the limit: read the payload off the socket without keeping it.
                let n = io::copy(&mut (&mut self.reader).take(len), &mut io::sink())?;
                if n < len {
                    return Ok(Incoming::Closed);
                }
                dropped = Some(so_far.saturating_add(len));
                message = Vec::new();
            } else {
                let start = message.len();
                message.resize(start + len as usize, 0);
                self.reader.read_exact(&mut message[start..])?;
                unmask(&mut message[start..], mask, 0);
            }
            if fin {
                if let Some(size) = dropped {
                    return Ok(Incoming::TooLarge { size });
                }
                return Ok(match kind {
                    Some(0x1) => Incoming::Text(
                        String::from_utf8(message)
                            .context("text message that is not valid UTF-8")?,
                    ),
                    _ => Incoming::Binary(message),
                });
            }
        }
    }
}

/// Whether `e` (from [`WebSocket::read_message`]) is a read that timed out.
pub fn is_timeout(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            )
        })
    })
}

fn unmask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[(i + offset) % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

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

    #[test]
    fn fragments_pings_and_oversized_messages() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            write!(
                s,
                "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            .unwrap();
            let mut out = Vec::new();
            // A message in two fragments with a ping between them.
            out.extend(frame(false, 0x2, b"hel"));
            out.extend(frame(true, 0x9, b"p"));
            out.extend(frame(true, 0x0, b"lo"));
            // 300 bytes over a 100-byte limit, in two fragments; then a small message.
            out.extend(frame(false, 0x2, &[1u8; 60]));
            out.extend(frame(true, 0x0, &[2u8; 240]));
            out.extend(frame(true, 0x2, b"after"));
            out.extend(frame(true, 0x8, &1000u16.to_be_bytes()));
            s.write_all(&out).unwrap();
            let mut reply = Vec::new();
            s.read_to_end(&mut reply).unwrap();
            reply
        });
        let (stream, _) = listener.accept().unwrap();
        let mut ws = WebSocket::accept(stream, 100).unwrap();
        assert!(matches!(ws.read_message().unwrap(), Incoming::Binary(b) if b == b"hello"));
        assert!(matches!(
            ws.read_message().unwrap(),
            Incoming::TooLarge { size: 300 }
        ));
        assert!(matches!(ws.read_message().unwrap(), Incoming::Binary(b) if b == b"after"));
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
    fn accept_key_matches_rfc6455_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
