#!/usr/bin/env python3
"""A tiny fake CRM for the support-bot example (standard library only).

It serves two "instances" on one port so staging and production can point at
different base URLs: ``/sandbox`` (test data) and ``/live`` (the real
customers). Every request must carry ``Authorization: Bearer <token>``.

    python fake_crm.py --port 0 --token s3cret     # prints the port it bound
"""

from __future__ import annotations

import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CUSTOMERS = {
    "sandbox": {"42": {"id": "42", "name": "Test Customer", "plan": "trial"}},
    "live": {"42": {"id": "42", "name": "Ada Lovelace", "plan": "enterprise"}},
}


def make_handler(token: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # keep the demo output clean
            pass

        def _send(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.headers.get("Authorization") != f"Bearer {token}":
                self._send(401, {"error": "missing or wrong token"})
                return
            parts = self.path.split("?")[0].strip("/").split("/")
            if len(parts) == 3 and parts[0] in CUSTOMERS and parts[1] == "customers":
                customer = CUSTOMERS[parts[0]].get(parts[2])
                if customer is None:
                    self._send(404, {"error": f"no customer {parts[2]}"})
                    return
                self._send(200, {**customer, "source": parts[0]})
                return
            self._send(404, {"error": "not found"})

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", required=True)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(args.token))
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
