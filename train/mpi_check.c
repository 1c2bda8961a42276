/* train/: a test driver for the data-parallel path (tests/integ/train_mpi_two_ranks_match_one.sh):
 * one optimizer step of a tiny model on a fixed batch of 2B sequences made here, without the
 * loader. One rank takes all 2B sequences; with two ranks each takes B of them and the
 * gradients are averaged by comm.h. Rank 0 writes the updated parameters to argv[1]. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>

#include "train/comm.h"
#include "train/model.h"

int main(int argc, char **argv)
{
	struct comm comm;
	if (argc != 2) {
		fprintf(stderr, "usage: train_mpi_check OUT.bin (under mpirun -np 1 or 2)\n");
		return 2;
	}
	comm_init_ranks(&comm, &argc, &argv, false); /* CPU ranks */
	if (comm.world_size > 2) {
		fprintf(stderr, "train_mpi_check: needs 1 or 2 ranks\n");
		return 2;
	}
	enum { TOTAL_B = 4, T = 16, V = 256 };
	int B = TOTAL_B / comm.world_size;
	struct gpt2_config c = { .max_seq_len = T,
		.vocab_size = V,
		.padded_vocab_size = V,
		.nr_layers = 2,
		.nr_heads = 2,
		.channels = 32 };
	struct gpt2 *m = gpt2_new(&c, B, T);
	uint64_t rng = 42;
	gpt2_init_random(m, &rng); /* the same weights on every rank */
	int32_t inputs[TOTAL_B * T], targets[TOTAL_B * T];
	uint32_t x = 7;
	for (int i = 0; i < TOTAL_B * T; i++) {
		x = x * 1664525u + 1013904223u;
		inputs[i] = (int32_t)((x >> 8) % V);
		x = x * 1664525u + 1013904223u;
		targets[i] = (int32_t)((x >> 8) % V);
	}
	const int32_t *in = inputs + comm.rank * B * T, *tg = targets + comm.rank * B * T;
	gpt2_zero_grad(m);
	gpt2_forward(m, in, tg);
	gpt2_backward(m, in, tg, 1.0f / (B * T));
	comm_allreduce_mean(&comm, m->grads_memory, m->nr_params);
	float loss = m->mean_loss;
	comm_allreduce_mean(&comm, &loss, 1);
	float norm = gpt2_grad_norm(m);
	struct adamw_config opt = { 0.9f, 0.95f, 1e-8f, 0.1f };
	gpt2_update(m, &opt, 1e-3f, norm > 1.0f ? 1.0f / norm : 1.0f, 1);
	if (comm.rank == 0) {
		printf("ranks %d loss %.7f grad norm %.7f\n", comm.world_size, loss, norm);
		FILE *f = fopen(argv[1], "wb");
		if (!f ||
			fwrite(m->params_memory, sizeof(float), m->nr_params, f) != m->nr_params) {
			perror(argv[1]);
			return 1;
		}
		fclose(f);
	}
	gpt2_free(m);
	comm_done(&comm);
	return 0;
}
