/* The shared tier's format (fs/tier.h): key layout, metadata, and the verification that
 * decides whether a tier object may be served, fed a real chunk of bytes and its metadata
 * with every field changed, missing, doubled, and the bytes flipped, cut or lengthened. */
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "fs/remote/s3_sign.h"
#include "fs/tier.h"

#define CHUNK (1u << 20)

static unsigned char *chunk;
static struct tier_chunk_id id = {
	.source_id = 0x0123456789abcdefull,
	.path = "dir/a file\n\xc3\xa9.bin",
	.version = "\"9b2cf535f27731c974343645a3985328\"",
	.idx = 3,
	.off = 3ull * CHUNK,
	.len = CHUNK,
};
static struct s3_kv kv[TIER_NR_META];
static struct tier_meta meta;

static void setup(void)
{
	uint64_t x = 88172645463325252ull;

	chunk = malloc(CHUNK);
	cr_assert(chunk);
	for (size_t i = 0; i < CHUNK; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		chunk[i] = (unsigned char)x;
	}
	cr_assert_eq(tier_meta_make(&id, chunk, kv, &meta), 0);
}

static void teardown(void)
{
	tier_meta_done(&meta);
	free(chunk);
}

TestSuite(tier, .init = setup, .fini = teardown);

Test(tier, accepts_its_own_metadata_and_bytes)
{
	cr_assert(tier_verify(&id, kv, TIER_NR_META, chunk, CHUNK));
}

Test(tier, metadata_holds_every_field_percent_encoded)
{
	char hash[17];

	snprintf(hash, sizeof(hash), "%016" PRIx64, (uint64_t)XXH3_64bits(chunk, CHUNK));
	cr_assert_str_eq(kv[0].name, "ferry-format");
	cr_assert_str_eq(kv[0].value, "1");
	cr_assert_str_eq(kv[1].value, "0123456789abcdef");
	cr_assert_str_eq(kv[2].name, "ferry-path");
	cr_assert_str_eq(kv[2].value, "dir%2Fa%20file%0A%C3%A9.bin");
	cr_assert_str_eq(kv[3].value, "%229b2cf535f27731c974343645a3985328%22");
	cr_assert_str_eq(kv[4].value, "3145728");
	cr_assert_str_eq(kv[5].value, "1048576");
	cr_assert_str_eq(kv[6].name, "ferry-xxh3");
	cr_assert_str_eq(kv[6].value, hash);
}

Test(tier, key_is_prefix_source_name_hash_and_index)
{
	char want[256], name[256];
	size_t n = (size_t)snprintf(name, sizeof(name), "%s", id.path);
	char *k;

	/* XXH3-64 of path, NUL, version */
	n += 1 + (size_t)snprintf(name + n + 1, sizeof(name) - n - 1, "%s", id.version);
	snprintf(want, sizeof(want), "c/ferry-v1/0123456789abcdef/%016" PRIx64 "/3",
		(uint64_t)XXH3_64bits(name, n));
	k = tier_key("c/", &id);
	cr_assert_str_eq(k, want);
	free(k);
}

Test(tier, rejects_each_field_changed)
{
	for (int i = 0; i < TIER_NR_META; i++) {
		struct s3_kv bad[TIER_NR_META];
		char v[128];

		memcpy(bad, kv, sizeof(bad));
		snprintf(v, sizeof(v), "%s0", kv[i].value);
		bad[i].value = v;
		cr_assert_not(tier_verify(&id, bad, TIER_NR_META, chunk, CHUNK), "field %s",
			kv[i].name);
		/* the same text under another case is another value */
		if (i == 6) {
			for (char *p = v; *p; p++)
				*p = (char)(*p >= 'a' && *p <= 'f' ? *p - 32 : *p);
			v[strlen(v) - 1] = '\0';
			cr_assert_not(tier_verify(&id, bad, TIER_NR_META, chunk, CHUNK));
		}
	}
}

Test(tier, rejects_a_missing_or_doubled_field)
{
	for (int i = 0; i < TIER_NR_META; i++) {
		struct s3_kv bad[TIER_NR_META + 1];
		size_t n = 0;

		for (int j = 0; j < TIER_NR_META; j++)
			if (j != i)
				bad[n++] = kv[j];
		cr_assert_not(tier_verify(&id, bad, n, chunk, CHUNK), "without %s", kv[i].name);
		memcpy(bad, kv, sizeof(kv));
		bad[TIER_NR_META] = (struct s3_kv){ kv[i].name, "x" };
		cr_assert_not(tier_verify(&id, bad, TIER_NR_META + 1, chunk, CHUNK), "%s twice",
			kv[i].name);
	}
}

Test(tier, ignores_unknown_fields)
{
	struct s3_kv more[TIER_NR_META + 1];

	memcpy(more, kv, sizeof(kv));
	more[TIER_NR_META] = (struct s3_kv){ "owner", "someone" };
	cr_assert(tier_verify(&id, more, TIER_NR_META + 1, chunk, CHUNK));
}

Test(tier, rejects_a_flipped_byte_anywhere)
{
	size_t at[] = { 0, 1, CHUNK / 2, CHUNK - 1 };

	for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
		chunk[at[i]] ^= 0x01;
		cr_assert_not(tier_verify(&id, kv, TIER_NR_META, chunk, CHUNK), "byte %zu", at[i]);
		chunk[at[i]] ^= 0x01;
	}
	cr_assert(tier_verify(&id, kv, TIER_NR_META, chunk, CHUNK));
}

Test(tier, rejects_a_truncated_or_longer_object)
{
	cr_assert_not(tier_verify(&id, kv, TIER_NR_META, chunk, CHUNK - 1));
	cr_assert_not(tier_verify(&id, kv, TIER_NR_META, chunk, 0));
	cr_assert_not(tier_verify(&id, kv, TIER_NR_META, chunk, CHUNK + 1));
}

Test(tier, rejects_another_chunks_object)
{
	struct tier_chunk_id other = id;

	/* the next chunk of the same object, with its own bytes and metadata */
	other.idx = 4;
	other.off = 4ull * CHUNK;
	cr_assert_not(tier_verify(&other, kv, TIER_NR_META, chunk, CHUNK));
	other = id;
	other.version = "\"another\"";
	cr_assert_not(tier_verify(&other, kv, TIER_NR_META, chunk, CHUNK));
	other = id;
	other.path = "dir/another.bin";
	cr_assert_not(tier_verify(&other, kv, TIER_NR_META, chunk, CHUNK));
	other = id;
	other.source_id ^= 1;
	cr_assert_not(tier_verify(&other, kv, TIER_NR_META, chunk, CHUNK));
	/* a shorter last chunk at the same offset */
	other = id;
	other.len = CHUNK - 1;
	cr_assert_not(tier_verify(&other, kv, TIER_NR_META, chunk, CHUNK - 1));
}

Test(tier, parses_only_s3_bucket_urls)
{
	static const char *const bad[] = { "http://b/p", "s3://", "s3:///p", "s3://b c/p",
		"S3://b/p", "b/p", "" };
	char *b, *p, err[256];

	cr_assert_eq(tier_parse_url("s3://bkt/a/b", &b, &p, err, sizeof(err)), 0);
	cr_assert_str_eq(b, "bkt");
	cr_assert_str_eq(p, "a/b/");
	free(b);
	free(p);
	cr_assert_eq(tier_parse_url("s3://bkt", &b, &p, err, sizeof(err)), 0);
	cr_assert_str_eq(p, "");
	free(b);
	free(p);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		cr_assert_eq(tier_parse_url(bad[i], &b, &p, err, sizeof(err)), -EINVAL, "%s",
			bad[i]);
		cr_assert(err[0] && !strchr(err, '\n'));
	}
}
