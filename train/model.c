/* train/: GPT-2 forward, backward and AdamW on the CPU (see model.h), the layers of layers.h
 * wired in the order of llm.c's train_gpt2.c. */
#include "train/model.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "train/layers.h"

const char *const gpt2_prof_names[GPT2_NR_PROF] = { "fwd encoder", "fwd layernorm",
	"fwd matmul qkv", "fwd attention", "fwd matmul attproj", "fwd matmul fc", "fwd gelu",
	"fwd matmul fcproj", "fwd residual", "fwd matmul lm head", "fwd softmax+xent",
	"bwd zeroing grad acts", "bwd softmax+xent", "bwd matmul lm head", "bwd layernorm",
	"bwd residual", "bwd matmul fcproj", "bwd gelu", "bwd matmul fc", "bwd matmul attproj",
	"bwd attention", "bwd matmul qkv", "bwd encoder" };

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Profiling: the time since *t (the end of the previous layer call) goes to kind. */
static void lap(struct gpt2 *m, double *t, int kind)
{
	if (!m->profile)
		return;
	double t1 = now_s();
	m->prof_s[kind] += t1 - *t;
	*t = t1;
}

int gpt2_padded_vocab(int vocab_size)
{
	if (vocab_size <= 256)
		return vocab_size;
	return (vocab_size + 127) / 128 * 128;
}

void gpt2_param_sizes(const struct gpt2_config *c, size_t s[GPT2_NR_PARAM_TENSORS])
{
	size_t Vp = c->padded_vocab_size, C = c->channels, L = c->nr_layers;
	s[0] = Vp * C;
	s[1] = (size_t)c->max_seq_len * C;
	s[2] = L * C;
	s[3] = L * C;
	s[4] = L * 3 * C * C;
	s[5] = L * 3 * C;
	s[6] = L * C * C;
	s[7] = L * C;
	s[8] = L * C;
	s[9] = L * C;
	s[10] = L * 4 * C * C;
	s[11] = L * 4 * C;
	s[12] = L * C * 4 * C;
	s[13] = L * C;
	s[14] = C;
	s[15] = C;
}

void gpt2_param_sizes_tp(const struct gpt2_config *c, int T, size_t s[GPT2_NR_PARAM_TENSORS])
{
	gpt2_param_sizes(c, s);
	if (T <= 1)
		return;
	for (int k = 0; k < GPT2_NR_PARAM_TENSORS; k++)
		if (gpt2_param_is_sharded(k))
			s[k] /= (size_t)T;
}

int gpt2_param_is_sharded(int tensor)
{
	return tensor == 4 || tensor == 5 || tensor == 6 || tensor == 10 || tensor == 11 ||
	       tensor == 12;
}

int gpt2_param_is_decayed(int tensor)
{
	return tensor == 0 || tensor == 1 || tensor == 4 || tensor == 6 || tensor == 10 ||
	       tensor == 12;
}

static void point_params(struct gpt2_params *p, float *mem, const size_t *sizes)
{
	float **ptrs[] = { &p->wte, &p->wpe, &p->ln1w, &p->ln1b, &p->qkvw, &p->qkvb, &p->attprojw,
		&p->attprojb, &p->ln2w, &p->ln2b, &p->fcw, &p->fcb, &p->fcprojw, &p->fcprojb,
		&p->lnfw, &p->lnfb };
	for (int i = 0; i < GPT2_NR_PARAM_TENSORS; i++) {
		*ptrs[i] = mem;
		mem += sizes[i];
	}
}

/* tp: the tensor ranks; qkv, atty, att, fch and fch_gelu hold the rank's heads and 4C/tp only */
static void act_sizes(const struct gpt2_config *c, int B, int T, int tp,
	size_t s[GPT2_NR_ACT_TENSORS])
{
	size_t L = c->nr_layers, C = c->channels, NH = c->nr_heads, Vp = c->padded_vocab_size;
	size_t N = (size_t)B * T, Cl = C / (size_t)tp, NHl = NH / (size_t)tp;
	s[0] = N * C;
	s[1] = L * N * C;
	s[2] = L * N;
	s[3] = L * N;
	s[4] = L * N * 3 * Cl;
	s[5] = L * N * Cl;
	s[6] = L * B * NHl * T * T;
	s[7] = L * N * C;
	s[8] = L * N * C;
	s[9] = L * N * C;
	s[10] = L * N;
	s[11] = L * N;
	s[12] = L * N * 4 * Cl;
	s[13] = L * N * 4 * Cl;
	s[14] = L * N * C;
	s[15] = L * N * C;
	s[16] = N * C;
	s[17] = N;
	s[18] = N;
	s[19] = N * Vp;
	s[20] = N * Vp;
	s[21] = N;
	s[22] = N;
}

static void point_acts(struct gpt2_acts *a, float *mem, const size_t *sizes)
{
	float **ptrs[] = { &a->encoded, &a->ln1, &a->ln1_mean, &a->ln1_rstd, &a->qkv, &a->atty,
		&a->att, &a->attproj, &a->residual2, &a->ln2, &a->ln2_mean, &a->ln2_rstd, &a->fch,
		&a->fch_gelu, &a->fcproj, &a->residual3, &a->lnf, &a->lnf_mean, &a->lnf_rstd,
		&a->logits, &a->probs, &a->losses, &a->scratch };
	for (int i = 0; i < GPT2_NR_ACT_TENSORS; i++) {
		*ptrs[i] = mem;
		mem += sizes[i];
	}
}

struct gpt2 *gpt2_new(const struct gpt2_config *config, int B, int T)
{
	return gpt2_new_tp(config, B, T, NULL);
}

struct gpt2 *gpt2_new_tp(const struct gpt2_config *config, int B, int T, const struct gpt2_tp *tp)
{
	const struct gpt2_config *c = config;
	int size = tp && tp->size > 1 ? tp->size : 1;
	if (c->nr_layers < 1 || c->nr_heads < 1 || c->channels < 1 ||
		c->channels % c->nr_heads != 0 || c->vocab_size < 1 ||
		c->padded_vocab_size < c->vocab_size || c->max_seq_len < 1 || B < 1 || T < 1 ||
		T > c->max_seq_len || c->nr_heads % size != 0 ||
		(size > 1 && (tp->rank < 0 || tp->rank >= size || !tp->allreduce_sum)))
		return NULL;
	struct gpt2 *m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	m->config = *c;
	m->tp = size > 1 ? *tp : (struct gpt2_tp){ .size = 1 };
	m->B = B;
	m->T = T;
	gpt2_param_sizes_tp(c, size, m->param_sizes);
	for (int i = 0; i < GPT2_NR_PARAM_TENSORS; i++)
		m->nr_params += m->param_sizes[i];
	act_sizes(c, B, T, size, m->act_sizes);
	size_t nr_acts = 0;
	for (int i = 0; i < GPT2_NR_ACT_TENSORS; i++)
		nr_acts += m->act_sizes[i];
	m->params_memory = calloc(m->nr_params, sizeof(float));
	m->grads_memory = calloc(m->nr_params, sizeof(float));
	m->m_memory = calloc(m->nr_params, sizeof(float));
	m->v_memory = calloc(m->nr_params, sizeof(float));
	m->acts_memory = calloc(nr_acts, sizeof(float));
	m->grad_acts_memory = calloc(nr_acts, sizeof(float));
	if (!m->params_memory || !m->grads_memory || !m->m_memory || !m->v_memory ||
		!m->acts_memory || !m->grad_acts_memory) {
		gpt2_free(m);
		return NULL;
	}
	point_params(&m->params, m->params_memory, m->param_sizes);
	point_params(&m->grads, m->grads_memory, m->param_sizes);
	point_acts(&m->acts, m->acts_memory, m->act_sizes);
	point_acts(&m->grad_acts, m->grad_acts_memory, m->act_sizes);
	return m;
}

struct gpt2 *gpt2_new_whole(const struct gpt2_config *config, bool moments)
{
	const struct gpt2_config *c = config;
	if (c->nr_layers < 1 || c->nr_heads < 1 || c->channels < 1 ||
		c->channels % c->nr_heads != 0 || c->vocab_size < 1 ||
		c->padded_vocab_size < c->vocab_size || c->max_seq_len < 1)
		return NULL;
	struct gpt2 *m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	m->config = *c;
	m->tp = (struct gpt2_tp){ .size = 1 };
	gpt2_param_sizes(c, m->param_sizes);
	for (int i = 0; i < GPT2_NR_PARAM_TENSORS; i++)
		m->nr_params += m->param_sizes[i];
	m->params_memory = calloc(m->nr_params, sizeof(float));
	if (moments) {
		m->m_memory = calloc(m->nr_params, sizeof(float));
		m->v_memory = calloc(m->nr_params, sizeof(float));
	}
	if (!m->params_memory || (moments && (!m->m_memory || !m->v_memory))) {
		gpt2_free(m);
		return NULL;
	}
	point_params(&m->params, m->params_memory, m->param_sizes);
	return m;
}

struct gpt2 *gpt2_new_view(const struct gpt2 *src, int B, int T)
{
	if (B < 1 || T < 1 || T > src->config.max_seq_len)
		return NULL;
	struct gpt2 *m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	m->config = src->config;
	m->tp = src->tp;
	m->B = B;
	m->T = T;
	m->is_view = 1;
	memcpy(m->param_sizes, src->param_sizes, sizeof(m->param_sizes));
	m->nr_params = src->nr_params;
	m->params = src->params;
	m->params_memory = src->params_memory;
	act_sizes(&m->config, B, T, m->tp.size, m->act_sizes);
	size_t nr_acts = 0;
	for (int i = 0; i < GPT2_NR_ACT_TENSORS; i++)
		nr_acts += m->act_sizes[i];
	m->acts_memory = calloc(nr_acts, sizeof(float));
	if (!m->acts_memory) {
		free(m);
		return NULL;
	}
	point_acts(&m->acts, m->acts_memory, m->act_sizes);
	return m;
}

int gpt2_pad_flat(struct gpt2 *m, size_t nr_floats)
{
	if (m->is_view || nr_floats < m->nr_params)
		return -EINVAL;
	float *p = realloc(m->params_memory, nr_floats * sizeof(float));
	if (!p)
		return -ENOMEM;
	m->params_memory = p;
	float *g = realloc(m->grads_memory, nr_floats * sizeof(float));
	if (!g)
		return -ENOMEM;
	m->grads_memory = g;
	size_t tail = nr_floats - m->nr_params;
	memset(p + m->nr_params, 0, tail * sizeof(float));
	memset(g + m->nr_params, 0, tail * sizeof(float));
	point_params(&m->params, m->params_memory, m->param_sizes);
	point_params(&m->grads, m->grads_memory, m->param_sizes);
	return 0;
}

void gpt2_free(struct gpt2 *m)
{
	if (!m)
		return;
	if (!m->is_view)
		free(m->params_memory);
	free(m->grads_memory);
	free(m->m_memory);
	free(m->v_memory);
	free(m->acts_memory);
	free(m->grad_acts_memory);
	free(m);
}

uint64_t rng_next(uint64_t *state)
{
	uint64_t x = *state;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545F4914F6CDD1DULL;
}

float rng_uniform(uint64_t *state)
{
	return (float)(rng_next(state) >> 40) / 16777216.0f;
}

float rng_normal(uint64_t *state)
{
	/* Box-Muller; u1 in (0, 1] so the log is finite */
	double u1 = 1.0 - (double)(rng_next(state) >> 11) / 9007199254740992.0;
	double u2 = (double)(rng_next(state) >> 11) / 9007199254740992.0;
	return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}

static void fill_normal(float *p, size_t n, float std, uint64_t *rng)
{
	for (size_t i = 0; i < n; i++)
		p[i] = rng_normal(rng) * std;
}

static void fill_const(float *p, size_t n, float v)
{
	for (size_t i = 0; i < n; i++)
		p[i] = v;
}

void gpt2_init_random(struct gpt2 *m, uint64_t *rng)
{
	const struct gpt2_config *c = &m->config;
	struct gpt2_params *p = &m->params;
	size_t C = c->channels, L = c->nr_layers;
	float proj_std = 0.02f / sqrtf(2.0f * (float)L);
	memset(m->params_memory, 0, m->nr_params * sizeof(float));
	/* padded vocabulary rows stay zero: no token selects them and no logit of theirs is used */
	fill_normal(p->wte, (size_t)c->vocab_size * C, 0.02f, rng);
	fill_normal(p->wpe, m->param_sizes[1], 0.02f, rng);
	fill_const(p->ln1w, L * C, 1.0f);
	fill_normal(p->qkvw, m->param_sizes[4], 0.02f, rng);
	fill_normal(p->attprojw, m->param_sizes[6], proj_std, rng);
	fill_const(p->ln2w, L * C, 1.0f);
	fill_normal(p->fcw, m->param_sizes[10], 0.02f, rng);
	fill_normal(p->fcprojw, m->param_sizes[12], proj_std, rng);
	fill_const(p->lnfw, C, 1.0f);
}

/* A sharded tensor per layer: nr_blocks blocks of block floats in the whole layout, of which
 * rank t of T holds [t * block / T, (t + 1) * block / T) of each (rows of q, k and v; the
 * input columns of each output row of the row-parallel weights; fc's rows). */
static void tp_blocks(int k, size_t C, size_t *nr_blocks, size_t *block)
{
	switch (k) {
	case 4: /* qkvw (3C, C): q's, k's, v's rows */
		*nr_blocks = 3;
		*block = C * C;
		return;
	case 5: /* qkvb (3C) */
		*nr_blocks = 3;
		*block = C;
		return;
	case 6: /* attprojw (C, C): the input columns of each row */
		*nr_blocks = C;
		*block = C;
		return;
	case 10: /* fcw (4C, C): rows */
		*nr_blocks = 1;
		*block = 4 * C * C;
		return;
	case 11: /* fcb (4C) */
		*nr_blocks = 1;
		*block = 4 * C;
		return;
	default: /* 12, fcprojw (C, 4C): the input columns of each row */
		*nr_blocks = C;
		*block = 4 * C;
		return;
	}
}

/* whole <-> rank t's shard (to_shard: whole to shard), tensor by tensor */
static void tp_copy(const struct gpt2 *m, int t, float *whole, float *shard, int to_shard)
{
	const struct gpt2_config *c = &m->config;
	size_t whole_sizes[GPT2_NR_PARAM_TENSORS], L = c->nr_layers, T = m->tp.size;
	gpt2_param_sizes(c, whole_sizes);
	for (int k = 0; k < GPT2_NR_PARAM_TENSORS; k++) {
		if (!gpt2_param_is_sharded(k) || T == 1) {
			if (to_shard)
				memcpy(shard, whole, whole_sizes[k] * sizeof(float));
			else
				memcpy(whole, shard, whole_sizes[k] * sizeof(float));
		} else {
			size_t nb, bw;
			tp_blocks(k, (size_t)c->channels, &nb, &bw);
			size_t bs = bw / T;
			for (size_t b = 0; b < L * nb; b++) {
				float *w = whole + b * bw + (size_t)t * bs, *s = shard + b * bs;
				if (to_shard)
					memcpy(s, w, bs * sizeof(float));
				else
					memcpy(w, s, bs * sizeof(float));
			}
		}
		whole += whole_sizes[k];
		shard += m->param_sizes[k];
	}
}

void gpt2_tp_scatter(const struct gpt2 *m, int t, const float *whole, float *shard)
{
	tp_copy(m, t, (float *)whole, shard, 1);
}

void gpt2_tp_gather(const struct gpt2 *m, int t, const float *shard, float *whole)
{
	tp_copy(m, t, whole, (float *)shard, 0);
}

float *gpt2_residual(struct gpt2 *m, int l, bool grad)
{
	struct gpt2_acts *a = grad ? &m->grad_acts : &m->acts;
	size_t NC = (size_t)m->B * m->T * m->config.channels;
	return l == 0 ? a->encoded : a->residual3 + (size_t)(l - 1) * NC;
}

void gpt2_forward_embed(struct gpt2 *m, const int32_t *inputs)
{
	struct gpt2_params *p = &m->params;
	double t = m->profile ? now_s() : 0.0;

	encoder_forward(m->acts.encoded, inputs, p->wte, p->wpe, m->B, m->T, m->config.channels);
	lap(m, &t, PROF_F_ENCODER);
}

/* Tensor parallel: buf (n) summed over the tensor group (nothing on one rank) */
static void tp_allreduce(struct gpt2 *m, float *buf, size_t n)
{
	if (m->tp.size > 1)
		m->tp.allreduce_sum(m->tp.arg, buf, n);
}

/* out (N, C) += bias, after a row-parallel matmul's all-reduce: the bias added once */
static void add_bias(float *out, const float *bias, int N, int C)
{
#pragma omp parallel for schedule(static)
	for (int i = 0; i < N; i++)
		for (int o = 0; o < C; o++)
			out[(size_t)i * C + o] += bias[o];
}

/* A row-parallel matmul (attproj, fcproj): on one rank matmul_forward itself, bias and all
 * (the 1-rank path keeps its bits); on T ranks each rank's partial sum over its input columns,
 * the all-reduce, then the bias. */
static void row_parallel_forward(struct gpt2 *m, float *out, const float *inp, const float *w,
	const float *bias, int N, int C, int OC)
{
	if (m->tp.size <= 1) {
		matmul_forward(out, inp, w, bias, N, C, OC);
		return;
	}
	matmul_forward(out, inp, w, NULL, N, C, OC);
	tp_allreduce(m, out, (size_t)N * OC);
	add_bias(out, bias, N, OC);
}

void gpt2_forward_block(struct gpt2 *m, int l)
{
	const struct gpt2_config *c = &m->config;
	int B = m->B, T = m->T, C = c->channels, N = B * T;
	/* this tensor rank's channels of attention and of the MLP's hidden layer (all of them on
	 * one rank), and its heads */
	int Cl = C / m->tp.size, NHl = c->nr_heads / m->tp.size;
	struct gpt2_params *p = &m->params;
	struct gpt2_acts *a = &m->acts;
	double t = m->profile ? now_s() : 0.0;
	size_t nc = (size_t)l * N * C, ncl = (size_t)l * N * Cl;
	const float *residual = gpt2_residual(m, l, false);
	float *ln1 = a->ln1 + nc, *qkv = a->qkv + 3 * ncl, *atty = a->atty + ncl;
	float *att = a->att + (size_t)l * B * NHl * T * T, *attproj = a->attproj + nc;
	float *residual2 = a->residual2 + nc, *ln2 = a->ln2 + nc;
	float *fch = a->fch + 4 * ncl, *fch_gelu = a->fch_gelu + 4 * ncl;
	float *fcproj = a->fcproj + nc, *residual3 = a->residual3 + nc;

	layernorm_forward(ln1, a->ln1_mean + (size_t)l * N, a->ln1_rstd + (size_t)l * N, residual,
		p->ln1w + l * C, p->ln1b + l * C, N, C);
	lap(m, &t, PROF_F_LAYERNORM);
	matmul_forward(qkv, ln1, p->qkvw + (size_t)l * 3 * Cl * C, p->qkvb + l * 3 * Cl, N, C,
		3 * Cl);
	lap(m, &t, PROF_F_QKV);
	attention_forward(atty, att, qkv, B, T, Cl, NHl);
	lap(m, &t, PROF_F_ATTENTION);
	row_parallel_forward(m, attproj, atty, p->attprojw + (size_t)l * C * Cl,
		p->attprojb + l * C, N, Cl, C);
	lap(m, &t, PROF_F_ATTPROJ);
	residual_forward(residual2, residual, attproj, N * C);
	lap(m, &t, PROF_F_RESIDUAL);
	layernorm_forward(ln2, a->ln2_mean + (size_t)l * N, a->ln2_rstd + (size_t)l * N, residual2,
		p->ln2w + l * C, p->ln2b + l * C, N, C);
	lap(m, &t, PROF_F_LAYERNORM);
	matmul_forward(fch, ln2, p->fcw + (size_t)l * 4 * Cl * C, p->fcb + l * 4 * Cl, N, C,
		4 * Cl);
	lap(m, &t, PROF_F_FC);
	gelu_forward(fch_gelu, fch, N * 4 * Cl);
	lap(m, &t, PROF_F_GELU);
	row_parallel_forward(m, fcproj, fch_gelu, p->fcprojw + (size_t)l * C * 4 * Cl,
		p->fcprojb + l * C, N, 4 * Cl, C);
	lap(m, &t, PROF_F_FCPROJ);
	residual_forward(residual3, residual2, fcproj, N * C);
	lap(m, &t, PROF_F_RESIDUAL);
}

void gpt2_forward_head(struct gpt2 *m, const int32_t *targets)
{
	const struct gpt2_config *c = &m->config;
	int C = c->channels, V = c->vocab_size, Vp = c->padded_vocab_size, N = m->B * m->T;
	struct gpt2_params *p = &m->params;
	struct gpt2_acts *a = &m->acts;
	double t = m->profile ? now_s() : 0.0;

	layernorm_forward(a->lnf, a->lnf_mean, a->lnf_rstd, gpt2_residual(m, c->nr_layers, false),
		p->lnfw, p->lnfb, N, C);
	lap(m, &t, PROF_F_LAYERNORM);
	matmul_forward(a->logits, a->lnf, p->wte, NULL, N, C, Vp);
	lap(m, &t, PROF_F_LMHEAD);
	if (!targets) {
		m->mean_loss = -1.0f;
		return;
	}
	softmax_crossentropy_forward(a->losses, a->probs, a->logits, targets, N, V, Vp);
	lap(m, &t, PROF_F_SOFTMAX);
	double sum = 0.0;
	for (int i = 0; i < N; i++)
		sum += a->losses[i];
	m->mean_loss = (float)(sum / N);
}

void gpt2_forward(struct gpt2 *m, const int32_t *inputs, const int32_t *targets)
{
	gpt2_forward_embed(m, inputs);
	for (int l = 0; l < m->config.nr_layers; l++)
		gpt2_forward_block(m, l);
	gpt2_forward_head(m, targets);
}

void gpt2_zero_grad(struct gpt2 *m)
{
	memset(m->grads_memory, 0, m->nr_params * sizeof(float));
}

void gpt2_backward_begin(struct gpt2 *m)
{
	double t = m->profile ? now_s() : 0.0;
	size_t nr_acts = 0;
	for (int i = 0; i < GPT2_NR_ACT_TENSORS; i++)
		nr_acts += m->act_sizes[i];
	memset(m->grad_acts_memory, 0, nr_acts * sizeof(float));
	lap(m, &t, PROF_B_ZERO);
}

void gpt2_backward_head(struct gpt2 *m, const int32_t *targets, float loss_scale)
{
	const struct gpt2_config *c = &m->config;
	int C = c->channels, L = c->nr_layers, V = c->vocab_size, Vp = c->padded_vocab_size;
	int N = m->B * m->T;
	struct gpt2_params *p = &m->params, *g = &m->grads;
	struct gpt2_acts *a = &m->acts, *d = &m->grad_acts;
	double t = m->profile ? now_s() : 0.0;

	for (int i = 0; i < N; i++)
		d->scratch[i] = loss_scale;
	softmax_crossentropy_backward(d->logits, a->probs, targets, d->scratch, N, V, Vp);
	lap(m, &t, PROF_B_SOFTMAX);
	matmul_backward(d->lnf, g->wte, NULL, d->logits, a->lnf, p->wte, N, C, Vp);
	lap(m, &t, PROF_B_LMHEAD);
	layernorm_backward(gpt2_residual(m, L, true), g->lnfw, g->lnfb, d->lnf,
		gpt2_residual(m, L, false), p->lnfw, a->lnf_mean, a->lnf_rstd, N, C);
	lap(m, &t, PROF_B_LAYERNORM);
}

void gpt2_backward_block(struct gpt2 *m, int l)
{
	const struct gpt2_config *c = &m->config;
	int B = m->B, T = m->T, C = c->channels, N = B * T;
	int Cl = C / m->tp.size, NHl = c->nr_heads / m->tp.size; /* as in gpt2_forward_block */
	struct gpt2_params *p = &m->params, *g = &m->grads;
	struct gpt2_acts *a = &m->acts, *d = &m->grad_acts;
	double t = m->profile ? now_s() : 0.0;
	size_t nc = (size_t)l * N * C, ncl = (size_t)l * N * Cl, nl = (size_t)l * N;
	const float *residual = gpt2_residual(m, l, false);
	float *dresidual = gpt2_residual(m, l, true);

	residual_backward(d->residual2 + nc, d->fcproj + nc, d->residual3 + nc, N * C);
	lap(m, &t, PROF_B_RESIDUAL);
	/* row-parallel: the output gradient is whole on every rank, the bias's gradient too */
	matmul_backward(d->fch_gelu + 4 * ncl, g->fcprojw + (size_t)l * C * 4 * Cl,
		g->fcprojb + l * C, d->fcproj + nc, a->fch_gelu + 4 * ncl,
		p->fcprojw + (size_t)l * C * 4 * Cl, N, 4 * Cl, C);
	lap(m, &t, PROF_B_FCPROJ);
	gelu_backward(d->fch + 4 * ncl, a->fch + 4 * ncl, d->fch_gelu + 4 * ncl, N * 4 * Cl);
	lap(m, &t, PROF_B_GELU);
	/* column-parallel: each rank's part of the input gradient, summed (d->ln2 was zero) */
	matmul_backward(d->ln2 + nc, g->fcw + (size_t)l * 4 * Cl * C, g->fcb + l * 4 * Cl,
		d->fch + 4 * ncl, a->ln2 + nc, p->fcw + (size_t)l * 4 * Cl * C, N, C, 4 * Cl);
	tp_allreduce(m, d->ln2 + nc, (size_t)N * C);
	lap(m, &t, PROF_B_FC);
	layernorm_backward(d->residual2 + nc, g->ln2w + l * C, g->ln2b + l * C, d->ln2 + nc,
		a->residual2 + nc, p->ln2w + l * C, a->ln2_mean + nl, a->ln2_rstd + nl, N, C);
	lap(m, &t, PROF_B_LAYERNORM);
	residual_backward(dresidual, d->attproj + nc, d->residual2 + nc, N * C);
	lap(m, &t, PROF_B_RESIDUAL);
	matmul_backward(d->atty + ncl, g->attprojw + (size_t)l * C * Cl, g->attprojb + l * C,
		d->attproj + nc, a->atty + ncl, p->attprojw + (size_t)l * C * Cl, N, Cl, C);
	lap(m, &t, PROF_B_ATTPROJ);
	attention_backward(d->qkv + 3 * ncl, d->atty + ncl, a->qkv + 3 * ncl,
		a->att + (size_t)l * B * NHl * T * T, B, T, Cl, NHl);
	lap(m, &t, PROF_B_ATTENTION);
	matmul_backward(d->ln1 + nc, g->qkvw + (size_t)l * 3 * Cl * C, g->qkvb + l * 3 * Cl,
		d->qkv + 3 * ncl, a->ln1 + nc, p->qkvw + (size_t)l * 3 * Cl * C, N, C, 3 * Cl);
	tp_allreduce(m, d->ln1 + nc, (size_t)N * C);
	lap(m, &t, PROF_B_QKV);
	layernorm_backward(dresidual, g->ln1w + l * C, g->ln1b + l * C, d->ln1 + nc, residual,
		p->ln1w + l * C, a->ln1_mean + nl, a->ln1_rstd + nl, N, C);
	lap(m, &t, PROF_B_LAYERNORM);
	if (m->grads_ready)
		m->grads_ready(m->grads_ready_arg, m, l);
}

void gpt2_backward_embed(struct gpt2 *m, const int32_t *inputs)
{
	double t = m->profile ? now_s() : 0.0;

	encoder_backward(m->grads.wte, m->grads.wpe, m->grad_acts.encoded, inputs, m->B, m->T,
		m->config.channels);
	lap(m, &t, PROF_B_ENCODER);
	if (m->grads_ready)
		m->grads_ready(m->grads_ready_arg, m, GPT2_GRADS_EMBEDDINGS);
}

void gpt2_backward(struct gpt2 *m, const int32_t *inputs, const int32_t *targets, float loss_scale)
{
	gpt2_backward_begin(m);
	gpt2_backward_head(m, targets, loss_scale);
	for (int l = m->config.nr_layers - 1; l >= 0; l--)
		gpt2_backward_block(m, l);
	gpt2_backward_embed(m, inputs);
}

/* Fixed chunks summed in a fixed order: the same norm whatever the number of threads. */
#define NORM_CHUNK 65536

double gpt2_sum_squares(const float *g, size_t n)
{
	size_t nr_chunks = (n + NORM_CHUNK - 1) / NORM_CHUNK;
	double *partial = calloc(nr_chunks ? nr_chunks : 1, sizeof(double));
	if (!partial)
		abort();
#pragma omp parallel for schedule(static)
	for (size_t k = 0; k < nr_chunks; k++) {
		size_t end = (k + 1) * NORM_CHUNK < n ? (k + 1) * NORM_CHUNK : n;
		double s = 0.0;
		for (size_t i = k * NORM_CHUNK; i < end; i++)
			s += (double)g[i] * g[i];
		partial[k] = s;
	}
	double sum = 0.0;
	for (size_t k = 0; k < nr_chunks; k++)
		sum += partial[k];
	free(partial);
	return sum;
}

double gpt2_sum_squares_tp(const struct gpt2 *m, const float *g, size_t lo, size_t hi)
{
	double sum = 0.0;
	size_t off = 0;
	for (int k = 0; k < GPT2_NR_PARAM_TENSORS; k++) {
		size_t start = off > lo ? off : lo, end = off + m->param_sizes[k];
		off = end;
		if (end > hi)
			end = hi;
		if (start >= end || (!gpt2_param_is_sharded(k) && m->tp.rank != 0))
			continue;
		sum += gpt2_sum_squares(g + (start - lo), end - start);
	}
	return sum;
}

double gpt2_grad_sum_squares(const struct gpt2 *m, size_t lo, size_t hi)
{
	if (lo >= hi)
		return 0.0;
	if (m->tp.size <= 1)
		return gpt2_sum_squares(m->grads_memory + lo, hi - lo);
	return gpt2_sum_squares_tp(m, m->grads_memory + lo, lo, hi);
}

double gpt2_tp_sum(const struct gpt2 *m, double x)
{
	if (m->tp.size <= 1)
		return x;
	float sum = (float)x;
	m->tp.allreduce_sum(m->tp.arg, &sum, 1);
	return sum;
}

float gpt2_grad_norm(const struct gpt2 *m)
{
	/* under tensor parallelism sqrt of a float sum: (float)sqrt((double)f) is sqrtf(f) */
	return (float)sqrt(gpt2_tp_sum(m, gpt2_grad_sum_squares(m, 0, m->nr_params)));
}

void gpt2_update_slice(struct gpt2 *m, const struct adamw_config *opt, float lr, float grad_scale,
	int t, size_t lo, size_t hi, const float *grads, float *mm, float *vv)
{
	float b1 = opt->beta1, b2 = opt->beta2;
	float c1 = 1.0f - powf(b1, (float)t), c2 = 1.0f - powf(b2, (float)t);
	size_t off = 0;
	/* tensor by tensor (their decay differs), each cut to [lo, hi) */
	for (int k = 0; k < GPT2_NR_PARAM_TENSORS; k++) {
		size_t start = off > lo ? off : lo, end = off + m->param_sizes[k];
		off = end;
		if (end > hi)
			end = hi;
		if (start >= end)
			continue;
		float wd = gpt2_param_is_decayed(k) ? opt->weight_decay : 0.0f;
		float *p = m->params_memory + start;
		const float *g = grads + (start - lo);
		float *mk = mm + (start - lo), *vk = vv + (start - lo);
		size_t n = end - start;
#pragma omp parallel for schedule(static)
		for (size_t i = 0; i < n; i++) {
			float grad = g[i] * grad_scale;
			float mi = b1 * mk[i] + (1.0f - b1) * grad;
			float vi = b2 * vk[i] + (1.0f - b2) * grad * grad;
			mk[i] = mi;
			vk[i] = vi;
			float mhat = mi / c1, vhat = vi / c2;
			p[i] -= lr * (mhat / (sqrtf(vhat) + opt->eps) + wd * p[i]);
		}
	}
}

void gpt2_update(struct gpt2 *m, const struct adamw_config *opt, float lr, float grad_scale, int t)
{
	gpt2_update_slice(m, opt, lr, grad_scale, t, 0, m->nr_params, m->grads_memory, m->m_memory,
		m->v_memory);
}

float lr_schedule(float lr, int step, int warmup, int nr_steps, float final_frac)
{
	if (step < warmup)
		return lr * (float)(step + 1) / (float)warmup;
	if (nr_steps - 1 <= warmup)
		return lr;
	float ratio = (float)(step - warmup) / (float)(nr_steps - 1 - warmup);
	if (ratio > 1.0f)
		ratio = 1.0f;
	float coeff = 0.5f * (1.0f + cosf((float)M_PI * ratio));
	float lr_min = lr * final_frac;
	return lr_min + coeff * (lr - lr_min);
}

void gpt2_point_acts(struct gpt2 *m, float *mem)
{
	point_acts(&m->acts, mem ? mem : m->acts_memory, m->act_sizes);
}
