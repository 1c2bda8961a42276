/* Ring bookkeeping: which staging slot a reader fills next and which the consumer takes, as
 * counters and a completion bitmap under the loader's lock. Kept apart from the threads so it
 * can be tested alone. */
#include "config.h"

#include "loader/loader_i.h"

void ring_init(struct ring *r, uint32_t nr)
{
	r->nr = nr;
	r->filled = r->taken = r->released = r->claimed = 0;
	r->done = 0;
}

int ring_fill_slot(const struct ring *r)
{
	if (r->claimed - r->released >= r->nr)
		return -1;
	return (int)(r->claimed % r->nr);
}

void ring_claimed(struct ring *r)
{
	r->claimed++;
}

void ring_complete(struct ring *r, uint32_t slot)
{
	r->done |= 1ull << slot;
	while (r->filled < r->claimed && (r->done & (1ull << (r->filled % r->nr)))) {
		r->done &= ~(1ull << (r->filled % r->nr));
		r->filled++;
	}
}

void ring_filled(struct ring *r)
{
	uint32_t slot = (uint32_t)(r->claimed % r->nr);

	ring_claimed(r);
	ring_complete(r, slot);
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
	r->filled = r->taken = r->claimed = r->released;
	r->done = 0;
}
