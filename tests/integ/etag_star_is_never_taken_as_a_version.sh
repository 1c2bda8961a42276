#!/usr/bin/env bash
# A server that answers every object with `ETag: *` (If-Match's wildcard), and honours
# If-Match (where `*` matches any version) and If-Unmodified-Since as RFC 9110 says. Pinned
# to `*`, a file replaced under an open reader would mix versions; ferry must take `*` as no
# ETag and pin Last-Modified and size instead: after the replacement, chunks not yet cached
# fail, and no byte of the new version is ever served as the old one.
. "$(dirname "$0")/lib.sh"
need_fuse
mkdir -p "$T/src"
cat >"$T/server.py" <<'PY'
import email.utils, http.server, os, sys, time, urllib.parse

root = sys.argv[1]

class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        with open(os.path.join(root, "..", "requests.log"), "a") as f:
            f.write("%s %s If-Match=%s If-Unmodified-Since=%s\n" % (self.command, self.path,
                self.headers.get("If-Match"), self.headers.get("If-Unmodified-Since")))
    def reply(self, code, body=b"", hdrs=()):
        self.send_response(code)
        for k, v in hdrs:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
    def do_HEAD(self):
        self.do_GET()
    def do_GET(self):
        rel = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        if rel == "":
            lines = ['<html><head><title>Index of /</title></head><body><h1>Index of /</h1>'
                     '<hr><pre><a href="../">../</a>\r\n']
            for n in sorted(os.listdir(root)):
                st = os.stat(os.path.join(root, n))
                lines.append('<a href="%s">%s</a> %s %19d\r\n' % (urllib.parse.quote(n), n,
                    time.strftime("%d-%b-%Y %H:%M", time.gmtime(st.st_mtime)), st.st_size))
            lines.append("</pre><hr></body></html>\r\n")
            return self.reply(200, "".join(lines).encode(), [("Content-Type", "text/html")])
        path = os.path.join(root, rel)
        if "/" in rel or not os.path.isfile(path):
            return self.reply(404)
        st = os.stat(path)
        size, mtime = st.st_size, int(st.st_mtime)
        hdrs = [("ETag", "*"), ("Last-Modified", email.utils.formatdate(mtime, usegmt=True)),
                ("Accept-Ranges", "bytes")]
        ius = self.headers.get("If-Unmodified-Since")
        if ius and mtime > email.utils.parsedate_to_datetime(ius).timestamp():
            return self.reply(412)
        # If-Match: * matches any current version, so it never fails here.
        start, end, code = 0, size - 1, 200
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            a, _, b = rng[6:].partition("-")
            start, end, code = int(a), min(int(b), size - 1), 206
            hdrs.append(("Content-Range", "bytes %d-%d/%d" % (start, end, size)))
        if self.command == "HEAD":
            self.send_response(code)
            for k, v in hdrs:
                self.send_header(k, v)
            self.send_header("Content-Length", str(end - start + 1))
            return self.end_headers()
        with open(path, "rb") as f:
            f.seek(start)
            body = f.read(end - start + 1)
        self.reply(code, body, hdrs)

s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
PY
# Version A of one 8 MiB file: every 4 KiB stamped with its version and offset (B, below, too).
stamp() { # version path
	"$PY" - "$1" "$2" <<'PY'
import sys
v, path = sys.argv[1], sys.argv[2]
with open(path, "wb") as f:
    for off in range(0, 8 << 20, 4096):
        f.write(("%s %012d " % (v, off)).encode().ljust(4096, b"."))
PY
}
stamp A "$T/src/f.bin"
touch -d '2024-01-01 00:00:00 UTC' "$T/src/f.bin"
"$PY" "$T/server.py" "$T/src" >"$T/port" 2>"$T/server.err" &
echo $! >>"$T/.pids"
for _ in $(seq 50); do [ -s "$T/port" ] && break; sleep 0.1; done
port=$(cat "$T/port")
[ -n "$port" ] || fail "the test server did not start: $(cat "$T/server.err")"

mount_ferry "http://127.0.0.1:$port/" "$T/mnt" --chunk-size 1M
# One small random read caches chunk 0 of version A (and whatever the engine fetches ahead);
# then the file is replaced while still open, and the chunks are read last first, so the ones
# fetched after the replacement are the ones a pinned `*` would take from version B.
if ! "$PY" - "$T/mnt/f.bin" "$T/src/f.bin" <<'PY'
import errno, os, subprocess, sys
mnt, src = sys.argv[1], sys.argv[2]
fd = os.open(mnt, os.O_RDONLY)
os.pread(fd, 4096, 0)
with open(src + ".new", "wb") as f:
    for off in range(0, 8 << 20, 4096):
        f.write(("B %012d " % off).encode().ljust(4096, b"."))
t = 1717200000  # 2024-06-01, after version A's Last-Modified
os.utime(src + ".new", (t, t))
os.rename(src + ".new", src)
bad = eio = good = 0
for off in reversed(range(0, 8 << 20, 1 << 20)):
    try:
        b = os.pread(fd, 1 << 20, off)
    except OSError as e:
        if e.errno not in (errno.EIO, errno.ESTALE):
            sys.exit("chunk at %d: %s" % (off, e))
        eio += 1
        continue
    for k in range(0, len(b), 4096):
        want = ("A %012d " % (off + k)).encode()
        if b[k:k + len(want)] != want:
            bad += 1
    good += 1
print("after the replacement: %d chunks of version A, %d failed; %d blocks not version A"
      % (good, eio, bad))
sys.exit(1 if bad else 0)
PY
then
	fail "bytes of version B were served as version A"
fi
grep -q "If-Match=\*" "$T/requests.log" && fail "a GET carried If-Match: * : $(grep -m1 'If-Match=\*' "$T/requests.log")"
grep "^GET /f.bin" "$T/requests.log" | grep -q "If-Unmodified-Since=None" &&
	fail "a chunk GET was not pinned to Last-Modified"
[ -z "$(xattr "$T/mnt/f.bin" user.ferry.etag)" ] || fail "ETag * shown as the file's ETag"
umount_ferry "$T/mnt"
pass
