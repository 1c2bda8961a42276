/* `ferry data make|inspect`: makes llm.c-format token shards from text with the built-in
 * byte-level tokenizer, and describes token files; the command-line face of shard.c. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loader/loader.h"
#include "loader/loader_i.h"

#define DEFAULT_SHARD_TOKENS 100000000ull
#define BYTE_VOCAB           256

static void usage(FILE *f)
{
	fprintf(f,
		"usage: ferry data make --text FILES... --out DIR [--val-fraction F] [--shard-tokens N]\n"
		"       ferry data inspect [--format auto|llmc|raw-u16|raw-u32|megatron] FILES...\n"
		"\n"
		"make     tokenizes text byte by byte (token = byte value, vocabulary 256) into llm.c\n"
		"         uint16 shards DIR/train_000000.bin ... and DIR/val_000000.bin ...; the last\n"
		"         F of the text (default 0.1) is the validation split; N tokens per shard\n"
		"         (default 100000000).\n"
		"inspect  prints each file's format, token width, token count and first tokens; a\n"
		"         malformed file, or one that is not a regular file (a FIFO, a\n"
		"         device), gets a one-line error at once and the exit status is 1.\n");
}

/* ---- make ---- */

/* One split's output: shards of at most shard_tokens tokens, the header written last. */
struct shard_writer {
	const char *dir, *split;
	uint64_t shard_tokens;
	uint32_t nr_shards;
	uint64_t in_shard, total;
	FILE *f;
	uint16_t buf[65536];
	size_t nbuf;
};

static int writer_flush(struct shard_writer *w)
{
	if (w->nbuf && fwrite(w->buf, 2, w->nbuf, w->f) != w->nbuf)
		return -EIO;
	w->nbuf = 0;
	return 0;
}

static int writer_close(struct shard_writer *w)
{
	int32_t hdr[LLMC_HEADER_INTS] = { LLMC_MAGIC_U16, LLMC_VERSION_U16, 0, BYTE_VOCAB };
	int ret;

	if (!w->f)
		return 0;
	ret = writer_flush(w);
	hdr[2] = (int32_t)w->in_shard;
	if (ret == 0 && (fseek(w->f, 0, SEEK_SET) != 0 || fwrite(hdr, sizeof(hdr), 1, w->f) != 1))
		ret = -EIO;
	if (fclose(w->f) != 0)
		ret = -EIO;
	w->f = NULL;
	return ret;
}

static int writer_put(struct shard_writer *w, uint8_t byte)
{
	int ret;

	if (w->f && w->in_shard == w->shard_tokens && (ret = writer_close(w)) < 0)
		return ret;
	if (!w->f) {
		char path[PATH_MAX];
		int32_t zero[LLMC_HEADER_INTS] = { 0 };

		snprintf(path, sizeof(path), "%s/%s_%06u.bin", w->dir, w->split, w->nr_shards);
		w->f = fopen(path, "wb");
		if (!w->f) {
			fprintf(stderr, "ferry data make: %s: %s\n", path, strerror(errno));
			return -errno;
		}
		if (fwrite(zero, sizeof(zero), 1, w->f) != 1)
			return -EIO;
		w->nr_shards++;
		w->in_shard = 0;
	}
	w->buf[w->nbuf++] = byte;
	w->in_shard++;
	w->total++;
	if (w->nbuf == sizeof(w->buf) / sizeof(w->buf[0]))
		return writer_flush(w);
	return 0;
}

static int parse_u64(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-')
		return -EINVAL;
	*out = v;
	return 0;
}

static int data_make(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "text", 0, 0, 't' },
		{ "out", 1, 0, 'o' },
		{ "val-fraction", 1, 0, 'v' },
		{ "shard-tokens", 1, 0, 's' },
		{ "help", 0, 0, 'h' },
		{ 0, 0, 0, 0 },
	};
	struct shard_writer *train = NULL, *val = NULL;
	uint64_t shard_tokens = DEFAULT_SHARD_TOKENS, total = 0, nr_val, pos = 0;
	double frac = 0.1;
	const char *out = NULL;
	bool text = false;
	static uint8_t chunk[1 << 20];
	int c, ret = 1, first;
	char *end;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 't':
			text = true;
			break;
		case 'o':
			out = optarg;
			break;
		case 'v':
			frac = strtod(optarg, &end);
			if (end == optarg || *end || !(frac >= 0 && frac < 1)) {
				fprintf(stderr,
					"ferry data make: --val-fraction must be in [0, 1)\n");
				return 1;
			}
			break;
		case 's':
			if (parse_u64(optarg, &shard_tokens) < 0 || shard_tokens == 0 ||
				shard_tokens > INT32_MAX) {
				fprintf(stderr, "ferry data make: --shard-tokens must be 1..%d\n",
					INT32_MAX);
				return 1;
			}
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 1;
		}
	}
	first = optind;
	if (!text || !out || first >= argc) {
		fprintf(stderr,
			"ferry data make: needs --text FILES... and --out DIR (see --help)\n");
		return 1;
	}
	for (int i = first; i < argc; i++) {
		struct stat sb;

		if (stat(argv[i], &sb) < 0 || !S_ISREG(sb.st_mode)) {
			fprintf(stderr, "ferry data make: %s: %s\n", argv[i],
				errno ? strerror(errno) : "not a regular file");
			return 1;
		}
		total += (uint64_t)sb.st_size;
	}
	if (total < 2) {
		fprintf(stderr, "ferry data make: no text to tokenize\n");
		return 1;
	}
	if (mkdir(out, 0755) < 0 && errno != EEXIST) {
		fprintf(stderr, "ferry data make: %s: %s\n", out, strerror(errno));
		return 1;
	}
	nr_val = (uint64_t)(frac * (double)total + 0.5);
	train = calloc(1, sizeof(*train));
	val = calloc(1, sizeof(*val));
	if (!train || !val) {
		fprintf(stderr, "ferry data make: out of memory\n");
		goto out;
	}
	*train =
		(struct shard_writer){ .dir = out, .split = "train", .shard_tokens = shard_tokens };
	*val = (struct shard_writer){ .dir = out, .split = "val", .shard_tokens = shard_tokens };
	for (int i = first; i < argc; i++) {
		int fd = open(argv[i], O_RDONLY | O_CLOEXEC);
		ssize_t n;

		if (fd < 0) {
			fprintf(stderr, "ferry data make: %s: %s\n", argv[i], strerror(errno));
			goto out;
		}
		while ((n = read(fd, chunk, sizeof(chunk))) > 0) {
			for (ssize_t k = 0; k < n && pos < total; k++, pos++) {
				struct shard_writer *w = pos < total - nr_val ? train : val;

				if (writer_put(w, chunk[k]) < 0) {
					close(fd);
					fprintf(stderr,
						"ferry data make: writing %s shards failed\n",
						w->split);
					goto out;
				}
			}
		}
		close(fd);
		if (n < 0) {
			fprintf(stderr, "ferry data make: %s: %s\n", argv[i], strerror(errno));
			goto out;
		}
	}
	if (writer_close(train) < 0 || writer_close(val) < 0) {
		fprintf(stderr, "ferry data make: writing shards failed\n");
		goto out;
	}
	printf("wrote %u train shards (%llu tokens) and %u val shards (%llu tokens) to %s, "
	       "vocab %d\n",
		train->nr_shards, (unsigned long long)train->total, val->nr_shards,
		(unsigned long long)val->total, out, BYTE_VOCAB);
	ret = 0;
out:
	if (train && train->f)
		fclose(train->f);
	if (val && val->f)
		fclose(val->f);
	free(train);
	free(val);
	return ret;
}

/* ---- inspect ---- */

static int inspect_one(const char *path, enum loader_format format)
{
	struct shard_info info;
	char err[512];
	const char *bin = path;
	char *bin_alloc = NULL;
	uint8_t buf[64];
	size_t n_show;
	ssize_t got;
	int fd;

	if (shard_probe(path, format, &info, err, sizeof(err)) < 0) {
		fprintf(stderr, "ferry data inspect: %s: %s\n", path, err);
		return 1;
	}
	if (info.format == LOADER_FORMAT_MEGATRON) {
		size_t len = strlen(path);

		bin_alloc = strdup(path);
		if (!bin_alloc)
			return 1;
		memcpy(bin_alloc + len - 4, ".bin", 4);
		bin = bin_alloc;
	}
	printf("%s: %s", path, shard_format_name(info.format));
	if (info.format == LOADER_FORMAT_LLMC || info.format == LOADER_FORMAT_MEGATRON)
		printf(" v%u", info.version);
	printf(", uint%u tokens, %llu tokens", info.token_bytes * 8,
		(unsigned long long)info.nr_tokens);
	if (info.format == LOADER_FORMAT_MEGATRON)
		printf(", %llu sequences", (unsigned long long)info.nr_seqs);
	if (info.vocab)
		printf(", vocab %u", info.vocab);
	n_show = info.nr_tokens < 16 ? (size_t)info.nr_tokens : 16;
	fd = shard_open_file(bin, 0, NULL, err, sizeof(err));
	got = fd >= 0 ? pread(fd, buf, n_show * info.token_bytes, (off_t)info.data_offset) : -1;
	if (fd >= 0)
		close(fd);
	if (got != (ssize_t)(n_show * info.token_bytes)) {
		printf("\n");
		fprintf(stderr, "ferry data inspect: %s: cannot read the first tokens%s%s\n", bin,
			fd < 0 ? ": " : "", fd < 0 ? err : "");
		free(bin_alloc);
		return 1;
	}
	free(bin_alloc);
	printf(", first:");
	for (size_t i = 0; i < n_show; i++) {
		uint32_t t;

		if (info.token_bytes == 2) {
			uint16_t v;

			memcpy(&v, buf + 2 * i, 2);
			t = v;
		} else {
			memcpy(&t, buf + 4 * i, 4);
		}
		printf(" %u", t);
	}
	printf("\n");
	return 0;
}

static int data_inspect(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "format", 1, 0, 'f' },
		{ "help", 0, 0, 'h' },
		{ 0, 0, 0, 0 },
	};
	enum loader_format format = LOADER_FORMAT_AUTO;
	int c, ret = 0;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'f':
			if (!strcmp(optarg, "llmc"))
				format = LOADER_FORMAT_LLMC;
			else if (!strcmp(optarg, "raw-u16"))
				format = LOADER_FORMAT_RAW_U16;
			else if (!strcmp(optarg, "raw-u32"))
				format = LOADER_FORMAT_RAW_U32;
			else if (!strcmp(optarg, "megatron"))
				format = LOADER_FORMAT_MEGATRON;
			else if (strcmp(optarg, "auto") != 0) {
				fprintf(stderr, "ferry data inspect: unknown format %s\n", optarg);
				return 1;
			}
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 1;
		}
	}
	if (optind >= argc) {
		fprintf(stderr, "ferry data inspect: no files given (see --help)\n");
		return 1;
	}
	for (int i = optind; i < argc; i++)
		ret |= inspect_one(argv[i], format);
	return ret;
}

int data_main(int argc, char **argv)
{
	/* argv[0] is "data" (or the tool's name); argv[1] the subcommand. */
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
		!strcmp(argv[1], "help")) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 1 : 0;
	}
	if (!strcmp(argv[1], "make"))
		return data_make(argc - 1, argv + 1);
	if (!strcmp(argv[1], "inspect"))
		return data_inspect(argc - 1, argv + 1);
	fprintf(stderr, "ferry data: unknown command %s (make or inspect; see --help)\n", argv[1]);
	return 1;
}
