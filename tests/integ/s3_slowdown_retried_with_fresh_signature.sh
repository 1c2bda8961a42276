#!/usr/bin/env bash
# A proxy in front of radosgw answers the first attempt of every listing and of every chunk GET
# with 503 SlowDown, after holding it 1.1 s. The mount still comes up and serves the uploaded
# bytes; every retry was signed again (its x-amz-date is later than the refused attempt's, so
# a retry after a long backoff cannot carry a stale signature), and the retries are counted.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/s3_lib.sh"
need_fuse
need_s3
serve_s3
make_tree "$T/src" a.bin:3M sub/b.bin:100K
s3_put_tree "$T/src" ds/ >/dev/null

cat >"$T/proxy.py" <<'PY'
import http.client, http.server, sys, threading, time, urllib.parse
upstream_port, log_path = int(sys.argv[1]), sys.argv[2]
seen, lock = set(), threading.Lock()
log = open(log_path, "a", buffering=1)

class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def handle_one(self):
        q = urllib.parse.urlsplit(self.path).query
        rng = self.headers.get("Range", "")
        key = (self.command, self.path, rng)
        faulty = self.command == "GET" and (rng or "list-type" in q)
        with lock:
            first = key not in seen
            seen.add(key)
        date = self.headers.get("x-amz-date", "-")
        if faulty and first:
            time.sleep(1.1)
            body = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
                    b'<Message>Please reduce your request rate.</Message></Error>')
            log.write("503 %s %s %s %s\n" % (date, self.command, self.path, rng or "-"))
            self.send_response(503)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        n = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(n) if n else None
        c = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
        c.request(self.command, self.path, body=data, headers=dict(self.headers.items()))
        r = c.getresponse()
        body = r.read()
        log.write("%d %s %s %s %s\n" % (r.status, date, self.command, self.path, rng or "-"))
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        c.close()
    do_GET = do_HEAD = handle_one

s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
PY
"$PY" "$T/proxy.py" "${S3_ENDPOINT##*:}" "$T/proxy.log" >"$T/proxy.port" &
echo $! >>"$T/.pids"
for _ in $(seq 50); do
	[ -s "$T/proxy.port" ] && break
	sleep 0.1
done
proxy=http://127.0.0.1:$(cat "$T/proxy.port")

M=$T/mnt
mount_ferry "s3://$S3_BUCKET/ds/" "$M" --endpoint "$proxy" --addressing path --chunk-size 1M
same_tree "$T/src" "$M"
retries=$(stat_json "$M" retries)
umount_ferry "$M"

"$PY" - "$T/proxy.log" "$retries" <<'PY'
import sys
lines = [l.split() for l in open(sys.argv[1])]
fails = [l for l in lines if l[0] == "503"]
bad = []
for f in fails:
    _, date, method, path, rng = f
    later = [l for l in lines if l[0] != "503" and l[2:] == f[2:]]
    if not later:
        bad.append("never retried: %s %s" % (path, rng))
    elif not all(l[1] > date for l in later):
        bad.append("retry of %s %s signed at %s, not after the refused %s" %
                   (path, rng, [l[1] for l in later], date))
nr_gets = sum(1 for f in fails if f[4] != "-")
for b in bad:
    print("BAD", b, file=sys.stderr)
if nr_gets < 4 or len(fails) == nr_gets:
    bad.append("only %d chunk GETs and %d listings were refused" % (nr_gets, len(fails) - nr_gets))
if int(sys.argv[2]) < nr_gets:
    bad.append("ferry stat counts %s retries for %d refused chunk GETs" % (sys.argv[2], nr_gets))
print("%d refused (%d chunk GETs), each retried with a later x-amz-date" % (len(fails), nr_gets))
sys.exit("; ".join(bad) if bad else 0)
PY
pass
