#!/usr/bin/env python3
"""Serves the page (this directory) on localhost, and model dirs under /models/NAME/.

    scripts/build-web.sh && python3 web/serve.py --models tiny=fixtures/tiny   # http://localhost:8000/

Any static server works (e.g. `python3 -m http.server -d web`); this one also sends the
cross-origin isolation headers (COOP/COEP), which give the page a SharedArrayBuffer, so Cancel
stops the worker cooperatively within one step instead of terminating it. --no-isolation
leaves them out. It logs one line per model file request to stderr ("GET /models/...").
"""
import argparse
import functools
import http.server
import os
import sys

WEB = os.path.dirname(os.path.abspath(__file__))


class Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".wasm": "application/wasm", ".js": "text/javascript", ".mjs": "text/javascript"}
    models = {}
    isolation = True

    def translate_path(self, path):
        parts = path.split("?", 1)[0].split("#", 1)[0].split("/")
        if len(parts) > 3 and parts[1] == "models" and parts[2] in self.models:
            rest = [p for p in parts[3:] if p not in ("", ".", "..")]
            return os.path.join(self.models[parts[2]], *rest)
        return super().translate_path(path)

    def end_headers(self):
        if self.isolation:
            self.send_header("Cross-Origin-Opener-Policy", "same-origin")
            self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cross-Origin-Resource-Policy", "cross-origin")
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, fmt, *args):
        sys.stderr.write("%s\n" % (fmt % args))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=8000, help="0: any free port (printed)")
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("--models", action="append", default=[], metavar="NAME=DIR", help="serve DIR at /models/NAME/")
    p.add_argument("--no-isolation", action="store_true")
    args = p.parse_args()
    Handler.models = {}
    for spec in args.models:
        name, _, path = spec.partition("=")
        Handler.models[name] = os.path.abspath(path)
    Handler.isolation = not args.no_isolation
    server = http.server.ThreadingHTTPServer((args.bind, args.port), functools.partial(Handler, directory=WEB))
    print(f"http://{args.bind}:{server.server_address[1]}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
