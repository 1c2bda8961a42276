/* Unit tests of train/ckpt.c: llm.c model files (a file laid out by hand here loads into the
 * right tensors; ours have llm.c's header), state files, keeping the last N, and malformed
 * files rejected with one-line errors. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "train/ckpt.h"
#include "train/comm.h"
#include "train/model.h"

static char dir[64];

static void make_dir(void)
{
	snprintf(dir, sizeof(dir), "/tmp/test_ckpt.XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void remove_dir(void)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_assert_eq(system(cmd), 0);
}

TestSuite(ckpt, .init = make_dir, .fini = remove_dir);

static struct gpt2_config cfg(void)
{
	struct gpt2_config c = { .max_seq_len = 8,
		.vocab_size = 300,
		.padded_vocab_size = gpt2_padded_vocab(300),
		.nr_layers = 2,
		.nr_heads = 2,
		.channels = 8 };
	return c;
}

static void one_line_error(const char *err)
{
	cr_assert(strlen(err) > 0, "no error message");
	cr_assert_null(strchr(err, '\n'), "error spans lines: %s", err);
}

static void write_bytes(const char *path, const void *data, size_t n)
{
	FILE *f = fopen(path, "wb");
	cr_assert_not_null(f);
	cr_assert_eq(fwrite(data, 1, n, f), n);
	fclose(f);
}

static char *read_bytes(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	cr_assert_not_null(f);
	fseek(f, 0, SEEK_END);
	*n = (size_t)ftell(f);
	fseek(f, 0, SEEK_SET);
	char *buf = malloc(*n);
	cr_assert_eq(fread(buf, 1, *n, f), *n);
	fclose(f);
	return buf;
}

/* The layout of llm.c's train_gpt2.c, written out independently: tensor k holds the value k+1. */
Test(ckpt, loads_an_llmc_model_file_into_the_right_tensors)
{
	int maxT = 8, V = 300, Vp = 384, L = 2, NH = 2, C = 8;
	size_t sizes[16] = { (size_t)Vp * C, (size_t)maxT * C, L * C, L * C, L * 3 * C * C,
		L * 3 * C, L * C * C, L * C, L * C, L * C, L * 4 * C * C, L * 4 * C, L * C * 4 * C,
		L * C, C, C };
	size_t total = 0;
	for (int k = 0; k < 16; k++)
		total += sizes[k];
	int32_t header[256] = { 20240326, 3, maxT, V, L, NH, C, Vp };
	float *p = malloc(total * sizeof(float)), *q = p;
	for (int k = 0; k < 16; k++)
		for (size_t i = 0; i < sizes[k]; i++)
			*q++ = (float)(k + 1);
	char path[128];
	snprintf(path, sizeof(path), "%s/gpt2.bin", dir);
	FILE *f = fopen(path, "wb");
	fwrite(header, sizeof(header), 1, f);
	fwrite(p, sizeof(float), total, f);
	fclose(f);

	char err[512] = "";
	struct gpt2_config c;
	cr_assert_eq(ckpt_read_model_config(path, &c, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(c.padded_vocab_size, 384);
	struct gpt2 *m = gpt2_new(&c, 1, 4);
	cr_assert_eq(m->nr_params, total);
	cr_assert_eq(ckpt_read_model(path, m, err, sizeof(err)), 0, "%s", err);
	const struct gpt2_params *t = &m->params;
	const float *firsts[16] = { t->wte, t->wpe, t->ln1w, t->ln1b, t->qkvw, t->qkvb, t->attprojw,
		t->attprojb, t->ln2w, t->ln2b, t->fcw, t->fcb, t->fcprojw, t->fcprojb, t->lnfw,
		t->lnfb };
	for (int k = 0; k < 16; k++) {
		cr_assert_eq(firsts[k][0], (float)(k + 1), "tensor %d starts at the wrong place",
			k);
		cr_assert_eq(firsts[k][sizes[k] - 1], (float)(k + 1), "tensor %d ends wrong", k);
	}
	free(p);
	gpt2_free(m);
}

Test(ckpt, written_model_has_the_llmc_header_and_round_trips)
{
	struct gpt2_config c = cfg();
	struct gpt2 *m = gpt2_new(&c, 1, 4), *n = gpt2_new(&c, 1, 4);
	uint64_t rng = 5;
	gpt2_init_random(m, &rng);
	char path[128], err[512] = "";
	snprintf(path, sizeof(path), "%s/model.bin", dir);
	cr_assert_eq(ckpt_write_model(path, m, err, sizeof(err)), 0, "%s", err);
	size_t bytes;
	char *raw = read_bytes(path, &bytes);
	int32_t h[8];
	memcpy(h, raw, sizeof(h));
	int32_t want[8] = { 20240326, 3, 8, 300, 2, 2, 8, 384 };
	cr_assert(memcmp(h, want, sizeof(want)) == 0, "header %d %d %d %d %d %d %d %d", h[0], h[1],
		h[2], h[3], h[4], h[5], h[6], h[7]);
	cr_assert_eq(bytes, 1024 + m->nr_params * 4);
	cr_assert(memcmp(raw + 1024, m->params_memory, m->nr_params * 4) == 0);
	cr_assert_eq(ckpt_read_model(path, n, err, sizeof(err)), 0, "%s", err);
	cr_assert(memcmp(n->params_memory, m->params_memory, m->nr_params * 4) == 0);
	free(raw);
	gpt2_free(m);
	gpt2_free(n);
}

Test(ckpt, state_round_trips_moments_step_rng_loader_position_and_settings)
{
	struct gpt2_config c = cfg();
	struct gpt2 *m = gpt2_new(&c, 1, 4), *n = gpt2_new(&c, 1, 4);
	for (size_t i = 0; i < m->nr_params; i++) {
		m->m_memory[i] = (float)i * 0.5f;
		m->v_memory[i] = (float)i * 0.25f;
	}
	struct ckpt_state st = { .step = 1234,
		.rng = 0xdeadbeefcafef00dULL,
		.loader_epoch = 3,
		.loader_position = 77,
		.settings = "lr 0.0006\ndata /x/*.bin\n" };
	char path[128], err[512] = "";
	snprintf(path, sizeof(path), "%s/state.bin", dir);
	cr_assert_eq(ckpt_write_state(path, m, &st, err, sizeof(err)), 0, "%s", err);
	struct ckpt_state got;
	cr_assert_eq(ckpt_read_state(path, n, &got, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(got.step, 1234);
	cr_assert_eq(got.rng, 0xdeadbeefcafef00dULL);
	cr_assert_eq(got.loader_epoch, 3);
	cr_assert_eq(got.loader_position, 77);
	cr_assert_str_eq(got.settings, st.settings);
	cr_assert(memcmp(n->m_memory, m->m_memory, m->nr_params * 4) == 0);
	cr_assert(memcmp(n->v_memory, m->v_memory, m->nr_params * 4) == 0);
	ckpt_state_done(&got);
	gpt2_free(m);
	gpt2_free(n);
}

/* The loader's order settings change the order as the seed does: a checkpoint that lost them
 * would resume into another order whenever they were not the defaults. */
Test(ckpt, state_round_trips_the_loader_order_settings)
{
	struct gpt2_config c = cfg();
	struct gpt2 *m = gpt2_new(&c, 1, 4);
	struct ckpt_state st = { .step = 5,
		.rng = 6,
		.loader_epoch = 1,
		.loader_position = 2,
		.settings = "steps 20\n",
		.loader_block_bytes = 4096,
		.loader_window_blocks = 3 };
	struct ckpt_state got;
	char path[128], err[512] = "";

	snprintf(path, sizeof(path), "%s/state.bin", dir);
	cr_assert_eq(ckpt_write_state(path, m, &st, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(ckpt_read_state(path, m, &got, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(got.loader_block_bytes, 4096);
	cr_assert_eq(got.loader_window_blocks, 3);
	cr_assert_eq(got.loader_position, 2);
	ckpt_state_done(&got);
	gpt2_free(m);
}

/* A state file of version 1 (before the order settings were saved) still resumes; its
 * settings read as 0, "not recorded". */
Test(ckpt, a_version_1_state_file_reads_with_the_order_settings_unrecorded)
{
	struct gpt2_config c = cfg();
	struct gpt2 *m = gpt2_new(&c, 1, 4);
	struct ckpt_state st = { .step = 5,
		.rng = 6,
		.loader_epoch = 1,
		.loader_position = 2,
		.settings = "steps 20\n",
		.loader_block_bytes = 4096,
		.loader_window_blocks = 3 };
	struct ckpt_state got;
	char path[128], err[512] = "";
	size_t bytes, v1_bytes;
	char *v2, *v1;
	uint32_t one = 1;
	uint64_t sum = 0xcbf29ce484222325ull;

	snprintf(path, sizeof(path), "%s/state.bin", dir);
	cr_assert_eq(ckpt_write_state(path, m, &st, err, sizeof(err)), 0, "%s", err);
	v2 = read_bytes(path, &bytes);
	/* Version 1: the same file without the 8 bytes after the 52-byte header, and the FNV-1a
	 * of what precedes the sum. */
	v1_bytes = bytes - 8;
	v1 = malloc(v1_bytes);
	memcpy(v1, v2, 52);
	memcpy(v1 + 4, &one, 4);
	memcpy(v1 + 52, v2 + 60, bytes - 60 - 8);
	for (size_t i = 0; i < v1_bytes - 8; i++)
		sum = (sum ^ (unsigned char)v1[i]) * 0x100000001b3ull;
	memcpy(v1 + v1_bytes - 8, &sum, 8);
	write_bytes(path, v1, v1_bytes);
	cr_assert_eq(ckpt_read_state(path, m, &got, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(got.step, 5);
	cr_assert_eq(got.loader_position, 2);
	cr_assert_eq(got.loader_block_bytes, 0);
	cr_assert_eq(got.loader_window_blocks, 0);
	cr_assert_str_eq(got.settings, "steps 20\n");
	ckpt_state_done(&got);
	free(v1);
	free(v2);
	gpt2_free(m);
}

Test(ckpt, keeps_the_last_n_checkpoints_and_finds_the_newest)
{
	struct gpt2_config c = cfg();
	struct gpt2 *m = gpt2_new(&c, 1, 4);
	char err[512] = "", model[256], state[256];
	for (uint64_t step = 5; step <= 25; step += 5) {
		struct ckpt_state st = { .step = step,
			.rng = 1,
			.loader_position = step,
			.settings = "x 1\n" };
		cr_assert_eq(ckpt_save(dir, m, &st, 2, err, sizeof(err)), 0, "%s", err);
	}
	for (uint64_t step = 5; step <= 25; step += 5) {
		ckpt_paths(dir, step, model, state, sizeof(model));
		int want = step >= 20;
		cr_assert_eq(access(model, F_OK) == 0, want, "model of step %lu",
			(unsigned long)step);
		cr_assert_eq(access(state, F_OK) == 0, want, "state of step %lu",
			(unsigned long)step);
	}
	uint64_t latest = 0;
	cr_assert_eq(ckpt_latest(dir, &latest), 0);
	cr_assert_eq(latest, 25);
	/* a model file without its state file is an unfinished checkpoint */
	ckpt_paths(dir, 30, model, NULL, sizeof(model));
	cr_assert_eq(ckpt_write_model(model, m, err, sizeof(err)), 0);
	cr_assert_eq(ckpt_latest(dir, &latest), 0);
	cr_assert_eq(latest, 25);
	char tmp[300];
	snprintf(tmp, sizeof(tmp), "%s.tmp", model);
	cr_assert_neq(access(tmp, F_OK), 0, "temp file left behind");
	gpt2_free(m);
}

Test(ckpt, malformed_model_files_are_rejected_with_one_line_errors)
{
	struct gpt2_config c = cfg();
	struct gpt2 *m = gpt2_new(&c, 1, 4);
	char path[128], err[512];
	snprintf(path, sizeof(path), "%s/model.bin", dir);
	cr_assert_eq(ckpt_write_model(path, m, err, sizeof(err)), 0);
	size_t bytes;
	char *good = read_bytes(path, &bytes);
	char *bad = malloc(bytes);
	struct gpt2_config got;

	struct {
		const char *what;
		int offset; /* int32 index into the header to change, -1: truncate */
		int32_t value;
	} cases[] = {
		{ "wrong magic", 0, 12345 },
		{ "bf16 version", 1, 5 },
		{ "more layers than bytes", 4, 3 },
		{ "heads not dividing channels", 5, 3 },
		{ "negative channels", 6, -8 },
		{ "truncated", -1, 0 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memcpy(bad, good, bytes);
		size_t n = bytes;
		if (cases[i].offset >= 0)
			memcpy(bad + 4 * cases[i].offset, &cases[i].value, 4);
		else
			n = bytes - 4;
		write_bytes(path, bad, n);
		err[0] = '\0';
		cr_assert_eq(ckpt_read_model_config(path, &got, err, sizeof(err)), -EINVAL, "%s",
			cases[i].what);
		one_line_error(err);
		err[0] = '\0';
		cr_assert_eq(ckpt_read_model(path, m, err, sizeof(err)), -EINVAL, "%s",
			cases[i].what);
		one_line_error(err);
	}
	write_bytes(path, good, 100); /* shorter than a header */
	err[0] = '\0';
	cr_assert_eq(ckpt_read_model(path, m, err, sizeof(err)), -EINVAL);
	one_line_error(err);

	/* a good file of another shape does not load into this model */
	struct gpt2_config other = cfg();
	other.nr_layers = 3;
	struct gpt2 *o = gpt2_new(&other, 1, 4);
	cr_assert_eq(ckpt_write_model(path, o, err, sizeof(err)), 0);
	err[0] = '\0';
	cr_assert_eq(ckpt_read_model(path, m, err, sizeof(err)), -EINVAL);
	one_line_error(err);
	snprintf(path, sizeof(path), "%s/missing.bin", dir);
	cr_assert_eq(ckpt_read_model(path, m, err, sizeof(err)), -ENOENT);
	one_line_error(err);
	free(good);
	free(bad);
	gpt2_free(m);
	gpt2_free(o);
}

Test(ckpt, malformed_state_files_are_rejected_with_one_line_errors)
{
	struct gpt2_config c = cfg();
	struct gpt2 *m = gpt2_new(&c, 1, 4);
	struct ckpt_state st = { .step = 10,
		.rng = 1,
		.loader_position = 10,
		.settings = "steps 20\n" };
	char path[128], err[512];
	snprintf(path, sizeof(path), "%s/state.bin", dir);
	cr_assert_eq(ckpt_write_state(path, m, &st, err, sizeof(err)), 0);
	size_t bytes;
	char *good = read_bytes(path, &bytes);
	char *bad = malloc(bytes);
	struct ckpt_state got;
	size_t flips[] = { 0, 4, 9, 60, bytes / 2, bytes - 1 };
	for (size_t i = 0; i < sizeof(flips) / sizeof(flips[0]); i++) {
		memcpy(bad, good, bytes);
		bad[flips[i]] ^= 0x40;
		write_bytes(path, bad, bytes);
		err[0] = '\0';
		cr_assert_eq(ckpt_read_state(path, m, &got, err, sizeof(err)), -EINVAL,
			"byte %zu flipped", flips[i]);
		one_line_error(err);
	}
	size_t lengths[] = { 0, 10, bytes - 1 };
	for (size_t i = 0; i < sizeof(lengths) / sizeof(lengths[0]); i++) {
		write_bytes(path, good, lengths[i]);
		err[0] = '\0';
		cr_assert_eq(ckpt_read_state(path, m, &got, err, sizeof(err)), -EINVAL,
			"truncated to %zu", lengths[i]);
		one_line_error(err);
	}
	/* moments of another model size */
	struct gpt2_config other = cfg();
	other.channels = 16;
	struct gpt2 *o = gpt2_new(&other, 1, 4);
	write_bytes(path, good, bytes);
	err[0] = '\0';
	cr_assert_eq(ckpt_read_state(path, o, &got, err, sizeof(err)), -EINVAL);
	one_line_error(err);
	free(good);
	free(bad);
	gpt2_free(m);
	gpt2_free(o);
}

static int exists(const char *path)
{
	return access(path, F_OK) == 0;
}

Test(ckpt, non_finite_weights_are_never_written_and_never_rotate_out_finite_ones)
{
	struct gpt2_config c = cfg();
	struct gpt2 *m = gpt2_new(&c, 1, 4);
	char err[512] = "", model[256], state[256];
	for (uint64_t step = 1; step <= 2; step++) {
		struct ckpt_state st = { .step = step, .settings = "x 1\n" };
		cr_assert_eq(ckpt_save(dir, m, &st, 2, err, sizeof(err)), 0, "%s", err);
	}
	m->params_memory[17] = NAN;
	struct ckpt_state st = { .step = 3, .settings = "x 1\n" };
	cr_assert_eq(ckpt_save(dir, m, &st, 2, err, sizeof(err)), -EINVAL);
	one_line_error(err);
	cr_assert(strstr(err, "model_00000003.bin") && strstr(err, "not finite"), "%s", err);
	ckpt_paths(dir, 3, model, state, sizeof(model));
	cr_assert(!exists(model) && !exists(state), "a NaN checkpoint was written");
	for (uint64_t step = 1; step <= 2; step++) {
		ckpt_paths(dir, step, model, state, sizeof(model));
		cr_assert(exists(model) && exists(state), "finite checkpoint %lu rotated out",
			(unsigned long)step);
	}
	/* moments too: finite weights with an infinite moment are no checkpoint either */
	m->params_memory[17] = 0.0f;
	m->v_memory[3] = INFINITY;
	cr_assert_eq(ckpt_save(dir, m, &st, 2, err, sizeof(err)), -EINVAL);
	one_line_error(err);
	ckpt_paths(dir, 3, model, state, sizeof(model));
	cr_assert(!exists(model) && !exists(state),
		"a checkpoint with an infinite moment was written");
	gpt2_free(m);
}

/* 64-bit FNV-1a as ckpt.c's state files end with, to forge a well-formed bad file */
static uint64_t fnv(const void *data, size_t n)
{
	const unsigned char *p = data;
	uint64_t h = 0xcbf29ce484222325ULL;
	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

Test(ckpt, non_finite_weights_and_moments_are_refused_on_read)
{
	struct gpt2_config c = cfg();
	struct gpt2 *m = gpt2_new(&c, 1, 4);
	char path[128], err[512];
	snprintf(path, sizeof(path), "%s/model.bin", dir);
	cr_assert_eq(ckpt_write_model(path, m, err, sizeof(err)), 0, "%s", err);
	size_t n;
	char *buf = read_bytes(path, &n);
	float nan = NAN;
	memcpy(buf + 1024 + 5 * 4, &nan, 4);
	write_bytes(path, buf, n);
	free(buf);
	cr_assert_eq(ckpt_read_model(path, m, err, sizeof(err)), -EINVAL);
	one_line_error(err);
	cr_assert(strstr(err, path) && strstr(err, "parameter 5 "), "%s", err);

	snprintf(path, sizeof(path), "%s/state.bin", dir);
	struct ckpt_state st = { .step = 1, .settings = "x 1\n" }, got;
	cr_assert_eq(ckpt_write_state(path, m, &st, err, sizeof(err)), 0, "%s", err);
	buf = read_bytes(path, &n);
	float inf = -INFINITY;
	memcpy(buf + n - 8 - 4, &inf, 4); /* the last second moment */
	uint64_t sum = fnv(buf, n - 8);
	memcpy(buf + n - 8, &sum, 8);
	write_bytes(path, buf, n);
	free(buf);
	cr_assert_eq(ckpt_read_state(path, m, &got, err, sizeof(err)), -EINVAL);
	one_line_error(err);
	cr_assert(strstr(err, "second moment") && strstr(err, "not finite"), "%s", err);
	cr_assert_eq(ckpt_read_state(path, NULL, &got, err, sizeof(err)), -EINVAL);
	gpt2_free(m);
}

struct skips {
	int nr;
	uint64_t step;
	char reason[512];
};

static void note_skip(void *arg, uint64_t step, const char *reason)
{
	struct skips *s = arg;
	if (s->nr++ == 0) {
		s->step = step;
		snprintf(s->reason, sizeof(s->reason), "%s", reason);
	}
}

Test(ckpt, resume_takes_the_newest_checkpoint_that_verifies_and_names_the_skipped)
{
	struct gpt2_config c = cfg();
	struct gpt2 *m = gpt2_new(&c, 1, 4);
	char err[512] = "", model[256], state[256];
	uint64_t step = 0;
	struct skips sk = { 0 };
	cr_assert_eq(ckpt_find_resumable(dir, &step, note_skip, &sk), -ENOENT);
	for (uint64_t s = 10; s <= 30; s += 10) {
		struct ckpt_state st = { .step = s, .settings = "x 1\n" };
		cr_assert_eq(ckpt_save(dir, m, &st, 3, err, sizeof(err)), 0, "%s", err);
	}
	cr_assert_eq(ckpt_find_resumable(dir, &step, note_skip, &sk), 0);
	cr_assert_eq(step, 30);
	cr_assert_eq(sk.nr, 0);
	/* the newest model file cut short, as a crash during a copy leaves it */
	ckpt_paths(dir, 30, model, state, sizeof(model));
	cr_assert_eq(truncate(model, 2000), 0);
	cr_assert_eq(ckpt_find_resumable(dir, &step, note_skip, &sk), 0);
	cr_assert_eq(step, 20);
	cr_assert_eq(sk.nr, 1);
	cr_assert_eq(sk.step, 30);
	one_line_error(sk.reason);
	cr_assert(strstr(sk.reason, model), "the reason does not name the file: %s", sk.reason);
	/* and the one before it with another model's state file in place of its own */
	struct gpt2_config c2 = cfg();
	c2.nr_layers = 3;
	struct gpt2 *other = gpt2_new(&c2, 1, 4);
	ckpt_paths(dir, 20, NULL, state, sizeof(state));
	struct ckpt_state st = { .step = 20, .settings = "x 1\n" };
	cr_assert_eq(ckpt_write_state(state, other, &st, err, sizeof(err)), 0, "%s", err);
	sk.nr = 0;
	cr_assert_eq(ckpt_find_resumable(dir, &step, note_skip, &sk), 0);
	cr_assert_eq(step, 10);
	cr_assert_eq(sk.nr, 2);
	/* none left: -EINVAL, each named */
	ckpt_paths(dir, 10, NULL, state, sizeof(state));
	cr_assert_eq(truncate(state, 10), 0);
	sk.nr = 0;
	cr_assert_eq(ckpt_find_resumable(dir, &step, note_skip, &sk), -EINVAL);
	cr_assert_eq(sk.nr, 3);
	gpt2_free(other);
	gpt2_free(m);
}

Test(ckpt, rotation_leaves_checkpoints_newer_than_the_one_written)
{
	/* a run resumed from step 20 because step 30 did not verify: saving step 25 with --keep 2
	 * keeps 20 and 25; counting 30 would have removed 20, the last that verified before */
	struct gpt2_config c = cfg();
	struct gpt2 *m = gpt2_new(&c, 1, 4);
	char err[512] = "", model[256], state[256];
	uint64_t steps[] = { 10, 20, 30, 25 };
	for (size_t i = 0; i < 4; i++) {
		struct ckpt_state st = { .step = steps[i], .settings = "x 1\n" };
		cr_assert_eq(ckpt_save(dir, m, &st, 2, err, sizeof(err)), 0, "%s", err);
	}
	uint64_t want[] = { 20, 25, 30 };
	for (size_t i = 0; i < 3; i++) {
		ckpt_paths(dir, want[i], model, state, sizeof(model));
		cr_assert(exists(model) && exists(state), "step %lu removed",
			(unsigned long)want[i]);
	}
	ckpt_paths(dir, 10, model, state, sizeof(model));
	cr_assert(!exists(state), "step 10 kept beyond --keep 2");
	gpt2_free(m);
}

/* ---- sharded checkpoints: each resuming rank reads only its shards, and the ranks agree ---- */

/* R ranks as threads of this process, with the one collective ckpt_find_resumable_ranks uses:
 * each rank posts its buffer, then takes the element-wise maximum of all of them. */
#define MAX_RANKS 4
static struct {
	pthread_barrier_t barrier;
	uint64_t *bufs[MAX_RANKS];
} group;

static void threads_allreduce_max_u64(struct comm *c, uint64_t *buf, size_t n)
{
	uint64_t *max = calloc(n, sizeof(*max));
	cr_assert_not_null(max);
	group.bufs[c->rank] = buf;
	pthread_barrier_wait(&group.barrier);
	for (int r = 0; r < c->world_size; r++)
		for (size_t i = 0; i < n; i++)
			if (group.bufs[r][i] > max[i])
				max[i] = group.bufs[r][i];
	/* every rank has read every buffer before any is overwritten */
	pthread_barrier_wait(&group.barrier);
	memcpy(buf, max, n * sizeof(*buf));
	free(max);
}

static const struct comm_ops threads_ops = { .name = "threads",
	.allreduce_max_u64 = threads_allreduce_max_u64 };

/* What a search decided: its return, its step and every skipped step with its reason. */
struct decision {
	int rc;
	uint64_t step;
	char trail[2048];
};

static void note_trail(void *arg, uint64_t step, const char *reason)
{
	struct decision *d = arg;
	size_t len = strlen(d->trail);
	snprintf(d->trail + len, sizeof(d->trail) - len, "%llu: %s\n", (unsigned long long)step,
		reason);
}

struct rank_run {
	struct comm comm;
	const char *where;
	struct ckpt_slice slice;
	struct decision d;
};

static void *rank_main(void *arg)
{
	struct rank_run *r = arg;
	r->d.rc = ckpt_find_resumable_ranks(&r->comm, r->where, &r->slice, &r->d.step, note_trail,
		&r->d);
	return NULL;
}

/* ckpt_find_resumable_ranks on R ranks resuming at stage: every rank's decision, the same on
 * all of them, into *d */
static void decide_on_ranks(const char *where, int R, int stage, struct decision *d)
{
	struct rank_run runs[MAX_RANKS];
	pthread_t th[MAX_RANKS];
	cr_assert_eq(pthread_barrier_init(&group.barrier, NULL, (unsigned)R), 0);
	for (int r = 0; r < R; r++) {
		runs[r] = (struct rank_run){
			.comm = { .ops = &threads_ops, .rank = r, .world_size = R },
			.where = where,
			.slice = { R, r, stage }
		};
		cr_assert_eq(pthread_create(&th[r], NULL, rank_main, &runs[r]), 0);
	}
	for (int r = 0; r < R; r++)
		cr_assert_eq(pthread_join(th[r], NULL), 0);
	pthread_barrier_destroy(&group.barrier);
	for (int r = 1; r < R; r++) {
		cr_assert_eq(runs[r].d.rc, runs[0].d.rc, "ranks 0 and %d return differently", r);
		cr_assert(runs[r].d.rc < 0 || runs[r].d.step == runs[0].d.step,
			"ranks 0 and %d resume different steps", r);
		cr_assert_str_eq(runs[r].d.trail, runs[0].d.trail);
	}
	*d = runs[0].d;
}

/* A sharded checkpoint of m at step as W ranks write it, rank r's moments [bounds[r],
 * bounds[r + 1]) (a bound repeated: an empty shard). */
static void save_sharded(const char *where, struct gpt2 *m, uint64_t step, int W,
	const uint64_t *bounds)
{
	char err[512] = "", model[256];
	struct ckpt_shard_info info[MAX_RANKS];
	struct ckpt_state st = { .step = step, .settings = "x 1\n" };
	cr_assert_eq(ckpt_shard_begin(where, step, err, sizeof(err)), 0, "%s", err);
	for (int r = 0; r < W; r++) {
		uint64_t lo = bounds[r], hi = bounds[r + 1];
		cr_assert_eq(ckpt_write_shard(where, step, r, W, m->nr_params, lo, hi,
				     m->m_memory + lo, m->v_memory + lo, &info[r], err,
				     sizeof(err)),
			0, "%s", err);
	}
	ckpt_paths(where, step, model, NULL, sizeof(model));
	cr_assert_eq(ckpt_write_model(model, m, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(ckpt_write_manifest(where, &st, m->nr_params, 2, W, info, err, sizeof(err)), 0,
		"%s", err);
	cr_assert_eq(ckpt_finish_sharded(where, step, 0, err, sizeof(err)), 0, "%s", err);
}

static void flip_middle_byte(const char *path)
{
	size_t n;
	char *buf = read_bytes(path, &n);
	buf[n / 2] ^= 1;
	write_bytes(path, buf, n);
	free(buf);
}

static void sharded_file(char *path, size_t len, const char *where, const char *name)
{
	snprintf(path, len, "%s/%s", where, name);
}

/* Steps 10, 20 and 30 written by 2 ranks (ZeRO slices), step 40 by 3 with an empty last shard. */
static struct gpt2 *sharded_run(const char *where)
{
	struct gpt2_config c = cfg();
	struct gpt2 *m = gpt2_new(&c, 1, 4);
	cr_assert_not_null(m);
	for (size_t i = 0; i < m->nr_params; i++) {
		m->m_memory[i] = (float)i * 1e-3f;
		m->v_memory[i] = (float)i * 1e-6f;
	}
	cr_assert_eq(mkdir(where, 0755), 0);
	uint64_t n = m->nr_params, half = (n + 1) / 2;
	uint64_t two[] = { 0, half, n }, empty_last[] = { 0, half, n, n };
	for (uint64_t s = 10; s <= 30; s += 10)
		save_sharded(where, m, s, 2, two);
	save_sharded(where, m, 40, 3, empty_last);
	return m;
}

Test(ckpt, a_rank_reads_only_the_shards_of_its_slice)
{
	char where[128], path[256];
	snprintf(where, sizeof(where), "%s/run", dir);
	struct gpt2 *m = sharded_run(where);
	/* the newest, step 40: shard 1 damaged, which only the rank whose slice overlaps it (and
	 * none other) reads; one process standing for one rank of two */
	sharded_file(path, sizeof(path), where, "shard_00000040_00001.bin");
	flip_middle_byte(path);
	struct comm self;
	comm_self(&self);
	struct ckpt_slice first = { 2, 0, 2 }, second = { 2, 1, 2 }, all = { 2, 0, 0 };
	struct decision d = { 0 };
	cr_assert_eq(ckpt_find_resumable_ranks(&self, where, &first, &d.step, note_trail, &d), 0);
	cr_assert_eq(d.step, 40, "rank 0 of 2 read shard 1, outside its slice: %s", d.trail);
	cr_assert_eq(ckpt_find_resumable_ranks(&self, where, &second, &d.step, note_trail, &d), 0);
	cr_assert_eq(d.step, 30);
	cr_assert(strstr(d.trail, "40: ") && strstr(d.trail, "shard_00000040_00001.bin: XXH3"),
		"%s", d.trail);
	d.trail[0] = '\0';
	cr_assert_eq(ckpt_find_resumable_ranks(&self, where, &all, &d.step, note_trail, &d), 0);
	cr_assert_eq(d.step, 30, "stage 0 loads every moment, so it reads every shard");
	gpt2_free(m);
}

/* Each damage, on 1 to 4 ranks at stages 0 and 2, decides as ckpt_find_resumable (every file,
 * one process) does: the same step, the same skipped steps with the same reasons. */
Test(ckpt, ranks_reading_their_own_shards_decide_as_one_reading_every_shard, .timeout = 60)
{
	static const char *const damages[][2] = {
		{ "nothing", "" }, { "rm", "DONE_00000040" },
		{ "flip", "shard_00000040_00000.bin" }, { "flip", "shard_00000040_00001.bin" },
		{ "flip", "shard_00000040_00002.bin" }, /* the empty one: its header */
		{ "rm", "shard_00000040_00002.bin" }, { "rm", "shard_00000040_00001.bin" },
		{ "flip", "manifest_00000040.txt" },
		{ "cut", "model_00000040.bin" }, /* no checksum: a flipped bit is a weight */
		{ "flip+", "shard_00000030_00000.bin" }, /* 40 and 30: back to 20 */
		{ "all", "" },                           /* none verifies */
	};
	char base[128], where[160], path[256], cmd[512];
	snprintf(base, sizeof(base), "%s/base", dir);
	struct gpt2 *m = sharded_run(base);
	for (size_t k = 0; k < sizeof(damages) / sizeof(damages[0]); k++) {
		const char *how = damages[k][0], *name = damages[k][1];
		snprintf(where, sizeof(where), "%s/case%zu", dir, k);
		snprintf(cmd, sizeof(cmd), "cp -r '%s' '%s'", base, where);
		cr_assert_eq(system(cmd), 0);
		sharded_file(path, sizeof(path), where, name);
		if (strcmp(how, "rm") == 0)
			cr_assert_eq(unlink(path), 0);
		if (strncmp(how, "flip", 4) == 0)
			flip_middle_byte(path);
		if (strcmp(how, "cut") == 0)
			cr_assert_eq(truncate(path, 2000), 0);
		if (strcmp(how, "flip+") == 0) {
			sharded_file(path, sizeof(path), where, "shard_00000040_00001.bin");
			flip_middle_byte(path);
		}
		if (strcmp(how, "all") == 0)
			for (int s = 10; s <= 40; s += 10) {
				snprintf(path, sizeof(path), "%s/shard_%08d_00001.bin", where, s);
				flip_middle_byte(path);
			}
		struct decision want = { 0 }, got;
		want.rc = ckpt_find_resumable(where, &want.step, note_trail, &want);
		cr_assert(want.rc == 0 || strcmp(how, "all") == 0, "%s %s: %s", how, name,
			want.trail);
		cr_assert(strcmp(how, "nothing") == 0 || want.trail[0], "%s %s: not skipped", how,
			name);
		for (int R = 1; R <= MAX_RANKS; R++)
			for (int stage = 0; stage <= 2; stage += 2) {
				decide_on_ranks(where, R, stage, &got);
				cr_assert_eq(got.rc, want.rc, "%s %s, %d rank(s) at stage %d", how,
					name, R, stage);
				cr_assert(got.rc < 0 || got.step == want.step,
					"%s %s, %d rank(s) at stage %d: step %llu, want %llu", how,
					name, R, stage, (unsigned long long)got.step,
					(unsigned long long)want.step);
				cr_assert_str_eq(got.trail, want.trail,
					"%s %s, %d rank(s) at stage %d", how, name, R, stage);
			}
	}
	gpt2_free(m);
}
