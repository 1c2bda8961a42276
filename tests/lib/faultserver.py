#!/usr/bin/python3
"""A small HTTP/1.1 file server for tests of ferry's failure paths: serves DOCROOT with byte ranges,
ETag/If-Match and Last-Modified like nginx, and misbehaves on request.

  faultserver.py DOCROOT [--mode MODE] [--every N] [--port-file FILE]

prints the port it listens on (127.0.0.1, a free port) on stdout, then serves until killed.
Modes (applied to GET requests of files, every Nth one; N=1: all of them):
  ok        behave
  500       answer 500 Internal Server Error
  truncate  announce the full length, send half the body, close the connection
  reset     close the connection with a TCP reset before answering
  stall     send the headers and half the body, then hang for 60 s
The mode can be changed while running: GET /_fault?mode=500&every=2 (answers 204).
GET /_fault/count answers the number of file GETs seen so far."""
import email.utils
import html
import http.server
import os
import socket
import struct
import sys
import threading
import time
import urllib.parse

state = {"mode": "ok", "every": 1, "gets": 0}
lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    root = "."

    def log_message(self, fmt, *args):
        pass

    def reply(self, code, body=b"", headers=()):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def index(self, path, shown):
        """A directory page in nginx's autoindex format."""
        lines = ['<html>\r\n<head><title>Index of %s</title></head>\r\n<body>\r\n'
                 '<h1>Index of %s</h1><hr><pre><a href="../">../</a>\r\n' % (shown, shown)]
        for name in sorted(os.listdir(path)):
            st = os.stat(os.path.join(path, name))
            isdir = os.path.isdir(os.path.join(path, name))
            href = urllib.parse.quote(name) + ("/" if isdir else "")
            date = time.strftime("%d-%b-%Y %H:%M", time.gmtime(st.st_mtime))
            size = "-" if isdir else str(st.st_size)
            lines.append('<a href="%s">%s</a> %s %19s\r\n' % (href, html.escape(name), date, size))
        lines.append("</pre><hr></body>\r\n</html>\r\n")
        return "".join(lines)

    def control(self, url):
        if url.path == "/_fault/count":
            with lock:
                n = state["gets"]
            return self.reply(200, str(n).encode())
        q = urllib.parse.parse_qs(url.query)
        with lock:
            if "mode" in q:
                state["mode"] = q["mode"][0]
            if "every" in q:
                state["every"] = max(1, int(q["every"][0]))
            state["gets"] = 0
        return self.reply(204)

    def do_HEAD(self):
        self.serve()

    def do_GET(self):
        self.serve()

    def serve(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path.startswith("/_fault"):
            return self.control(url)
        rel = urllib.parse.unquote(url.path).lstrip("/")
        path = os.path.join(self.root, rel)
        if ".." in rel.split("/"):
            return self.reply(404, b"not found\n")
        if os.path.isdir(path) and (rel == "" or rel.endswith("/")):
            return self.reply(200, self.index(path, url.path).encode(), [("Content-Type", "text/html")])
        if not os.path.isfile(path):
            return self.reply(404, b"not found\n")
        st = os.stat(path)
        size = st.st_size
        etag = '"%x-%x"' % (int(st.st_mtime), size)
        headers = [("ETag", etag), ("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True)),
                   ("Accept-Ranges", "bytes")]
        im = self.headers.get("If-Match")
        if im is not None and im.strip() != "*" and etag not in [t.strip() for t in im.split(",")]:
            return self.reply(412, b"precondition failed\n")
        start, end, code = 0, size - 1, 200
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            a, _, b = rng[6:].partition("-")
            start = int(a)
            end = min(int(b), size - 1) if b else size - 1
            if start >= size or start > end:
                return self.reply(416, b"", [("Content-Range", "bytes */%d" % size)])
            code = 206
            headers.append(("Content-Range", "bytes %d-%d/%d" % (start, end, size)))
        mode = "ok"
        if self.command == "GET":
            with lock:
                state["gets"] += 1
                if state["gets"] % state["every"] == 0:
                    mode = state["mode"]
        if mode == "500":
            return self.reply(500, b"injected failure\n")
        if mode == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return
        length = end - start + 1
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if self.command == "HEAD":
            return
        with open(path, "rb") as f:
            f.seek(start)
            body = f.read(length)
        if mode in ("truncate", "stall"):
            self.wfile.write(body[: length // 2])
            self.wfile.flush()
            if mode == "stall":
                time.sleep(60)
            self.close_connection = True
            return
        self.wfile.write(body)


def main():
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        sys.exit(__doc__)
    Handler.root = args[0]
    port_file = None
    i = 1
    while i < len(args):
        if args[i] == "--mode":
            state["mode"] = args[i + 1]
        elif args[i] == "--every":
            state["every"] = int(args[i + 1])
        elif args[i] == "--port-file":
            port_file = args[i + 1]
        else:
            sys.exit("faultserver.py: unknown option " + args[i])
        i += 2
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    port = srv.server_address[1]
    if port_file:
        with open(port_file + ".tmp", "w") as f:
            f.write("%d\n" % port)
        os.rename(port_file + ".tmp", port_file)
    print(port, flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
