"""A real HTTP endpoint that records webhook deliveries, for the webhook tests and the console's end-to-end test."""

import base64
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["OTHER_SECRET", "SECRET", "Endpoint"]

SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"o" * 32).decode()


class Endpoint:
    """Records every request (path, headers with lower-case names, body) and answers the next scripted status (200 when none)."""

    def __init__(self):
        self.requests: list[tuple[str, dict, bytes]] = []
        self.statuses: list[int] = []
        self.delivered = threading.Event()  # set on each 2xx answer
        self.release = threading.Event()  # the endpoint answers only once this is set (a hung receiver)
        self.release.set()
        self.received = threading.Event()  # set as a request arrives, before its answer
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                endpoint.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                endpoint.received.set()
                endpoint.release.wait(30)
                status = endpoint.statuses.pop(0) if endpoint.statuses else 200
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("location", "/elsewhere")
                self.send_header("content-length", "0")
                self.end_headers()
                if 200 <= status < 300:
                    endpoint.delivered.set()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)
