"""A misbehaving OpenAI-compatible endpoint on 127.0.0.1 (a thread in the test process).

``GET /v1/models`` answers normally; ``POST /v1/chat/completions`` does what ``mode`` says:
``hang`` (never answers), ``html`` (200 with a non-JSON body), ``nochoices`` (200 JSON without
``choices``), ``500`` (always an internal error).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeEndpoint:
    def __init__(self, mode: str):
        self.mode = mode
        self.posts = 0
        self._stop = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self._send(200, json.dumps({"object": "list", "data": [{"id": "m", "object": "model",
                                                                        "created": 0, "owned_by": "x"}]}).encode())

            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length", 0)))
                outer.posts += 1
                if outer.mode == "hang":
                    outer._stop.wait(120)
                    return
                if outer.mode == "html":
                    self._send(200, b"<html><body>Bad gateway</body></html>", "text/html")
                elif outer.mode == "nochoices":
                    self._send(200, json.dumps({"id": "x", "object": "chat.completion", "created": 0,
                                                "model": "m"}).encode())
                else:
                    self._send(500, json.dumps({"error": {"message": "boom", "type": "server_error"}}).encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
