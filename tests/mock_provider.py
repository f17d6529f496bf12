"""A provider stand-in on 127.0.0.1 that records every request and answers as told.

Each test sets `responder`: a function of the recorded request returning (status, headers, body),
or sleeping first to play a provider that hangs.
"""

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict
    body: bytes
    received_at: float = field(default_factory=time.time)
    # The client's end of the connection it came on: requests on one kept-alive connection share it.
    peer: tuple = ()

    @property
    def json(self):
        return json.loads(self.body)


RESET = "reset"  # a responder returning this closes the connection without answering


def ok_json(payload=None, status=200, headers=None):
    return status, dict(headers or {}, **{"content-type": "application/json"}), json.dumps(payload or {}).encode()


class MockProvider:
    def __init__(self):
        self.requests: list[Recorded] = []
        self.lock = threading.Lock()
        self.responder = lambda req: ok_json({"code": "ok"})
        mock = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                # Headers and body go out in separate writes: without this, Nagle holds the body
                # until the client's delayed ACK, adding 40 ms to every request.
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                req = Recorded(
                    method="POST",
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length),
                    peer=self.client_address,
                )
                with mock.lock:
                    mock.requests.append(req)
                answer = mock.responder(req)
                if answer == RESET:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                status, headers, body = answer
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout): that is what the test wanted

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 1024  # many workers connect at once; the default backlog is 5

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_port}"

    def count(self):
        with self.lock:
            return len(self.requests)

    def wait_for(self, n, timeout=10.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.count() >= n:
                return True
            time.sleep(0.02)
        return False

    def close(self):
        self.server.shutdown()
        self.server.server_close()
