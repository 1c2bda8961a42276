/* train/: what keeps a long run from being lost or silently ruined: the non-finite step guard
 * (a step whose loss or gradient norm is NaN or infinite is skipped, and a run of them stops the
 * job) and the stop signals (SIGTERM, SIGINT, SIGUSR1: finish the step, checkpoint, exit 75). */
#ifndef FERRY_TRAIN_GUARD_H
#define FERRY_TRAIN_GUARD_H

#include <stddef.h>

#include "train/comm.h"

/* Exit status of a run stopped by a signal after writing its checkpoint: EX_TEMPFAIL of
 * sysexits.h, "try again later": `ferry train --resume DIR` continues it bit for bit. */
#define GUARD_EXIT_STOPPED 75
/* Non-finite steps in a row that end the run (--max-bad-steps). */
#define GUARD_DEFAULT_MAX_BAD_STEPS 5

/* The non-finite guard of one run; the same on every rank, because loss and norm are (the loss
 * is all-reduced, the norm is taken of the all-reduced gradients). */
struct guard {
	int max_bad_steps; /* consecutive bad steps that end the run; 0: never */
	int bad_in_row;
	long long nr_skipped; /* over the whole process */
};

void guard_init(struct guard *g, int max_bad_steps);
/* 1 when loss or norm is not finite: the step must not update the weights. Counts it. */
int guard_step_is_bad(struct guard *g, float loss, float norm);
/* 1 once max_bad_steps bad steps came in a row. */
int guard_should_give_up(const struct guard *g);

/* 1 when all n floats are finite; otherwise 0 and *first_bad (if non-NULL) is the index of
 * the first that is not. */
int guard_all_finite(const float *p, size_t n, size_t *first_bad);

/* Installs the handlers of SIGTERM, SIGINT and SIGUSR1: the first asks the run to stop after
 * its current step; a second one ends the process at once, as the signal's default would. */
void guard_install_stop_signals(void);
/* The number of the first stop signal received, 0 when none (this process only). */
int guard_stop_signal(void);
/* "SIGTERM", "SIGINT", "SIGUSR1"; for 0 (none here): "a signal to another rank". */
const char *guard_signal_name(int sig);
/* Whether any rank received a stop signal: a collective, called by every rank once per step,
 * so all ranks stop after the same step. */
int guard_stop_agreed(struct comm *comm);

#endif
