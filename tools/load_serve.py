"""Bounded load test of a running `lam serve`: 64 concurrent clients for 60 s mixing valid
episodes with every kind of hostile traffic, then latency percentiles of the valid calls and
the server's peak memory.

    lam serve --run RUN --encoder ENC --controller CTRL --domain robot --port 8765 \\
        --samples 64 --elites 8 --iterations 4 &
    python3 tools/load_serve.py --url ws://127.0.0.1:8765 --pid $! --seconds 60

Roles (client k plays role k mod 8): 0-2 valid episodes (reset with a goal, then act),
3 garbage messages (random bytes, maps that are not requests), 4 oversized messages and
extreme image shapes, 5 slow senders (a valid request one byte every 50 ms), 6 idle
sockets (a bare TCP connection and a WebSocket that never speaks, held 10 s), 7 clients that
disconnect in the middle of a message. Valid clients must get an action for every call they
make (a refusal because every slot is busy counts separately); the server must be alive at
the end. Prints a JSON summary; exits 1 when a check fails.
"""

import argparse
import json
import os
import random
import socket
import sys
import threading
import time
from urllib.parse import urlparse

import msgpack
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "clients", "python"))
from lam_client import LamClient, LamError, encode_array  # noqa: E402
from websockets.sync.client import connect  # noqa: E402


def frame(payload: bytes, opcode: int = 2) -> bytes:
    """One masked client frame (RFC 6455)."""
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + body


def error_reply(ws, message: bytes) -> bool:
    """Sends `message` and tells whether the server answered it with an error reply."""
    ws.send(message)
    return msgpack.unpackb(ws.recv(timeout=60), raw=False).get("ok") is False


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--pid", type=int, required=True, help="the server's process id")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--clients", type=int, default=64)
    args = ap.parse_args()
    u = urlparse(args.url)
    stop = time.time() + args.seconds
    lock = threading.Lock()
    stats = {
        "valid_calls": 0, "valid_errors": [], "busy_refusals": 0, "latencies_ms": [],
        "garbage_answered": 0, "oversized_answered": 0, "shape_answered": 0,
        "slow_sent": 0, "idle_held": 0, "cut_mid_message": 0, "other_failures": [],
    }

    def count(key, v=1):
        with lock:
            stats[key] += v

    def failed(role, e):
        """A hostile client's connection failed: fine when refused as busy, else reported."""
        if "busy" not in repr(e) and "1013" not in repr(e):
            with lock:
                stats["other_failures"].append(f"{role}: " + repr(e)[:160])
        time.sleep(0.2)

    def valid(k):
        rng = np.random.default_rng(k)
        while time.time() < stop:
            try:
                with LamClient(args.url) as c:
                    info = c.info()
                    size = max(32, info["image"]["size"])
                    c.reset(goal=rng.integers(0, 256, (size, size, 3), dtype=np.uint8), seed=k)
                    for _ in range(20):
                        if time.time() >= stop:
                            break
                        img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                        t0 = time.time()
                        rep = c.act(img)
                        ms = 1000 * (time.time() - t0)
                        ok = np.all(np.isfinite(np.asarray(rep["action"], dtype=np.float64)))
                        with lock:
                            stats["valid_calls"] += 1
                            stats["latencies_ms"].append(ms)
                            if not ok:
                                stats["valid_errors"].append("non-finite action")
            except Exception as e:  # noqa: BLE001 - every failure is reported
                msg = repr(e)
                if "busy" in msg or "1013" in msg:
                    count("busy_refusals")
                    time.sleep(0.2)
                else:
                    with lock:
                        stats["valid_errors"].append(msg[:200])
                    time.sleep(0.2)

    def garbage(k):
        rnd = random.Random(k)
        while time.time() < stop:
            try:
                with connect(args.url, max_size=None, open_timeout=30) as ws:
                    for _ in range(20):
                        if rnd.random() < 0.5:
                            msg = os.urandom(rnd.randint(1, 4096))
                        else:
                            msg = msgpack.packb({"call": "act", "image": {"dtype": "uint8",
                                                 "shape": [2 ** 40, 2 ** 40, 3], "data": b"x"}})
                        if error_reply(ws, msg):
                            count("garbage_answered")
            except Exception as e:  # noqa: BLE001
                failed("garbage", e)

    def oversized(k):
        while time.time() < stop:
            try:
                with connect(args.url, max_size=None, open_timeout=30) as ws:
                    limit = msgpack.unpackb(
                        (ws.send(msgpack.packb({"call": "info"})), ws.recv(timeout=60))[1]
                    )["info"]["max_message_bytes"]
                    if error_reply(ws, b"\x00" * (limit + 1024)):
                        count("oversized_answered")
                # the server closes a connection after an oversized message (1009)
                with connect(args.url, max_size=None, open_timeout=30) as ws:
                    for shape in ([5000, 1, 3], [1, 5000, 3], [4097, 2, 3]):
                        img = np.zeros(shape, np.uint8)
                        act = msgpack.packb({"call": "act", "image": encode_array(img)})
                        if error_reply(ws, act):
                            count("shape_answered")
            except Exception as e:  # noqa: BLE001
                failed("oversized", e)

    def slow(k):
        while time.time() < stop:
            try:
                with connect(args.url, max_size=None, open_timeout=30) as ws:
                    data = frame(msgpack.packb({"call": "info"}))
                    for b in data:
                        if time.time() >= stop:
                            break
                        ws.socket.sendall(bytes([b]))
                        count("slow_sent")
                        time.sleep(0.05)
            except Exception:  # noqa: BLE001 - the server may close a slow sender
                time.sleep(0.2)

    def idle(k):
        while time.time() < stop:
            socks = []
            try:
                socks.append(socket.create_connection((u.hostname, u.port), timeout=30))
                socks.append(connect(args.url, max_size=None, open_timeout=30))
            except Exception:  # noqa: BLE001 - refused or evicted: try again
                pass
            count("idle_held")
            time.sleep(min(10.0, max(0.0, stop - time.time())))
            for s in socks:
                try:
                    s.close()
                except Exception:  # noqa: BLE001
                    pass

    def cut(k):
        while time.time() < stop:
            try:
                ws = connect(args.url, max_size=None, open_timeout=30)
                data = frame(b"\x81\xa4call\xa4info" + os.urandom(100_000))
                ws.socket.sendall(data[: len(data) // 10])
                ws.socket.close()
                count("cut_mid_message")
            except Exception:  # noqa: BLE001
                pass
            time.sleep(0.1)

    roles = [valid, valid, valid, garbage, oversized, slow, idle, cut]
    threads = [threading.Thread(target=roles[k % 8], args=(k,), daemon=True)
               for k in range(args.clients)]
    peak, samples = 0, []
    for t in threads:
        t.start()
    while time.time() < stop:
        r = rss_kib(args.pid)
        if r is None:
            break
        samples.append(r)
        peak = max(peak, r)
        time.sleep(1.0)
    for t in threads:
        t.join(timeout=120)
    alive = rss_kib(args.pid) is not None
    lat = np.array(stats["latencies_ms"]) if stats["latencies_ms"] else np.array([np.nan])
    # After the storm, a fresh client is served.
    after_ok = False
    try:
        with LamClient(args.url) as c:
            after_ok = "action" in c.info()
    except Exception as e:  # noqa: BLE001
        stats["other_failures"].append("after: " + repr(e)[:160])
    summary = {
        "seconds": args.seconds, "clients": args.clients, "server_alive": alive,
        "fresh_client_served_after": after_ok,
        "valid_calls": stats["valid_calls"], "valid_errors": stats["valid_errors"][:10],
        "valid_error_count": len(stats["valid_errors"]),
        "busy_refusals": stats["busy_refusals"],
        "act_latency_ms_p50": float(np.percentile(lat, 50)),
        "act_latency_ms_p99": float(np.percentile(lat, 99)),
        "garbage_answered": stats["garbage_answered"],
        "oversized_answered": stats["oversized_answered"],
        "extreme_shapes_answered": stats["shape_answered"],
        "slow_bytes_sent": stats["slow_sent"], "idle_holds": stats["idle_held"],
        "cut_mid_message": stats["cut_mid_message"],
        "other_failures": stats["other_failures"][:10],
        "rss_mib_first": samples[0] / 1024 if samples else None,
        "rss_mib_peak": peak / 1024, "rss_mib_last": samples[-1] / 1024 if samples else None,
    }
    print(json.dumps(summary, indent=2))
    ok = alive and after_ok and stats["valid_calls"] > 0 and not stats["valid_errors"]
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
