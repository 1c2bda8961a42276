#!/usr/bin/env bash
# The SigV4 signer against botocore's S3SigV4Auth (an independent implementation) on hundreds
# of generated requests: odd keys, query strings, extra headers, session tokens, regions,
# path and virtual-host style, signed and unsigned payloads; a fixed time. Byte for byte on
# the canonical request and the Authorization header.
. "$(dirname "$0")/lib.sh"
DRIVER=$FERRY_BUILD/tests/integ/s3_sign_driver
need_built "$DRIVER"
need_python botocore

"$PY" - "$DRIVER" "$T" <<'PY' || fail "the signer differs from botocore (see above)"
import datetime, random, subprocess, sys
from unittest import mock
from urllib.parse import quote
import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

driver, work = sys.argv[1], sys.argv[2]
rng = random.Random(20240520)
N = 400
odd = [' ', '+', '=', '%', '&', '?', '#', '/', '//', '~', '*', "'", '(', ')', '!', '$', '@',
       ':', ';', ',', '[', ']', '"', '<', '>', '\\', '^', '`', '{', '|', '}', '%2F', '%20',
       'é', '日本語', '😀', 'ß', '\u00a0', '.', '..', '-', '_']
plain = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'

def word(lo=1, hi=12, odds=0.3):
    return ''.join(rng.choice(odd) if rng.random() < odds else rng.choice(plain)
                   for _ in range(rng.randint(lo, hi)))

regions = ['us-east-1', 'eu-west-3', 'ap-northeast-1', 'us-gov-west-1', 'cn-north-1', 'auto',
           'default', 'me-central-1']
hexf = lambda s: s.encode().hex() if s != '' else '-'
cases, lines = [], []
for i in range(N):
    bucket = rng.choice(['b', 'data-set', 'my.bucket', 'x' * 63, 'ferry-test'])
    virtual = rng.random() < 0.5
    scheme = rng.choice(['http', 'https'])
    port = rng.choice(['', ':80', ':443', ':9000', ':55801'])
    base = rng.choice(['s3.us-east-1.amazonaws.com', '127.0.0.1', 'localhost', 'minio.internal'])
    if (scheme == 'http' and port == ':80') or (scheme == 'https' and port == ':443'):
        hosthdr = base
    else:
        hosthdr = base + port
    key = '/'.join(word() for _ in range(rng.randint(0, 4)))
    if virtual:
        hosthdr = bucket + '.' + hosthdr
        host_url = bucket + '.' + base + port
        path = '/' + key
    else:
        host_url = base + port
        path = '/' + bucket + ('/' + key if key else '')
    query = [(word(1, 8, 0.2), rng.choice(['', word(0, 10, 0.4)])) for _ in range(rng.randint(0, 5))]
    if rng.random() < 0.3:
        query = [('list-type', '2'), ('prefix', key + '/'), ('delimiter', '/'),
                 ('continuation-token', word(20, 60, 0.1) + '=='), ('encoding-type', 'url')]
    headers = []
    if rng.random() < 0.7:
        a = rng.randint(0, 1 << 40)
        headers.append((rng.choice(['Range', 'range', 'RANGE']), 'bytes=%d-%d' % (a, a + rng.randint(0, 1 << 23))))
    if rng.random() < 0.5:
        headers.append(('If-Match', '"%032x"' % rng.getrandbits(128) + rng.choice(['', '-17'])))
    if rng.random() < 0.3:
        headers.append(('x-amz-meta-' + rng.choice(['a', 'Note', 'x_y']), rng.choice(['  two  spaces  here ', 'a\tb', 'plain', ' lead', 'trail  '])))
    token = rng.choice(['', '', 'FwoGZXIvYXdzEJr//////////wEaDN' + word(40, 200, 0.0) + '/+=='])
    unsigned = rng.random() < 0.3
    when = rng.choice([1369353600, 1700000000, 0, 2147483647, 1716163199 + rng.randint(0, 10**8)])
    method = rng.choice(['GET', 'GET', 'HEAD'])
    access = rng.choice(['AKIAIOSFODNN7EXAMPLE', 'ASIA' + word(16, 16, 0), 'FERRYTESTACCESSKEY01'])
    secret = rng.choice(['wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY', word(40, 40, 0) + '+/', 'ferry/test/secret/key/0123456789abcdefABCD'])
    region = rng.choice(regions)
    cases.append(dict(method=method, url='%s://%s%s' % (scheme, host_url, quote(path, safe='/~')),
                      query=query, headers=headers, token=token, unsigned=unsigned, when=when,
                      access=access, secret=secret, region=region, hosthdr=hosthdr))
    f = [method, hosthdr, path, region, access, secret, token, '1' if unsigned else '0', str(when)]
    f.append(str(len(query)))
    for k, v in query:
        f += [k, v]
    f.append(str(len(headers)))
    for k, v in headers:
        f += [k, v]
    lines.append('\t'.join(hexf(x) for x in f))

out = subprocess.run([driver], input='\n'.join(lines) + '\n', capture_output=True, text=True, check=True).stdout.splitlines()
assert len(out) == N, (len(out), N)
bad = 0
unhex = lambda h: bytes.fromhex(h).decode()
for i, (c, o) in enumerate(zip(cases, out)):
    if o.startswith('error'):
        print('case %d: driver %s' % (i, o)); bad += 1; continue
    cr, auth, epath, equery = (unhex(x) for x in o.split('\t'))
    req = AWSRequest(method=c['method'], url=c['url'], headers=dict(c['headers']), params=c['query'], data=b'')
    if c['unsigned']:
        req.context['client_config'] = Config(s3={'payload_signing_enabled': False})
    signer = botocore.auth.S3SigV4Auth(Credentials(c['access'], c['secret'], c['token'] or None), 's3', c['region'])
    fixed = datetime.datetime.utcfromtimestamp(c['when'])
    seen = []
    orig = signer.canonical_request
    signer.canonical_request = lambda r: seen.append(orig(r)) or seen[-1]
    with mock.patch('botocore.auth.datetime') as dt:
        dt.datetime.utcnow.return_value = fixed
        signer.add_auth(req)
    want_cr = seen[0]
    want_auth = req.headers['Authorization']
    if isinstance(want_auth, bytes):
        want_auth = want_auth.decode()
    ok = cr == want_cr and auth == want_auth and c['url'].endswith(epath)
    if not ok:
        bad += 1
        if bad <= 3:
            print('case %d differs\n--- ferry\n%s\n%s\n--- botocore\n%s\n%s\n' % (i, cr, auth, want_cr, want_auth))
print('%d of %d requests signed identically' % (N - bad, N))
sys.exit(1 if bad else 0)
PY
pass
