/* train/: the non-finite step guard and the stop signals of `ferry train` (guard.h). */
#include "train/guard.h"

#include <math.h>
#include <signal.h>
#include <string.h>

void guard_init(struct guard *g, int max_bad_steps)
{
	memset(g, 0, sizeof(*g));
	g->max_bad_steps = max_bad_steps;
}

int guard_step_is_bad(struct guard *g, float loss, float norm)
{
	if (isfinite(loss) && isfinite(norm)) {
		g->bad_in_row = 0;
		return 0;
	}
	g->bad_in_row++;
	g->nr_skipped++;
	return 1;
}

int guard_should_give_up(const struct guard *g)
{
	return g->max_bad_steps > 0 && g->bad_in_row >= g->max_bad_steps;
}

int guard_all_finite(const float *p, size_t n, size_t *first_bad)
{
	for (size_t i = 0; i < n; i++)
		if (!isfinite(p[i])) {
			if (first_bad)
				*first_bad = i;
			return 0;
		}
	return 1;
}

static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig)
{
	if (stop_signal) {
		/* the second: the user means now; die of it as if never caught */
		signal(sig, SIG_DFL);
		raise(sig);
		return;
	}
	stop_signal = sig;
}

void guard_install_stop_signals(void)
{
	static const int sigs[] = { SIGTERM, SIGINT, SIGUSR1 };
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop_signal;
	sigemptyset(&sa.sa_mask);
	/* SA_RESTART: a read of the loader's must not fail with EINTR because of a stop request */
	sa.sa_flags = SA_RESTART;
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaction(sigs[i], &sa, NULL);
}

int guard_stop_signal(void)
{
	return stop_signal;
}

int guard_stop_agreed(struct comm *comm)
{
	float flag = stop_signal ? 1.0f : 0.0f;
	/* one float per step: nothing beside the gradients' all-reduce */
	if (comm->world_size > 1)
		comm->ops->allreduce_sum(comm, &flag, 1);
	return flag > 0.0f;
}

const char *guard_signal_name(int sig)
{
	switch (sig) {
	case SIGTERM:
		return "SIGTERM";
	case SIGINT:
		return "SIGINT";
	case SIGUSR1:
		return "SIGUSR1";
	case 0:
		return "a signal to another rank";
	}
	return "a signal";
}
