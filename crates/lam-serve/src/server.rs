//! The accept loop: one thread per connection, all sharing the loaded model; one session
//! per connection. Every request gets a reply; a request that fails gets an error reply
//! naming the problem, and the connection stays open. Calls into the model run under
//! `catch_unwind`, so even a panic inside burn becomes an error reply (and clears that
//! connection's episode) rather than taking the server down.
//!
//! Idle sockets cannot lock clients out: a connection silent for `idle_timeout` is closed,
//! and when every slot is taken a new client gets the slot of the connection that has been
//! silent longest (at least [`EVICT_AFTER`]), half-open handshakes included.

use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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
    /// Connections served at once; when all are busy, more are refused with a close frame
    /// naming the limit.
    pub max_connections: usize,
    /// A connection with no message for this long is closed.
    pub idle_timeout: Duration,
}

/// A connection must have been silent this long before a new client may take its slot.
pub const EVICT_AFTER: Duration = Duration::from_secs(2);

/// What the accept loop knows of each open connection: a handle to shut its socket, when it
/// last finished a message, and whether a request is being answered now.
struct Slot {
    socket: TcpStream,
    last_active: Instant,
    busy: bool,
}

/// The open connections, by id.
#[derive(Default)]
struct Registry {
    slots: Mutex<HashMap<u64, Slot>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Slot>> {
        // A panicking connection thread cannot leave the map half-updated (each update is
        // one field store), so a poisoned lock is still usable.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn mark(&self, conn: u64, busy: bool) {
        if let Some(s) = self.lock().get_mut(&conn) {
            s.busy = busy;
            s.last_active = Instant::now();
        }
    }

    /// Shuts the socket of the connection silent longest (at least `EVICT_AFTER`, not
    /// answering a request) and returns its id; its thread then ends on its own.
    fn evict_idlest(&self, now: Instant) -> Option<u64> {
        let mut slots = self.lock();
        let (&id, _) = slots
            .iter()
            .filter(|(_, s)| !s.busy && now.duration_since(s.last_active) >= EVICT_AFTER)
            .min_by_key(|(_, s)| s.last_active)?;
        let slot = slots.remove(&id)?;
        let _ = slot.socket.shutdown(std::net::Shutdown::Both);
        Some(id)
    }
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
    registry: &Registry,
) -> Result<()> {
    let peer = stream.peer_addr().ok();
    let _ = stream.set_nodelay(true);
    let mut socket = WebSocket::accept(stream, opts.max_message)?;
    socket.set_idle_timeout(opts.idle_timeout)?;
    registry.mark(conn, false);
    info!("conn {conn}: opened from {peer:?}");
    let mut session = Session::Idle;
    loop {
        let msg = match socket.read_message() {
            Ok(m) => m,
            Err(e) if ws::is_timeout(&e) => {
                let why = format!(
                    "no message for {:.0} s (lam serve --idle-timeout-s)",
                    opts.idle_timeout.as_secs_f64()
                );
                info!("conn {conn}: closing: {why}");
                socket.close(ws::CLOSE_NORMAL, &why);
                return Ok(());
            }
            Err(e) => {
                warn!("conn {conn}: closing: {e:#}");
                socket.close(ws::CLOSE_PROTOCOL_ERROR, &format!("{e:#}"));
                return Ok(());
            }
        };
        registry.mark(conn, true);
        let too_large = matches!(msg, Incoming::TooLarge { .. });
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
        let sent = socket.send_binary(&protocol::encode(&reply));
        registry.mark(conn, false);
        if let Err(e) = sent {
            warn!("conn {conn}: cannot send the reply, closing: {e}");
            return Ok(());
        }
        if too_large {
            // The rest of the oversized message was never read: the connection ends here.
            socket.close_draining(
                ws::CLOSE_TOO_BIG,
                "message too big (lam serve --max-message-mb)",
                8 * opts.max_message as u64,
            );
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
    let refusing = AtomicUsize::new(0);
    let next_id = AtomicU64::new(1);
    let registry = Registry::default();
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
            if registry.lock().len() >= opts.max_connections {
                // Full: the connection silent longest gives up its slot (its thread ends as
                // soon as its read fails on the shut socket).
                if let Some(old) = registry.evict_idlest(Instant::now()) {
                    info!(
                        "conn {old}: closed to make room for conn {conn} (all slots taken, it was idle)"
                    );
                }
            }
            let full = registry.lock().len() >= opts.max_connections;
            if full {
                warn!(
                    "conn {conn}: refused, {} connections already open and busy",
                    opts.max_connections
                );
                // The refusal is a close frame after the handshake, sent from a thread of its
                // own; past `max_connections` such threads the socket is just dropped, so a
                // flood of connections cannot start threads without bound.
                if refusing.fetch_add(1, Ordering::SeqCst) >= opts.max_connections {
                    refusing.fetch_sub(1, Ordering::SeqCst);
                    continue;
                }
                let limit = opts.max_connections;
                let refusing = &refusing;
                let spawned = std::thread::Builder::new().spawn_scoped(scope, move || {
                    if let Ok(mut s) = WebSocket::accept_within(stream, 1024, EVICT_AFTER) {
                        s.close(
                            ws::CLOSE_TRY_AGAIN_LATER,
                            &format!("server busy: {limit} connections open (--max-connections)"),
                        );
                    }
                    refusing.fetch_sub(1, Ordering::SeqCst);
                });
                if let Err(e) = spawned {
                    refusing.fetch_sub(1, Ordering::SeqCst);
                    warn!("cannot start a thread to refuse conn {conn}: {e}");
                }
                continue;
            }
            let handle = match stream.try_clone() {
                Ok(h) => h,
                Err(e) => {
                    warn!("conn {conn}: cannot clone its socket: {e}");
                    continue;
                }
            };
            registry.lock().insert(
                conn,
                Slot {
                    socket: handle,
                    last_active: Instant::now(),
                    busy: false,
                },
            );
            let registry = &registry;
            let spawned = std::thread::Builder::new()
                .name(format!("lam-serve-{conn}"))
                .spawn_scoped(scope, move || {
                    let r = catch_unwind(AssertUnwindSafe(|| {
                        serve_connection(backend, stream, conn, opts, registry)
                    }));
                    match r {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => warn!("conn {conn}: {e:#}"),
                        Err(p) => warn!("conn {conn}: panicked: {}", panic_message(p.as_ref())),
                    }
                    registry.lock().remove(&conn);
                });
            if let Err(e) = spawned {
                registry.lock().remove(&conn);
                warn!("cannot start a thread for conn {conn}: {e}");
            }
        }
    });
    Ok(())
}
