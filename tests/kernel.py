"""Code run in a user's real Jupyter kernel, as a person typing in a notebook would.

The kernel is started through the user's server's REST API (``/user/<name>/api/kernels``) with a token of
that user, and each :meth:`Kernel.execute` sends one ``execute_request`` over the server's kernel websocket
(Jupyter messaging protocol 5.3, JSON frames), collecting what the cell prints until both its ``execute_reply``
and the kernel's ``idle`` status after it have come.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import uuid
from dataclasses import dataclass

import requests
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect


@dataclass
class Result:
    stdout: str
    stderr: str
    error: tuple[str, str] | None  # (ename, evalue) of an exception the cell raised
    status: str  # "ok", "error", "aborted", or "died" (the kernel died or restarted, or the socket closed)


class Kernel:
    def __init__(self, hub, user: str, token: str, kernel_id: str):
        self.hub, self.user, self.token, self.id = hub, user, token, kernel_id

    @property
    def api(self) -> str:
        return f"{self.hub.url}/user/{self.user}/api"

    @property
    def headers(self) -> dict:
        return {"Authorization": f"token {self.token}"}

    @classmethod
    def token_for(cls, hub, user: str) -> str:
        r = hub.api("POST", f"/users/{user}/tokens", json={"note": "test", "expires_in": 3600})
        r.raise_for_status()
        return r.json()["token"]

    @classmethod
    def start(cls, hub, user: str, token: str | None = None) -> "Kernel":
        token = token or cls.token_for(hub, user)
        r = requests.post(f"{hub.url}/user/{user}/api/kernels", json={"name": "python3"},
                          headers={"Authorization": f"token {token}"}, timeout=60)
        r.raise_for_status()
        return cls(hub, user, token, r.json()["id"])

    def execute(self, code: str, timeout: float = 60) -> Result:
        return asyncio.run(asyncio.wait_for(self._execute(code), timeout))

    async def _execute(self, code: str) -> Result:
        url = self.api.replace("http://", "ws://").replace("https://", "wss://")
        session = uuid.uuid4().hex
        ws = await websocket_connect(HTTPRequest(f"{url}/kernels/{self.id}/channels?session_id={session}",
                                                 headers=self.headers))
        msg_id = uuid.uuid4().hex
        ws.write_message(json.dumps({
            "header": {"msg_id": msg_id, "username": self.user, "session": session, "msg_type": "execute_request",
                       "version": "5.3", "date": datetime.datetime.now(datetime.timezone.utc).isoformat()},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True},
        }))
        out, err, error, reply, idle = [], [], None, None, False
        try:
            while True:
                raw = await ws.read_message()
                if raw is None:  # the socket closed
                    return Result("".join(out), "".join(err), error, "died")
                if isinstance(raw, bytes):  # binary frames (buffers) are not used by execute
                    continue
                msg = json.loads(raw)
                kind, content = msg.get("msg_type") or msg["header"]["msg_type"], msg.get("content", {})
                if kind == "status" and content.get("execution_state") in ("restarting", "dead"):
                    return Result("".join(out), "".join(err), error, "died")
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                if kind == "stream":
                    (out if content["name"] == "stdout" else err).append(content["text"])
                elif kind == "error":
                    error = (content["ename"], content["evalue"])
                elif kind == "execute_reply" and msg.get("channel") == "shell":
                    reply = content.get("status", "ok")
                elif kind == "status" and content.get("execution_state") == "idle":
                    idle = True  # all the cell's output is sent (iopub and shell are not ordered between them)
                if reply and idle:
                    return Result("".join(out), "".join(err), error, reply)
        finally:
            ws.close()

    def shutdown(self) -> None:
        try:
            requests.delete(f"{self.api}/kernels/{self.id}", headers=self.headers, timeout=30)
        except requests.RequestException:
            pass  # the server is gone already
