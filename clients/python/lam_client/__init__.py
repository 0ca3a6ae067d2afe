"""Thin client for `lam serve`: ask a lam planner or policy what to do from Python.

    from lam_client import LamClient

    with LamClient("ws://127.0.0.1:8765") as lam:
        print(lam.info()["action"])
        lam.reset(goal=goal_image)            # MPC server (lam serve --run ...)
        # lam.reset(instruction="reach")      # LAWM server (lam serve --lawm ...)
        reply = lam.act(observation_image)    # uint8 [H, W, 3], any size
        env.step(reply["action"])

Messages are msgpack maps in binary WebSocket messages; arrays travel as
{"dtype", "shape", "data"} (numpy's own description of them). A request the
server rejects raises `LamError` with the server's message; the connection stays
usable afterwards.
"""

from __future__ import annotations

import itertools
from typing import Any, Optional

import msgpack
import numpy as np
from websockets.sync.client import connect

__all__ = ["LamClient", "LamError", "encode_array", "decode_array"]
__version__ = "0.1.0"


class LamError(RuntimeError):
    """An error reply from the server (the message names what was wrong)."""

    def __init__(self, message: str, call: Optional[str] = None, reply: Optional[dict] = None):
        super().__init__(message)
        self.call = call
        self.reply = reply or {}


def encode_array(a: Any) -> dict:
    """A numpy array as the server's {dtype, shape, data} map (C order, little endian)."""
    a = np.asarray(a)
    if a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and np.little_endian is False):
        a = a.astype(a.dtype.newbyteorder("<"))
    a = np.ascontiguousarray(a)
    return {"dtype": a.dtype.name, "shape": list(a.shape), "data": a.tobytes()}


def decode_array(m: Any) -> Any:
    """The inverse of `encode_array`; other values are returned unchanged."""
    if isinstance(m, dict) and set(m) == {"dtype", "shape", "data"}:
        return np.frombuffer(m["data"], dtype=np.dtype(m["dtype"]).newbyteorder("<")).reshape(
            m["shape"]
        )
    return m


def _decode(v: Any) -> Any:
    v = decode_array(v)
    if isinstance(v, dict):
        return {k: _decode(x) for k, x in v.items()}
    return v


class LamClient:
    """One connection to `lam serve` (one episode at a time).

    `url` is the server's address, e.g. "ws://127.0.0.1:8765". `timeout` bounds each call
    (seconds; planning with large CEM settings on a CPU can take a while).
    """

    def __init__(self, url: str = "ws://127.0.0.1:8765", timeout: float = 120.0):
        self.url = url
        self.timeout = timeout
        self._ids = itertools.count(1)
        # No keepalive pings: the server answers pings between calls, and a plan on a busy
        # CPU can outlast websockets' default 20 s ping timeout.
        self._ws = connect(url, max_size=None, open_timeout=timeout, compression=None,
                           ping_interval=None)

    # -- plumbing -------------------------------------------------------------------------

    def send_raw(self, payload: bytes) -> dict:
        """Sends raw bytes as one binary message and returns the decoded reply (no checks)."""
        self._ws.send(payload)
        return msgpack.unpackb(self._ws.recv(timeout=self.timeout), raw=False)

    def call(self, call: str, **fields: Any) -> dict:
        """Sends one request; returns the reply map (arrays as numpy) or raises LamError."""
        req = {"call": call, "id": next(self._ids)}
        for k, v in fields.items():
            if v is None:
                continue
            req[k] = encode_array(v) if isinstance(v, np.ndarray) else v
        reply = self.send_raw(msgpack.packb(req, use_bin_type=True))
        if reply.get("id") not in (None, req["id"]):
            raise LamError(f"reply id {reply.get('id')} does not match request id {req['id']}")
        if not reply.get("ok", False):
            raise LamError(reply.get("error", "error reply without a message"), call, reply)
        return _decode(reply)

    # -- the calls ------------------------------------------------------------------------

    def info(self) -> dict:
        """The model, its action space, the image size and normalisation it expects."""
        return self.call("info")["info"]

    def reset(self, goal: Any = None, instruction: Optional[str] = None,
              seed: Optional[int] = None) -> dict:
        """Starts an episode: `goal` is an RGB image (MPC servers), `instruction` a
        sentence (LAWM servers); `seed` varies the planner's sampling."""
        goal = None if goal is None else np.asarray(goal)
        return self.call("reset", goal=goal, instruction=instruction, seed=seed)

    def act(self, obs: Any, state: Any = None) -> dict:
        """The action for observation `obs` (RGB [H, W, 3], uint8 or float in [0, 1], any
        size). Returns the reply: "action" (float32 [A]), "planned", "confidence",
        "timing" (ms), "step", and "chunk" ([n, A]) when the policy emitted a new chunk."""
        state = None if state is None else np.asarray(state)
        return self.call("act", image=np.asarray(obs), state=state)

    def close(self) -> None:
        self._ws.close()

    def __enter__(self) -> "LamClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
