"""Drives a running `lam serve` with frames of lam's simulated suite and checks every reply.

Run by crates/lam/tests/serve_python.rs (which makes the checkpoints, the frames and starts
the server); usable by hand too:

    python3 clients/python/tests/drive_server.py --url ws://127.0.0.1:8765 \
        --frames DIR --model mpc --max-message-bytes 1048576

DIR holds frames.npy (uint8 [T, H, W, 3], consecutive frames of one episode) and goal.npy
(uint8 [H, W, 3]). Exits non-zero with a message naming the first check that failed.
"""

import argparse
import sys
import threading

import msgpack
import numpy as np

from lam_client import LamClient, LamError, encode_array

CHECKS = []


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    CHECKS.append(what)


def expect_error(fn, *needles, what):
    """`fn` must raise LamError whose message contains every needle."""
    try:
        reply = fn()
    except LamError as e:
        msg = str(e)
        for n in needles:
            check(n in msg, f"{what}: error message {msg!r} names {n!r}")
        print(f"  bad input ok: {what}: {msg}")
        return msg
    raise AssertionError(f"{what}: expected an error reply, got {reply!r}")


def raw_error(client, payload, *needles, what, text=False):
    """Sends raw bytes (or text) and expects an error reply naming the problem."""
    if text:
        client._ws.send(payload)
        reply = msgpack.unpackb(client._ws.recv(timeout=client.timeout), raw=False)
    else:
        reply = client.send_raw(payload)
    check(reply.get("ok") is False, f"{what}: reply has ok = false ({reply!r})")
    msg = reply.get("error", "")
    for n in needles:
        check(n in msg, f"{what}: error message {msg!r} names {n!r}")
    print(f"  bad input ok: {what}: {msg}")


def check_action(reply, action_dim, low, high, what):
    a = reply["action"]
    check(isinstance(a, np.ndarray), f"{what}: action is an array")
    check(a.dtype == np.float32 and a.shape == (action_dim,),
          f"{what}: action is float32 [{action_dim}] (got {a.dtype} {a.shape})")
    check(bool(np.all(np.isfinite(a))), f"{what}: action is finite")
    if low is not None:
        check(bool(np.all(a >= np.asarray(low) - 1e-6) and np.all(a <= np.asarray(high) + 1e-6)),
              f"{what}: action {a} within bounds {low}..{high}")
    t = reply["timing"]
    check(t["total_ms"] > 0 and t["total_ms"] >= t["model_ms"], f"{what}: timing {t}")
    check(isinstance(reply["planned"], bool), f"{what}: planned is a bool")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--frames", required=True)
    ap.add_argument("--model", choices=["mpc", "lawm"], required=True)
    ap.add_argument("--max-message-bytes", type=int, required=True)
    ap.add_argument("--instruction", default="reach")
    ap.add_argument("--max-connections", type=int, default=0,
                    help="the server's --max-connections; > 0 checks that idle sockets "
                         "filling every slot do not lock a new client out")
    args = ap.parse_args()

    frames = np.load(f"{args.frames}/frames.npy")
    goal = np.load(f"{args.frames}/goal.npy")
    check(frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[3] == 3,
          f"frames.npy is uint8 [T, H, W, 3] (got {frames.dtype} {frames.shape})")
    mpc = args.model == "mpc"

    c = LamClient(args.url)
    info = c.info()
    check(info["model"] == args.model, f"info names the model ({info['model']})")
    check(info["max_message_bytes"] == args.max_message_bytes, "info gives the message limit")
    adim = info["action"]["dim"]
    low, high = info["action"]["low"], info["action"]["high"]
    size = info["image"]["size"]
    check(adim >= 1 and size >= 1, f"info: action dim {adim}, image size {size}")
    check(len(info["image"]["mean"]) == 3 and len(info["image"]["std"]) == 3,
          "info gives per-channel normalisation")
    print(f"info: model {info['model']}, action dim {adim}, image size {size}")

    # act before reset
    expect_error(lambda: c.act(frames[0]), "before `reset`", what="act before reset")

    # reset, wrong way round first
    if mpc:
        expect_error(lambda: c.reset(), "needs a `goal`", what="reset without goal (MPC)")
        expect_error(lambda: c.reset(goal=goal, instruction="reach"), "not `instruction`",
                     what="reset with an instruction (MPC)")
        r = c.reset(goal=goal, seed=3)
    else:
        expect_error(lambda: c.reset(goal=goal, instruction="reach"), "not `goal`",
                     what="reset with a goal (LAWM)")
        r = c.reset(instruction=args.instruction)
    check(r["ok"] and r["timing"]["total_ms"] >= 0, "reset replies ok with timing")

    # a short episode at native size (the server resizes)
    planned = 0
    for t in range(len(frames)):
        rep = c.act(frames[t], state=np.zeros(4, np.float32))
        check_action(rep, adim, low, high, f"act {t}")
        check(rep["step"] == t + 1, f"act {t}: step counter {rep['step']}")
        planned += rep["planned"]
        if mpc:
            check(isinstance(rep["confidence"], float) and -1.0 <= rep["confidence"] <= 1.0,
                  f"act {t}: confidence {rep['confidence']} is a cosine")
        elif rep["planned"]:
            n = info["action"]["chunk"]
            check(rep["chunk"].shape == (n, adim) and rep["chunk"].dtype == np.float32,
                  f"act {t}: chunk is float32 [{n}, {adim}]")
            check(np.allclose(rep["chunk"][0], rep["action"]), f"act {t}: action is chunk[0]")
    check(planned >= 1, f"the first act planned ({planned} plans in {len(frames)} steps)")
    if mpc:
        every = info["planner"]["replan_every"]
        want = -(-len(frames) // every)
        check(planned == want, f"{planned} plans in {len(frames)} steps, replanning every {every}")
    print(f"episode: {len(frames)} steps, {planned} plans")

    # other sizes and dtypes of the same observation
    h, w = frames.shape[1:3]
    rep = c.act(frames[-1][: (3 * h) // 4])  # non-square crop
    check_action(rep, adim, low, high, "non-square image")
    rep = c.act(frames[-1].astype(np.float32) / 255.0)
    check_action(rep, adim, low, high, "float32 image in [0, 1]")
    rep = c.act(frames[-1][None])
    check_action(rep, adim, low, high, "[1, H, W, 3] image")
    small = frames[-1][::3, ::3]
    rep = c.act(np.ascontiguousarray(small))
    check_action(rep, adim, low, high, f"small {small.shape} image")

    # bad inputs: each gets an error reply naming the problem, and the session goes on
    img = frames[-1]
    raw_error(c, b"\xc1\x00\x01", "malformed msgpack", what="malformed msgpack")
    raw_error(c, b"\x83\xa4call\xa3act", "malformed msgpack", what="truncated msgpack")
    raw_error(c, msgpack.packb([1, 2, 3]), "map", what="request that is not a map")
    raw_error(c, msgpack.packb({"id": 9}), "no `call`", what="request without call")
    raw_error(c, msgpack.packb({"call": 5}), "`call` must be a string", what="call not a string")
    raw_error(c, "hello", "text message", what="text message", text=True)
    expect_error(lambda: c.call("fly"), "unknown call `fly`", what="unknown call")
    expect_error(lambda: c.call("act", imgae=img), "unknown field `imgae`",
                 what="unknown field")
    expect_error(lambda: c.call("info", verbose=True), "unknown field `verbose`",
                 what="unknown field in info")
    expect_error(lambda: c.call("act"), "needs an `image`", what="act without image")
    expect_error(lambda: c.act(img.astype(np.int16)), "int16", what="wrong dtype int16")
    big_endian = {"dtype": ">f4", "shape": list(img.shape),
                  "data": (img.astype(">f4") / 255.0).astype(">f4").tobytes()}
    expect_error(lambda: c.call("act", image=big_endian), "big-endian", what="big-endian dtype")
    expect_error(lambda: c.act(img[:, :, 0]), f"[{h}, {w}]", "[height, width, 3]",
                 what="wrong shape (gray [H, W])")
    rgba = np.concatenate([img, np.full(img.shape[:2] + (1,), 255, np.uint8)], axis=2)
    expect_error(lambda: c.act(rgba), f"[{h}, {w}, 4]", what="wrong shape (RGBA)")
    expect_error(lambda: c.act(np.zeros((0, w, 3), np.uint8)), "empty", what="empty image")
    short = encode_array(img)
    short["data"] = short["data"][:-7]
    expect_error(lambda: c.call("act", image=short), "bytes", "has " + str(img.size - 7),
                 what="data shorter than the shape")
    expect_error(lambda: c.call("act", image="not an array"), "array map", "a string",
                 what="image that is a string")
    expect_error(lambda: c.act(img.astype(np.float32)), "[0, 1]",
                 what="float image outside [0, 1]")
    expect_error(lambda: c.act(img, state=np.array([0.0, np.nan], np.float32)), "non-finite",
                 what="NaN in state")
    expect_error(lambda: c.act(img, state=np.zeros((2, 2), np.float32)), "1-D",
                 what="2-D state")
    expect_error(lambda: c.reset(instruction="reach", seed=-1) if not mpc
                 else c.reset(goal=goal, seed=-1), "`seed`", "-1", what="negative seed")
    expect_error(lambda: c.call("reset", goal=goal if mpc else None, instruction=None if mpc
                                else "reach", seed="x"), "`seed`", "a string",
                 what="seed that is a string")
    # extreme shapes under the message limit: refused by size, not resized
    expect_error(lambda: c.act(np.zeros((5000, 1, 3), np.uint8)), "5000x1", "at most 4096",
                 what="extreme shape 5000x1")
    expect_error(lambda: c.act(np.zeros((1, 5000, 3), np.uint8)), "1x5000", "at most 4096",
                 what="extreme shape 1x5000")
    # oversized: a frame bigger than the server's limit
    side = int(np.sqrt(args.max_message_bytes / 3)) + 64
    huge = np.zeros((side, side, 3), np.uint8)
    expect_error(lambda: c.act(huge), "exceeds the server's limit",
                 str(args.max_message_bytes), what=f"oversized message ({huge.nbytes} bytes)")
    # the server closed that connection (1009: the rest of the message was never read);
    # a new one serves
    c.close()
    c = LamClient(args.url)
    if mpc:
        c.reset(goal=goal, seed=3)
    else:
        c.reset(instruction=args.instruction)
    rep = c.act(img)
    check_action(rep, adim, low, high, "act on a new connection after the oversized message")

    # a plain HTTP request instead of a WebSocket upgrade gets a 400 naming the missing header
    import socket
    from urllib.parse import urlparse
    u = urlparse(args.url)
    with socket.create_connection((u.hostname, u.port), timeout=30) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        resp = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            resp += chunk
    resp = resp.decode("utf-8", "replace")
    check(resp.startswith("HTTP/1.1 400") and "Upgrade: websocket" in resp,
          f"plain HTTP request gets 400 naming the upgrade header ({resp!r})")
    print("  bad input ok: plain HTTP request: " + resp.splitlines()[-1])

    # several connections at once, each its own session
    errors = []

    def episode(k):
        try:
            with LamClient(args.url) as ck:
                if mpc:
                    ck.reset(goal=goal, seed=k)
                else:
                    ck.reset(instruction=args.instruction, seed=k)
                for t in range(4):
                    r = ck.act(frames[t])
                    check_action(r, adim, low, high, f"client {k} act {t}")
                    check(r["step"] == t + 1, f"client {k}: own step counter ({r['step']})")
        except Exception as e:  # reported below
            errors.append(f"client {k}: {e!r}")

    threads = [threading.Thread(target=episode, args=(k,)) for k in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    check(not errors, f"concurrent clients: {errors}")

    # the reopened connection's episode (one act so far) is untouched by the others
    rep = c.act(img)
    check(rep["step"] == 2, f"first connection's step counter ({rep['step']})")
    c.close()

    if args.max_connections > 0:
        idle_slots_do_not_lock_clients_out(args, mpc, goal, frames)
    print(f"{len(CHECKS)} checks passed")


def idle_slots_do_not_lock_clients_out(args, mpc, goal, frames):
    """Every slot taken by a socket that never speaks (half of them half-open handshakes,
    half finished WebSockets): a new client is still served, in the slot of the idlest."""
    import socket
    import time
    from urllib.parse import urlparse
    from websockets.sync.client import connect

    u = urlparse(args.url)
    idle = []
    for k in range(args.max_connections):
        if k % 2 == 0:
            idle.append(socket.create_connection((u.hostname, u.port), timeout=30))
        else:
            idle.append(connect(args.url, max_size=None))
    time.sleep(2.5)  # the server gives a slot away after 2 s of silence
    t0 = time.time()
    with LamClient(args.url) as ck:
        if mpc:
            ck.reset(goal=goal, seed=1)
        else:
            ck.reset(instruction=args.instruction, seed=1)
        rep = ck.act(frames[0])
        check(rep["step"] == 1, "a new client is served while idle sockets fill every slot")
    print(f"  idle sockets filling all {args.max_connections} slots: a new client was served "
          f"in {time.time() - t0:.2f} s")
    for s in idle:
        s.close()


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
