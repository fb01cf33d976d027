"""Request bodies are limited before anything reads them, and a request that carries a body
must show a valid token first: a 200 MB body without a token once took the API from 143 MB
to 749 MB, because FastAPI reads a route's body before its token dependency runs."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

MAX_BODY = 2 << 20  # a job script may be 1 MB; JSON around it stays well below 2 MiB
OPEN = ("/healthz",)

Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]


class BodyLimit:
    def __init__(self, app: Any, check: Callable[[str | None], bool],
                 limit: int = MAX_BODY) -> None:
        self.app = app
        self.check = check
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.limit:
            await _answer(send, 413, f"request body over {self.limit} bytes")
            return
        if scope["path"] not in OPEN and not self.check(headers.get("authorization")):
            await _answer(send, 401, "a valid bearer token is required",
                          [(b"www-authenticate", b"Bearer")])
            return
        seen = 0
        over = False

        async def limited() -> Any:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:  # chunked and too long: reading stops here
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def answer(message: dict[str, Any]) -> None:
            if not over:
                await send(message)
            elif message["type"] == "http.response.start":
                await _answer(send, 413, f"request body over {self.limit} bytes")

        await self.app(scope, limited, answer)


async def _answer(send: Send, status: int, detail: str,
                  extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"detail": detail, "hint": ""}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *(extra or [])]})
    await send({"type": "http.response.body", "body": body})
