/* Fuzz target for the shard header parsers of loader/shard.c (llm.c header, Megatron .idx,
 * and shard_probe on a real file): whatever the bytes, a parser returns 0 or -EINVAL with a
 * one-line reason, and what it accepts is consistent with the sizes it was given. Built as a
 * libFuzzer target by tests/fuzz/fuzz.sh (clang) and as a corpus replayer by meson.
 * Input: byte 0 picks the parser, bytes 1..8 the size of the other file (little endian), the
 * rest is the header / .idx / file content. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "loader/loader_i.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "fuzz_shard: invariant broken: %s\n", what);
		abort();
	}
}

static void check_err(int ret, const char *err)
{
	check(ret == 0 || ret == -EINVAL || ret == -EIO, "returns 0, -EINVAL or -EIO");
	if (ret < 0) {
		check(err[0] != '\0', "a failure says why");
		check(strchr(err, '\n') == NULL, "the reason is one line");
	}
}

static void fuzz_probe(const uint8_t *body, size_t n, enum loader_format format)
{
	struct shard_info info;
	char path[64], err[256] = "";
	int fd = memfd_create("fuzz_shard", MFD_CLOEXEC), ret;

	if (fd < 0)
		return;
	if (n && write(fd, body, n) != (ssize_t)n) {
		close(fd);
		return;
	}
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	ret = shard_probe(path, format, &info, err, sizeof(err));
	check_err(ret, err);
	if (ret == 0) {
		check(info.token_bytes == 2 || info.token_bytes == 4, "probe: token width");
		check(info.data_offset + info.nr_tokens * info.token_bytes == n,
			"probe: tokens fill the file exactly");
	}
	close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const enum loader_format formats[] = { LOADER_FORMAT_AUTO, LOADER_FORMAT_LLMC,
		LOADER_FORMAT_RAW_U16, LOADER_FORMAT_RAW_U32 };
	struct shard_info info;
	char err[256] = "";
	uint64_t declared;
	const uint8_t *body;
	size_t n;
	int ret;

	if (size < 9)
		return 0;
	memcpy(&declared, data + 1, 8);
	body = data + 9;
	n = size - 9;
	/* The parsers take a pointer and a length: give them a copy of exactly n bytes, so
	 * the sanitizer sees any read past the end. */
	uint8_t *copy = malloc(n ? n : 1);

	if (!copy)
		return 0;
	memcpy(copy, body, n);
	switch (data[0] % 4) {
	case 0:
		ret = shard_parse_llmc(copy, n, declared, &info, err, sizeof(err));
		check_err(ret, err);
		if (ret == 0) {
			check(n >= LLMC_HEADER_BYTES, "llmc: accepted a short header");
			check(info.token_bytes == 2 || info.token_bytes == 4, "llmc: token width");
			check(info.data_offset == LLMC_HEADER_BYTES, "llmc: data offset");
			check(info.nr_tokens < SHARD_MAX_TOKENS, "llmc: token count bound");
			check(info.data_offset + info.nr_tokens * info.token_bytes == declared,
				"llmc: header and file size agree");
		}
		break;
	case 1:
		ret = shard_parse_megatron_idx(copy, n, declared, &info, err, sizeof(err));
		check_err(ret, err);
		if (ret == 0) {
			check(info.token_bytes == 2 || info.token_bytes == 4, "idx: token width");
			check(MEGATRON_HDR_BYTES + info.nr_seqs * 12 <= n,
				"idx: counts fit the file");
			check(info.nr_tokens * info.token_bytes == declared,
				"idx: tokens fill the .bin exactly");
		}
		break;
	default:
		fuzz_probe(copy, n, formats[(data[0] >> 2) % 4]);
		break;
	}
	free(copy);
	return 0;
}
