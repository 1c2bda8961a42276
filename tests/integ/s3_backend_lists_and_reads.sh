#!/usr/bin/env bash
# remote_s3 against a real S3 server (radosgw on loopback): 1,500 keys under one prefix (more
# than one 1,000-key page), nested prefixes, keys with special characters, unsafe keys and an
# object/prefix collision are listed as the oracle (python, from the uploaded keys) expects;
# ranged reads through prepare_get equal the uploaded bytes; a wrong secret, an unknown key
# and a missing bucket fail with clear messages; If-Match on a replaced object gives 412.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/s3_lib.sh"
DRIVER=$FERRY_BUILD/tests/integ/s3_backend_driver
need_built "$DRIVER"
need_s3
serve_s3

"$PY" - "$DRIVER" "$T" <<'PY' || fail "remote_s3 is not what the oracle expects (see above)"
import hashlib, os, random, subprocess, sys
from concurrent.futures import ThreadPoolExecutor
import botocore.session
from botocore.config import Config

driver, work = sys.argv[1], sys.argv[2]
endpoint, bucket = os.environ['S3_ENDPOINT'], os.environ['S3_BUCKET']
secret = os.environ['AWS_SECRET_ACCESS_KEY']
s3 = botocore.session.get_session().create_client(
    's3', region_name='us-east-1', endpoint_url=endpoint,
    config=Config(s3={'addressing_style': 'path'}, max_pool_connections=16))
rng = random.Random(6)
fails = 0

def check(cond, what):
    global fails
    if not cond:
        fails += 1
        print('FAIL:', what)
    else:
        print('ok:', what)

objects = {}  # key -> bytes
for i in range(1500):
    objects['ds/big/shard_%05d.bin' % i] = rng.randbytes(rng.randint(0, 64))
objects['ds/data.bin'] = rng.randbytes(3 << 20)
for k in ['ds/nested/a/b/c/deep.txt', 'ds/nested/a/top.txt', 'ds/nested/x/y.txt',
          'ds/special/a b+c=d%e&f?g#h', 'ds/special/é日本😀.bin', "ds/special/~tilde*'()!$@:;,",
          'ds/special/%2F%20plus+', 'ds/coll', 'ds/coll/x', 'ds/marker/', 'ds/marker/inside',
          'ds/../evil', 'ds/dbl//slash', 'ds/dot/./x', 'ds/' + 'L' * 300, 'ds/ok/' + 'l' * 255]:
    objects[k] = rng.randbytes(rng.randint(1, 70000))
etags = {}
def put(kv):
    k, v = kv
    etags[k] = s3.put_object(Bucket=bucket, Key=k, Body=v)['ETag']
with ThreadPoolExecutor(16) as ex:
    list(ex.map(put, objects.items()))
s3.put_object(Bucket=bucket, Key='outside.txt', Body=b'not under ds/')

# The oracle: what a safe, directory-wins view of keys under ds/ is.
def safe(c):
    return c not in ('', '.', '..') and len(c.encode()) <= 255
want_dirs, want_files = set(), {}
for k, v in objects.items():
    parts = k[len('ds/'):].split('/')
    if k.endswith('/'):
        parts = parts[:-1]
        if all(safe(c) for c in parts):
            for j in range(1, len(parts) + 1):
                want_dirs.add('/'.join(parts[:j]))
        continue
    for j in range(1, len(parts)):
        if not all(safe(c) for c in parts[:j]):
            break
        want_dirs.add('/'.join(parts[:j]))
    if all(safe(c) for c in parts):
        want_files['/'.join(parts)] = (len(v), etags[k], k)
for d in want_dirs:
    want_files.pop(d, None)

def drv(*args, env=None, inp=None):
    return subprocess.run([driver, *args], capture_output=True, env=env)

r = drv('walk', 's3://%s/ds/' % bucket)
check(r.returncode == 0, 'walk exits 0' + ('' if r.returncode == 0 else ': ' + r.stderr.decode()[-300:]))
got_dirs, got_files = set(), {}
for line in r.stdout.decode().splitlines():
    t, rest = line.split(' ', 1)
    if t == 'd':
        got_dirs.add(rest)
    else:
        p, size, etag = rest.rsplit(' ', 2)
        got_files[p] = (int(size), etag)
check(got_dirs == want_dirs, 'directories as expected (%d)' % len(want_dirs) +
      ('' if got_dirs == want_dirs else ' got-want %s want-got %s' % (got_dirs - want_dirs, want_dirs - got_dirs)))
check(got_files == {p: v[:2] for p, v in want_files.items()},
      'files, sizes and ETags as expected (%d)' % len(want_files) +
      ('' if got_files == {p: v[:2] for p, v in want_files.items()} else ' diff %s' % (set(got_files) ^ set(want_files))))
check(sum(1 for p in got_files if p.startswith('big/')) == 1500, '1,500 keys across pages')
err = r.stderr.decode()
check(err.count('unsafe') == 1, 'one warning for unsafe keys')
check(err.count('both an object and a prefix') == 1, 'the collision reported once')

# Ranged reads through prepare_get equal the uploaded bytes.
ok = True
data = objects['ds/data.bin']
for _ in range(40):
    off = rng.randrange(len(data))
    n = rng.randint(1, min(1 << 20, len(data) - off))
    r = drv('read', 's3://%s/ds/' % bucket, 'data.bin', str(off), str(n), etags['ds/data.bin'])
    if r.returncode != 0 or r.stdout != data[off:off + n]:
        ok = False
        print('read', off, n, r.returncode, r.stderr.decode())
        break
check(ok, '40 random ranged reads of a 3 MiB object equal the uploaded bytes')
ok = True
for p, (size, etag, k) in want_files.items():
    if not (p.startswith('special/') or p.startswith('nested/') or p.startswith('ok/')):
        continue
    r = drv('read', 's3://%s/ds' % bucket, p, '0', str(size), etag)
    if r.returncode != 0 or r.stdout != objects[k]:
        ok = False
        print('read', p, r.returncode, r.stderr.decode())
check(ok, 'keys with special characters read back exactly')
r = drv('stat', 's3://%s/ds' % bucket, 'special/a b+c=d%e&f?g#h')
check(r.returncode == 0 and r.stdout.decode().split()[-1] == etags['ds/special/a b+c=d%e&f?g#h'], 'stat by HEAD of an odd key')
r = drv('stat', 's3://%s/ds' % bucket, 'coll')
check(r.stdout.decode().startswith('d coll'), 'stat: the directory wins over the object')
r = drv('stat', 's3://%s/ds' % bucket, 'nope')
check(r.returncode == 2, 'stat of a missing key is ENOENT')

# A single-object source.
r = drv('read', 's3://%s/ds/data.bin' % bucket, '', '100', '1000')
check(r.returncode == 0 and r.stdout == data[100:1100], 'a single-object source reads its object')

# If-Match: the object replaced on the server after it was listed.
old = etags['ds/data.bin']
s3.put_object(Bucket=bucket, Key='ds/data.bin', Body=b'new version' * 1000)
r = drv('read', 's3://%s/ds/' % bucket, 'data.bin', '0', '100', old)
check(r.returncode == 3, 'a replaced object answers 412 to If-Match on the old ETag')

# Errors on open.
env = dict(os.environ, AWS_SECRET_ACCESS_KEY='wrong' + secret[5:])
r = drv('walk', 's3://%s/ds/' % bucket, env=env)
m = r.stderr.decode()
check(r.returncode != 0 and 'access denied' in m and 'SignatureDoesNotMatch' in m, 'a wrong secret: %s' % m.strip())
check(env['AWS_SECRET_ACCESS_KEY'] not in m and secret[5:] not in m, 'the secret is not in the message')
env = dict(os.environ, AWS_ACCESS_KEY_ID='NOSUCHKEY0000000000X')
r = drv('walk', 's3://%s/' % bucket, env=env)
m = r.stderr.decode()
check(r.returncode != 0 and 'access denied' in m and 'InvalidAccessKeyId' in m, 'an unknown key id: %s' % m.strip())
r = drv('walk', 's3://no-such-bucket-here/')
m = r.stderr.decode()
check(r.returncode != 0 and 'no such bucket' in m, 'a missing bucket: %s' % m.strip())
r = drv('walk', 's3://%s/no/such/prefix/' % bucket)
check(r.returncode == 2, 'a missing prefix: %s' % r.stderr.decode().strip())
r = drv('--addressing', 'virtual', 'walk', 's3://%s/ds/nested/' % bucket)
check(r.returncode != 0, 'virtual-host style against a server without DNS names fails cleanly: %s' % r.stderr.decode().strip()[:200])
r = drv('--endpoint', 'http://127.0.0.1:1', 'walk', 's3://%s/' % bucket)
check(r.returncode != 0 and 'cannot connect to ' in r.stderr.decode(), 'an unreachable endpoint: %s' % r.stderr.decode().strip())
sys.exit(1 if fails else 0)
PY
pass
