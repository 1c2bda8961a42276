#!/usr/bin/python3
"""A small HTTP/1.1 file server for tests of ferry's failure paths: serves DOCROOT with byte ranges,
ETag/If-Match and Last-Modified like nginx, and misbehaves on request.

  faultserver.py DOCROOT [--mode MODE] [--every N | --rate P [--seed S]] [--mix M1,M2,..]
                 [--ignore-if-match] [--port-file FILE]

prints the port it listens on (127.0.0.1, a free port) on stdout, then serves until killed.
Modes (applied to GET requests of files: every Nth one, N=1: all of them; or, with --rate P,
each one with probability P from a generator seeded with --seed S, default 1):
  ok            behave
  500           answer 500 Internal Server Error
  503xml        answer 503 Slow Down with an S3-style XML error body and Retry-After: 1
  429           answer 429 Too Many Requests with Retry-After: 1
  truncate      announce the full length, send half the body, close the connection
  reset         close the connection with a TCP reset before answering
  stall         send the headers and half the body, then hang for 60 s
  stallheaders  send the headers, then hang (STALL_S, 600 s) before any body
  204           answer 204 No Content (the asked Content-Range, no body)
  203           answer 203 with the asked Content-Range and other bytes of the right length
  201           answer 201 Created with a short body
  full200       answer a Range request with 200 and the whole file
  wrongrange    answer 206 with another range of the file of the same length (its own
                Content-Range and body)
  mix           each faulted GET picks one of the modes of the mix list at random (same
                generator): by default every fault above but the two stalls, which each cost
                the client a low-speed timeout; --mix or mix= names another list
--ignore-if-match serves whatever is on disk now, whatever If-Match says (as some servers
do), with the ETag and Last-Modified of the file as it is now.
The mode can be changed while running: GET /_fault?mode=500&every=2 (answers 204); also
rate=P (0 turns the rate off: back to every N), seed=S, mix=M1,M2. Each control request
resets the count. GET /_fault/count answers the number of file GETs seen so far; GET
/_fault/faults the number of them that were faulted; GET /_fault/gets lists them, one
"PATH START-END MODE" a line (START-END: the range asked, or "-" for none)."""
import email.utils
import html
import http.server
import os
import random
import socket
import struct
import sys
import threading
import time
import urllib.parse

STALL_S = 600
INVERT = bytes(range(255, -1, -1))
FAULTS = ["500", "503xml", "429", "truncate", "reset", "stall", "stallheaders", "204", "203", "201",
          "full200", "wrongrange"]
MIX_DEFAULT = [m for m in FAULTS if not m.startswith("stall")]
# rate None: fault every Nth GET; else each GET with probability rate.
state = {"mode": "ok", "every": 1, "rate": None, "gets": 0, "faults": 0, "log": [],
         "rng": random.Random(1), "mix": MIX_DEFAULT, "ignore_if_match": False}
lock = threading.Lock()

S3_SLOWDOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
               b'<Message>Please reduce your request rate.</Message><Resource>%s</Resource>'
               b'<RequestId>faultserver</RequestId></Error>\n')


def parse_mix(s):
    mix = [m for m in s.split(",") if m]
    for m in mix:
        if m not in FAULTS and m != "ok":
            raise ValueError("unknown mode in mix: " + m)
    if not mix:
        raise ValueError("empty mix")
    return mix


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    root = "."

    def log_message(self, fmt, *args):
        pass

    def reply(self, code, body=b"", headers=()):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        if code != 204:
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
        if url.path in ("/_fault/count", "/_fault/faults"):
            with lock:
                n = state["gets" if url.path == "/_fault/count" else "faults"]
            return self.reply(200, str(n).encode())
        if url.path == "/_fault/gets":
            with lock:
                text = "".join(line + "\n" for line in state["log"])
            return self.reply(200, text.encode())
        q = urllib.parse.parse_qs(url.query)
        try:
            with lock:
                if "mode" in q:
                    if q["mode"][0] not in FAULTS + ["ok", "mix"]:
                        raise ValueError("unknown mode " + q["mode"][0])
                    state["mode"] = q["mode"][0]
                if "every" in q:
                    state["every"] = max(1, int(q["every"][0]))
                    state["rate"] = None
                if "rate" in q:
                    r = float(q["rate"][0])
                    if not 0 <= r <= 1:
                        raise ValueError("rate must be in 0..1")
                    state["rate"] = r if r > 0 else None
                if "seed" in q:
                    state["rng"] = random.Random(int(q["seed"][0]))
                if "mix" in q:
                    state["mix"] = parse_mix(q["mix"][0])
                state["gets"] = 0
                state["faults"] = 0
                state["log"] = []
        except ValueError as e:
            return self.reply(400, (str(e) + "\n").encode())
        return self.reply(204)

    def do_HEAD(self):
        self.serve()

    def do_GET(self):
        self.serve()

    def pick_mode(self, what):
        """Counts a file GET and says how to answer it."""
        with lock:
            state["gets"] += 1
            if state["rate"] is not None:
                hit = state["rng"].random() < state["rate"]
            else:
                hit = state["gets"] % state["every"] == 0
            mode = state["mode"] if hit else "ok"
            if mode == "mix":
                mode = state["rng"].choice(state["mix"])
            if mode != "ok":
                state["faults"] += 1
            state["log"].append("%s %s" % (what, mode))
            return mode

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
        # Open first and stat the open file: what is sent is the version the headers name,
        # even when the file is replaced (renamed over) meanwhile.
        f = open(path, "rb")
        try:
            self.serve_file(f, url)
        finally:
            f.close()

    def serve_file(self, f, url):
        st = os.fstat(f.fileno())
        size = st.st_size
        etag = '"%x-%x"' % (int(st.st_mtime), size)
        headers = [("ETag", etag), ("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True)),
                   ("Accept-Ranges", "bytes")]
        im = self.headers.get("If-Match")
        if (im is not None and not state["ignore_if_match"] and im.strip() != "*" and
                etag not in [t.strip() for t in im.split(",")]):
            return self.reply(412, b"precondition failed\n")
        start, end, code, ranged = 0, size - 1, 200, False
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            a, _, b = rng[6:].partition("-")
            start = int(a)
            end = min(int(b), size - 1) if b else size - 1
            if start >= size or start > end:
                return self.reply(416, b"", [("Content-Range", "bytes */%d" % size)])
            code, ranged = 206, True
        length = end - start + 1
        what = "%s %s" % (urllib.parse.unquote(url.path), "%d-%d" % (start, end) if ranged else "-")
        mode = self.pick_mode(what) if self.command == "GET" else "ok"
        if mode == "500":
            return self.reply(500, b"injected failure\n")
        if mode == "503xml":
            return self.reply(503, S3_SLOWDOWN % url.path.encode(),
                              [("Content-Type", "application/xml"), ("Retry-After", "1")])
        if mode == "429":
            return self.reply(429, b"too many requests\n", [("Retry-After", "1")])
        if mode == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return
        if mode == "full200":
            code, start, end, length = 200, 0, size - 1, size
        elif mode == "wrongrange" and ranged:
            # Another range of the same length: the next one, else the one before, else
            # (the range is most of the file) the same start shifted by one, one byte shorter.
            if end + length < size:
                start, end = start + length, end + length
            elif start - length >= 0:
                start, end = start - length, end - length
            elif size > 1:
                start, end = (start + 1, end) if end > start else (start - 1, end - 1) if start else (1, 1)
            length = end - start + 1
        if code == 206 or mode in ("204", "203"):
            headers.append(("Content-Range", "bytes %d-%d/%d" % (start, end, size)))
        if mode == "204":
            return self.reply(204, b"", headers)
        if mode == "201":
            return self.reply(201, b"created\n", headers)
        self.send_response(203 if mode == "203" else code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if self.command == "HEAD":
            return
        if mode == "stallheaders":
            self.wfile.flush()
            time.sleep(STALL_S)
            self.close_connection = True
            return
        f.seek(start)
        body = f.read(length)
        if mode == "203":
            body = body.translate(INVERT)  # never the file's bytes
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
    try:
        while i < len(args):
            a = args[i]
            if a == "--ignore-if-match":
                state["ignore_if_match"] = True
                i += 1
                continue
            if i + 1 >= len(args):
                raise ValueError(a + " needs a value")
            v = args[i + 1]
            if a == "--mode":
                if v not in FAULTS + ["ok", "mix"]:
                    raise ValueError("unknown mode " + v)
                state["mode"] = v
            elif a == "--every":
                state["every"] = max(1, int(v))
            elif a == "--rate":
                r = float(v)
                if not 0 <= r <= 1:
                    raise ValueError("--rate must be in 0..1")
                state["rate"] = r
            elif a == "--seed":
                state["rng"] = random.Random(int(v))
            elif a == "--mix":
                state["mix"] = parse_mix(v)
            elif a == "--port-file":
                port_file = v
            else:
                raise ValueError("unknown option " + a)
            i += 2
    except ValueError as e:
        sys.exit("faultserver.py: %s" % e)
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
