"""A reverse proxy in front of a real `mlflow server` that can fail API calls on demand.

    proxy = FaultProxy(server.uri).start()      # proxy.uri: point the tracker here
    proxy.fail(503, "TEMPORARILY_UNAVAILABLE")  # every /api/ call answers 503, /health still 200
    proxy.heal()
    proxy.hang()                                # /api/ calls get no answer at all

It plays the server-side errors MLflow answers during a database hiccup or a restart
behind a load balancer: HTTP 5xx with MLflow's JSON error body while /health answers.
"""

from __future__ import annotations

import http.client
import http.server
import json
import threading
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class FaultProxy:
    def __init__(self, target: str):
        parts = urlsplit(target)
        self.target_host, self.target_port = parts.hostname, parts.port
        self.fault: tuple[int, str] | None = None
        self.hung = threading.Event()  # set: /api/ calls are held unanswered (a server that hangs)
        self.healed = threading.Event()
        self.failed = 0  # API calls answered with the fault
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if proxy.hung.is_set() and self.path.startswith("/api/"):
                    proxy.healed.wait(120)  # no answer; the client's own timeout decides
                    self.close_connection = True
                    return
                with proxy.lock:
                    fault = proxy.fault if self.path.startswith("/api/") else None
                    if fault:
                        proxy.failed += 1
                if fault:
                    status, code = fault
                    data = json.dumps({"error_code": code, "message": f"injected {status}"}).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                conn = http.client.HTTPConnection(proxy.target_host, proxy.target_port, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> "FaultProxy":
        self.thread.start()
        return self

    def fail(self, status: int, code: str) -> None:
        with self.lock:
            self.fault = (status, code)

    def hang(self) -> None:
        self.healed.clear()
        self.hung.set()

    def heal(self) -> None:
        with self.lock:
            self.fault = None
        self.hung.clear()
        self.healed.set()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
