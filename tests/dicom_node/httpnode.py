"""A node with its HTTP side (STOW-RS receive, health) served by uvicorn on a free loopback port,
and a local HTTP receiver that stands in for a webhook consumer."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.conftest import free_port

SENDER_TOKEN = "stow-sender-token"
QA_TOKEN = "qa-reader-token"


def tokens() -> list[str]:
    from audit.auth import hash_token

    return [f"pacs:sender:{hash_token(SENDER_TOKEN)}", f"qa:qa:{hash_token(QA_TOKEN)}"]


class HttpServing:
    """uvicorn serving ``node_router(node)`` in a thread."""

    def __init__(self, node: Any) -> None:
        import uvicorn
        from fastapi import FastAPI

        from dicom_node.http import node_router

        app = FastAPI()
        app.include_router(node_router(node))
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_config=None, access_log=False,
                                                    lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class WebhookReceiver:
    """A real HTTP server that records JSON POSTs; ``answer`` picks the status code of each."""

    def __init__(self, answer: Callable[[dict[str, Any]], int] = lambda m: 204, *,
                 port: int | None = None, tls: tuple[Any, Any] | None = None) -> None:
        self.messages: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.answer = answer
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                message = json.loads(body)
                code = outer.answer(message)
                if 200 <= code < 300:
                    outer.messages.append(message)
                    outer.headers.append(dict(self.headers))
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port or free_port()), Handler)
        self.scheme = "http"
        if tls is not None:  # (certificate, key) PEM paths: serve HTTPS
            import ssl

            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server.server_address[1]}/hook"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
