#!/usr/bin/python3
# Writes the seed corpora of the fs/ fuzz targets into corpus/<target>/ (kept in git; rerun to
# refresh; files found by fuzzing are added by hand next to these): real pages, replies and
# files of each format, and a few broken ones. The cache_map seeds are edits of the map the
# target makes itself (see fuzz_cache_map.c), so they hold for any map format.
import os, shutil, struct
here = os.path.dirname(os.path.abspath(__file__))
src = os.path.normpath(os.path.join(here, '..', '..'))

def put(target, name, data):
    d = os.path.join(here, 'corpus', target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), 'wb') as f:
        f.write(data.encode() if isinstance(data, str) else data)

# --- autoindex: the unit tests' captured nginx page and Apache pages, and odd ones.
for n in ('nginx', 'apache_plain', 'apache_pre', 'apache_fancy'):
    with open(os.path.join(src, 'tests', 'unit', 'data', 'autoindex_%s.html' % n), 'rb') as f:
        put('autoindex', n + '.html', f.read())
put('autoindex', 'entities_and_odd_hrefs.html',
    '<pre><a href=./a:b>a:b</a> 01-Feb-2023 09:30 17\n'
    "<A HREF='x&amp;y/'>x&y/</A> 2023-02-01 09:30 -\n"
    '<a href="&#x41;&#66;.txt">AB</a> 2023-02-01 09:30 12\n'
    '<a href="..%2Fetc">..</a> <a href="%00nul">nul</a> <a href="/abs">abs</a>\n'
    '<a href="?C=N;O=D">Name</a> <a href="http://other/x">x</a> <a href="#f">f</a>\n'
    '<a href="dup">dup</a><a href="dup">dup</a> 31-Dec-1969 23:59 99999999999999999999\n'
    '<a  href = "sp ace">sp</a>\t&nbsp;23-Jan-2024&nbsp;10:00&nbsp;5\n<a href="unterminated')
put('autoindex', 'apache_table_row.html',
    '<tr><td valign="top"><img src="/icons/binary.gif" alt="[   ]"></td>'
    '<td><a href="data.bin">data.bin</a></td><td align="right">2024-01-23 10:00  </td>'
    '<td align="right">3.0M</td><td>&nbsp;</td></tr>\n')

# --- manifest: what `ferry manifest` writes, and broken lines.
put('manifest', 'ok.manifest',
    'ferry-manifest 1\n'
    'd 0 1706004000.000000000 - sub\n'
    'f 12345 1706004000.5 %22abc%22 sub/100%25.bin\n'
    'f 0 -1.000000001 - empty\n'
    'l 6 1706004000.000000000 - link ../sub%2Fx\n'
    'f 3000000 1706004000 W%2F%22e-1%22 a%20b/c%C3%BC.txt\r\n')
put('manifest', 'header_only.manifest', 'ferry-manifest 1\n')
put('manifest', 'bad_lines.manifest',
    'ferry-manifest 1\nf 1 2 - ok\nf 99999999999999999999 0 - big\n')
put('manifest', 'unsafe_paths.manifest',
    'ferry-manifest 1\nf 1 0 - ../x\nf 1 0 - /abs\nf 1 0 - a//b\nf 1 0 - a/./b\n')
put('manifest', 'wrong_header.manifest', 'ferry-manifest 2\nf 1 0 - x\n')
put('manifest', 'fields.manifest',
    'ferry-manifest 1\nl 1 0 - a\nd 5 0 - d x\nx 1 0 - q\nf 1 0.1234567890 - t\n'
    'f 1 0  - two-spaces\nf 1 0 %2 bad-etag\nf 1 0 - %00\n')
put('manifest', 'etag_dash.manifest', 'ferry-manifest 1\nf 1 0 %2D a\nf 1 0 - b\n')

# --- s3_list: ListObjectsV2 pages as AWS and radosgw send them, and hostile XML.
aws = ('<?xml version="1.0" encoding="UTF-8"?>\n'
       '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
       '<Name>bucket</Name><Prefix>data/</Prefix><KeyCount>3</KeyCount><MaxKeys>1000</MaxKeys>'
       '<Delimiter>/</Delimiter><IsTruncated>true</IsTruncated>'
       '<ContinuationToken>prev-token</ContinuationToken>'
       '<NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>'
       '<Contents><Key>data/a.bin</Key><LastModified>2009-10-12T17:50:30.000Z</LastModified>'
       '<ETag>&quot;fba9dede5f27731c9771645a39863328&quot;</ETag><Size>434234</Size>'
       '<StorageClass>STANDARD</StorageClass><Owner><ID>x</ID></Owner></Contents>'
       '<Contents><Key>data/b &amp; c.bin</Key><Size>0</Size>'
       '<ETag>"d41d8cd98f00b204e9800998ecf8427e-2"</ETag></Contents>'
       '<CommonPrefixes><Prefix>data/sub/</Prefix></CommonPrefixes>'
       '</ListBucketResult>')
put('s3_list', 'aws_truncated_page.xml', aws)
put('s3_list', 'last_page.xml',
    '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult>'
    '<Name>b</Name><Prefix></Prefix><KeyCount>1</KeyCount><IsTruncated>false</IsTruncated>'
    '<Contents><Key>x</Key><LastModified>2024-01-23T10:00:00Z</LastModified>'
    '<Size>5497558138880</Size></Contents></ListBucketResult>')
put('s3_list', 'radosgw_url_encoded.xml',
    '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
    '<Name>test</Name><Prefix>d%2F</Prefix><MaxKeys>2</MaxKeys><Delimiter>%2F</Delimiter>'
    '<IsTruncated>true</IsTruncated><EncodingType>url</EncodingType>'
    '<NextContinuationToken>ABCD%2B%2F==</NextContinuationToken><KeyCount>2</KeyCount>'
    '<Contents><Key>d%2Fa+b%25c%C3%A9</Key><LastModified>2024-01-23T10:00:00.123Z</LastModified>'
    '<ETag>&quot;x&quot;</ETag><Size>7</Size><StorageClass>STANDARD</StorageClass></Contents>'
    '<CommonPrefixes><Prefix>d%2Fe%2F</Prefix></CommonPrefixes></ListBucketResult>')
put('s3_list', 'error_slowdown.xml',
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    '<Message>Please reduce your request rate.</Message><RequestId>1</RequestId></Error>')
put('s3_list', 'error_region.xml',
    '<Error><Code>AuthorizationHeaderMalformed</Code><Message>the region is wrong</Message>'
    '<Region>eu-west-1</Region></Error>')
put('s3_list', 'doctype_entities.xml',
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>'
    '<ListBucketResult><IsTruncated>false</IsTruncated><Contents><Key>&lol2;</Key><Size>1</Size>'
    '</Contents></ListBucketResult>')
put('s3_list', 'missing_fields.xml',
    '<ListBucketResult><IsTruncated>true</IsTruncated><Contents><Size>-1</Size></Contents>'
    '<Contents><Key>a</Key><Key>b</Key><Size>1</Size></Contents>'
    '<KeyCount>999999999</KeyCount><Contents><Key>k</Key><Size>1<b/></Size></Contents>'
    '</ListBucketResult>')
put('s3_list', 'deep.xml', '<ListBucketResult>' + '<a>' * 20 + '</a>' * 20 + '</ListBucketResult>')

# --- http_headers: header lines as libcurl hands them over, and bare Content-Range values.
for i, line in enumerate([
        'Content-Range: bytes 0-1048575/4294967296\r\n',
        'content-range:\tbytes 100-199/200  \r\n',
        'Content-Range: bytes */1000\r\n',
        'Content-Range: bytes 5-4/10\r\n',
        'Content-Range: bytes 0-18446744073709551615/18446744073709551615\r\n',
        'ETag: "5d41402abc4b2a76b9719d911017c592"\r\n',
        'ETag: W/"abc"\r\n',
        'Last-Modified: Tue, 23 Jan 2024 10:00:00 GMT\r\n',
        'Retry-After: 3\r\n',
        'Content-Length: 1048576\r\n',
        'x-amz-request-id:\r\n',
        'bytes 0-0/1',
        'BYTES 7-7/8\r\n',
        'bytes 00000000000000000000001-2/3']):
    put('http_headers', 'h%02d' % i, line)

# --- url: source URLs and names from listings.
for i, u in enumerate([
        'http://127.0.0.1:8080/data/', 'https://[::1]:8443/a%20b/?X-Amz-Signature=abc#frag',
        'HTTP://host', 'http://user:pw@host/', 'http://host:99999/', 'http://host:/x',
        'https://example.com:443/d%2Fe/f%25.bin?token=x&y=z', 'ftp://x/', 'http://[::1/',
        'a%20b%2Fc%C3%BC', '%', '%4', '%00', '100%25.bin', 'sub/dir/', '../../etc/passwd']):
    put('url', 'u%02d' % i, u)

# --- aws_config: byte 0 is the request (see fuzz_aws_config.c), then config NUL credentials.
conf = ('[default]\nregion = eu-west-1\ns3 =\n  endpoint_url = http://127.0.0.1:7480\n'
        '  addressing_style = path\n[profile dev]\nregion=us-west-2\n'
        'aws_access_key_id = AKIDCONF\naws_secret_access_key = CONFSECRET1234\n')
cred = ('# comment\n[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\n'
        'aws_secret_access_key = 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\n'
        '[dev]\naws_access_key_id=AKIDDEV\naws_session_token = TOKENSECRET9999\n')
put('aws_config', 'default_profile', b'\x00' + conf.encode() + b'\x00' + cred.encode())
put('aws_config', 'named_profile_half_pair', b'\x01' + conf.encode() + b'\x00' + cred.encode())
put('aws_config', 'env_profile_config_only', b'\x04' + conf.encode())
put('aws_config', 'anonymous', b'\x02' + conf.encode())
put('aws_config', 'group_readable_credentials', b'\x08\x00' + cred.encode())
put('aws_config', 'odd_lines', b'\x00[profile\tdev ]\n  region = x\n[unterminated\n=\n'
    b' s3 = \n\tendpoint_url = e\n\x00[default]\r\naws_access_key_id=\r\n'
    b'aws_secret_access_key=SECRET42\n' + b'x' * 5000 + b'\n')

# --- cache_map: byte 0 is the mode (see fuzz_cache_map.c), the rest edits the real map.
put('cache_map', 'unchanged', b'\x01')
put('cache_map', 'flip_magic', b'\x01' + struct.pack('<HB', 0, 0x20))
put('cache_map', 'flip_header_fields', b'\x01' + struct.pack('<HBHBHB', 9, 1, 20, 0x80, 40, 1))
put('cache_map', 'flip_path', b'\x01' + struct.pack('<HB', 66, 4))
for i, off in enumerate((512, 512 + 32, 512 + 64 + 16, 512 + 96 + 24)):
    put('cache_map', 'flip_record_%d' % i, b'\x01' + struct.pack('<HB', off, 0x01))
put('cache_map', 'flip_many', b'\x01' + b''.join(struct.pack('<HB', o, 0xff) for o in range(500, 700, 7)))
for cut in (0, 8, 63, 64, 100, 512, 544, 600):
    put('cache_map', 'cut_%d' % cut, b'\x02' + struct.pack('<H', cut))
put('cache_map', 'cut_then_garbage', b'\x02' + struct.pack('<H', 512) + b'\xff' * 64)
put('cache_map', 'overwrite_records_zero', b'\x03' + struct.pack('<H', 512) + b'\x00' * 128)
put('cache_map', 'overwrite_records_ones', b'\x03' + struct.pack('<H', 520) + b'\xff' * 200)
put('cache_map', 'extend', b'\x03' + struct.pack('<H', 65535) + b'\x01' * 32)
put('cache_map', 'raw_empty', b'\x00')
put('cache_map', 'raw_magic_only', b'\x00FERRYMAP\x01\x00\x00\x00\x00\x00\x01\x00')
put('cache_map', 'raw_text', b'\x00ferry-cache 1\nchunk_bytes 65536\n')

# --- listing: listings as the namespace keeps them (one component per entry).
put('listing', 'kept.list',
    'ferry-manifest 1\n'
    'd 0 1706004000.000000000 - sub\n'
    'f 12345 1706004000.500000000 %22abc%22 100%25.bin\n'
    'f 0 1706004000.000000000 - empty\n'
    'l 7 1706004000.000000000 - link sub%2Fx\n'
    'l 11 1706004000.000000000 - abs %2Fetc%2Fshadow\n'
    'f 3000000 1706004000.000000000 W%2F%22e-1%22 a%20b.txt\n')
put('listing', 'duplicates_and_unsafe.list',
    'ferry-manifest 1\nf 1 0 - b\nd 0 0 - b\nf 2 0 - a\nf 1 0 - a%2Fb\nf 1 0 - ..\n'
    'f 35184372088832 0 - huge\n')
put('listing', 'torn.list', 'ferry-manifest 1\nf 1 0 - a\nf 2 0 -')
put('listing', 'empty.list', '')
put('listing', 'header_only.list', 'ferry-manifest 1\n')
