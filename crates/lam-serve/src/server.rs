//! The accept loop: one thread per connection, all sharing the loaded model; one session
//! per connection. Every request gets a reply; a request that fails gets an error reply
//! naming the problem, and the connection stays open. Calls into the model run under
//! `catch_unwind`, so even a panic inside burn becomes an error reply (and clears that
//! connection's episode) rather than taking the server down.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use rmpv::Value;
use tracing::{info, warn};

use crate::backend::{Backend, Session, ms};
use crate::protocol::{self, Request};
use crate::ws::{self, Incoming, WebSocket};

/// Server limits.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Largest request accepted, in bytes.
    pub max_message: usize,
    /// Connections served at once; more are refused with a close frame naming the limit.
    pub max_connections: usize,
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}

fn envelope(
    ok: bool,
    call: Option<&str>,
    id: Option<Value>,
    mut rest: Vec<(&str, Value)>,
) -> Value {
    let mut pairs = vec![
        ("ok", Value::Boolean(ok)),
        ("call", call.map_or(Value::Nil, Value::from)),
    ];
    if let Some(id) = id {
        pairs.push(("id", id));
    }
    pairs.append(&mut rest);
    protocol::map(pairs)
}

/// An error reply.
pub fn error_reply(call: Option<&str>, id: Option<Value>, message: &str) -> Value {
    envelope(false, call, id, vec![("error", Value::from(message))])
}

/// Answers one request message (never panics).
pub fn handle<'a>(
    backend: &'a Backend<'a>,
    session: &mut Session<'a>,
    conn: u64,
    bytes: &[u8],
    opts: &ServerOptions,
) -> Value {
    let t0 = Instant::now();
    let Request { call, id, fields } = match protocol::parse_request(bytes) {
        Ok(r) => r,
        Err(e) => {
            warn!("conn {conn}: bad request: {}", e.message);
            return error_reply(e.call.as_deref(), e.id, &e.message);
        }
    };
    let result = match call.as_str() {
        "info" => {
            if let Some((k, _)) = fields.first() {
                Err(format!(
                    "`info` has an unknown field `{k}` (it takes no fields)"
                ))
            } else {
                Ok(vec![(
                    "info",
                    crate::backend::to_msgpack(&backend.info(opts.max_message)),
                )])
            }
        }
        "reset" | "act" => {
            let run = AssertUnwindSafe(|| {
                if call == "reset" {
                    backend.reset(session, fields)
                } else {
                    backend.act(session, fields)
                }
            });
            match catch_unwind(run) {
                Ok(r) => r,
                Err(p) => {
                    *session = Session::Idle;
                    Err(format!(
                        "internal error in `{call}`: {}; this connection's episode was cleared, call reset",
                        panic_message(p.as_ref())
                    ))
                }
            }
        }
        other => Err(format!(
            "unknown call `{other}` (expected info, reset or act)"
        )),
    };
    let total = ms(t0);
    match result {
        Ok(fields) => {
            info!("conn {conn}: {call} ok in {total:.1} ms");
            envelope(true, Some(&call), id, fields)
        }
        Err(message) => {
            warn!("conn {conn}: {call} failed in {total:.1} ms: {message}");
            error_reply(Some(&call), id, &message)
        }
    }
}

fn serve_connection<'a>(
    backend: &'a Backend<'a>,
    stream: TcpStream,
    conn: u64,
    opts: &ServerOptions,
) -> Result<()> {
    let peer = stream.peer_addr().ok();
    let _ = stream.set_nodelay(true);
    let mut socket = WebSocket::accept(stream, opts.max_message)?;
    info!("conn {conn}: opened from {peer:?}");
    let mut session = Session::Idle;
    loop {
        let msg = match socket.read_message() {
            Ok(m) => m,
            Err(e) => {
                warn!("conn {conn}: closing: {e:#}");
                socket.close(ws::CLOSE_PROTOCOL_ERROR, &format!("{e:#}"));
                return Ok(());
            }
        };
        let reply = match msg {
            Incoming::Closed => {
                info!("conn {conn}: closed");
                return Ok(());
            }
            Incoming::Binary(bytes) => handle(backend, &mut session, conn, &bytes, opts),
            Incoming::Text(t) => error_reply(
                None,
                None,
                &format!(
                    "got a text message of {} bytes; requests are msgpack maps in binary messages",
                    t.len()
                ),
            ),
            Incoming::TooLarge { size } => {
                warn!("conn {conn}: message of {size} bytes over the limit");
                error_reply(
                    None,
                    None,
                    &format!(
                        "message of {size} bytes exceeds the server's limit of {} bytes (lam serve --max-message-mb)",
                        opts.max_message
                    ),
                )
            }
        };
        if let Err(e) = socket.send_binary(&protocol::encode(&reply)) {
            warn!("conn {conn}: cannot send the reply, closing: {e}");
            return Ok(());
        }
    }
}

/// Binds `addr`, prints `listening on ws://ADDR` to stdout (the port chosen when 0 was
/// asked for) and serves until the process ends.
pub fn serve<'a>(backend: &'a Backend<'a>, addr: SocketAddr, opts: &ServerOptions) -> Result<()>
where
    Backend<'a>: Sync,
{
    let listener = TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    println!("listening on ws://{local}");
    std::io::stdout().flush()?;
    info!("serving on ws://{local}");
    let active = AtomicUsize::new(0);
    let next_id = AtomicU64::new(1);
    std::thread::scope(|scope| {
        for stream in listener.incoming() {
            let stream = match stream {
                Ok(s) => s,
                Err(e) => {
                    warn!("accept failed: {e}");
                    continue;
                }
            };
            let conn = next_id.fetch_add(1, Ordering::Relaxed);
            if active.fetch_add(1, Ordering::SeqCst) >= opts.max_connections {
                active.fetch_sub(1, Ordering::SeqCst);
                warn!(
                    "conn {conn}: refused, {} connections already open",
                    opts.max_connections
                );
                let limit = opts.max_connections;
                let spawned = std::thread::Builder::new().spawn(move || {
                    if let Ok(mut s) = WebSocket::accept(stream, 1024) {
                        s.close(
                            ws::CLOSE_TRY_AGAIN_LATER,
                            &format!("server busy: {limit} connections open (--max-connections)"),
                        );
                    }
                });
                if let Err(e) = spawned {
                    warn!("cannot start a thread to refuse conn {conn}: {e}");
                }
                continue;
            }
            let active = &active;
            let spawned = std::thread::Builder::new()
                .name(format!("lam-serve-{conn}"))
                .spawn_scoped(scope, move || {
                    let r = catch_unwind(AssertUnwindSafe(|| {
                        serve_connection(backend, stream, conn, opts)
                    }));
                    match r {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => warn!("conn {conn}: {e:#}"),
                        Err(p) => warn!("conn {conn}: panicked: {}", panic_message(p.as_ref())),
                    }
                    active.fetch_sub(1, Ordering::SeqCst);
                });
            if let Err(e) = spawned {
                active.fetch_sub(1, Ordering::SeqCst);
                warn!("cannot start a thread for conn {conn}: {e}");
            }
        }
    });
    Ok(())
}
