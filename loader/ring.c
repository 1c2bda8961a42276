/* Ring bookkeeping: which staging slot the reader fills next and which the consumer takes,
 * as three counters under the loader's lock. Kept apart from the threads so it can be tested
 * alone. */
#include "config.h"

#include "loader/loader_i.h"

void ring_init(struct ring *r, uint32_t nr)
{
	r->nr = nr;
	r->filled = r->taken = r->released = 0;
}

int ring_fill_slot(const struct ring *r)
{
	if (r->filled - r->released >= r->nr)
		return -1;
	return (int)(r->filled % r->nr);
}

void ring_filled(struct ring *r)
{
	r->filled++;
}

int ring_take_slot(const struct ring *r)
{
	if (r->taken >= r->filled)
		return -1;
	return (int)(r->taken % r->nr);
}

void ring_taken(struct ring *r)
{
	r->taken++;
}

void ring_release_all(struct ring *r)
{
	r->released = r->taken;
}

void ring_reset(struct ring *r)
{
	/* Filled but untaken batches are dropped: their slots become free again. */
	r->filled = r->taken = r->released;
}
