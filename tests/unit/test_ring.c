/* Ring bookkeeping of the loader's staging slots (loader/ring.c): which slot is filled, taken,
 * held and given back. */
#include <criterion/criterion.h>

#include "loader/loader_i.h"

Test(ring, fills_every_slot_in_order_then_reports_full)
{
	struct ring r;

	ring_init(&r, 3);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(ring_fill_slot(&r), i);
		ring_filled(&r);
	}
	cr_assert_eq(ring_fill_slot(&r), -1);
}

Test(ring, has_nothing_to_take_before_a_fill)
{
	struct ring r;

	ring_init(&r, 4);
	cr_assert_eq(ring_take_slot(&r), -1);
	ring_filled(&r);
	cr_assert_eq(ring_take_slot(&r), 0);
	ring_taken(&r);
	cr_assert_eq(ring_take_slot(&r), -1);
}

Test(ring, keeps_a_taken_slot_from_the_reader_until_released)
{
	struct ring r;

	ring_init(&r, 2);
	ring_filled(&r);
	ring_filled(&r);
	ring_taken(&r); /* slot 0 held */
	cr_assert_eq(ring_fill_slot(&r), -1, "slot 0 is still held by the consumer");
	ring_release_all(&r);
	cr_assert_eq(ring_fill_slot(&r), 0);
}

Test(ring, takes_slots_in_the_order_they_were_filled_across_wraparound)
{
	struct ring r;
	int expect = 0;

	ring_init(&r, 3);
	for (int n = 0; n < 100; n++) {
		while (ring_fill_slot(&r) >= 0)
			ring_filled(&r);
		int s = ring_take_slot(&r);

		cr_assert_eq(s, expect % 3);
		ring_taken(&r);
		ring_release_all(&r);
		expect++;
		cr_assert(
			r.released <= r.taken && r.taken <= r.filled && r.filled <= r.released + 3);
	}
}

Test(ring, runs_at_most_nr_minus_one_ahead_of_the_held_batch)
{
	struct ring r;
	int filled = 0;

	ring_init(&r, 4);
	ring_filled(&r);
	ring_taken(&r); /* the consumer holds one batch */
	while (ring_fill_slot(&r) >= 0) {
		ring_filled(&r);
		filled++;
	}
	cr_assert_eq(filled, 3);
}

Test(ring, reset_drops_filled_batches_and_frees_their_slots)
{
	struct ring r;

	ring_init(&r, 4);
	ring_filled(&r);
	ring_taken(&r);
	ring_filled(&r);
	ring_filled(&r);
	ring_release_all(&r);
	ring_reset(&r);
	cr_assert_eq(ring_take_slot(&r), -1);
	cr_assert_eq(ring_fill_slot(&r), 1, "the next fill continues at the next slot");
	for (int i = 0; i < 4; i++)
		ring_filled(&r);
	cr_assert_eq(ring_fill_slot(&r), -1);
}

Test(ring, single_slot_ring_alternates_between_reader_and_consumer)
{
	struct ring r;

	ring_init(&r, 1);
	for (int i = 0; i < 5; i++) {
		cr_assert_eq(ring_fill_slot(&r), 0);
		ring_filled(&r);
		cr_assert_eq(ring_fill_slot(&r), -1);
		cr_assert_eq(ring_take_slot(&r), 0);
		ring_taken(&r);
		cr_assert_eq(ring_fill_slot(&r), -1);
		ring_release_all(&r);
	}
}

Test(ring, hands_out_batches_in_order_when_readers_complete_out_of_order)
{
	struct ring r;
	int a, b, c;

	ring_init(&r, 4);
	a = ring_fill_slot(&r);
	ring_claimed(&r);
	b = ring_fill_slot(&r);
	ring_claimed(&r);
	c = ring_fill_slot(&r);
	ring_claimed(&r);
	cr_assert(a == 0 && b == 1 && c == 2);
	ring_complete(&r, 2);
	ring_complete(&r, 1);
	cr_assert_eq(ring_take_slot(&r), -1, "slot 0 is still being filled");
	ring_complete(&r, 0);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(ring_take_slot(&r), i);
		ring_taken(&r);
	}
	cr_assert_eq(ring_take_slot(&r), -1);
}

Test(ring, counts_claimed_slots_as_busy_until_the_consumer_releases_them)
{
	struct ring r;

	ring_init(&r, 2);
	ring_claimed(&r);
	ring_claimed(&r);
	cr_assert_eq(ring_fill_slot(&r), -1, "both slots are being filled");
	ring_complete(&r, 1);
	ring_complete(&r, 0);
	cr_assert_eq(ring_fill_slot(&r), -1, "slot 0 is held by the consumer");
	ring_taken(&r);
	ring_release_all(&r);
	cr_assert_eq(ring_fill_slot(&r), 0, "slot 0 was given back");
	ring_claimed(&r);
	cr_assert_eq(ring_fill_slot(&r), -1, "slot 1 is filled and not yet taken");
}

Test(ring, reset_forgets_completions_beyond_the_filled_run)
{
	struct ring r;

	ring_init(&r, 3);
	ring_claimed(&r);
	ring_claimed(&r);
	ring_complete(&r, 1); /* slot 0 not yet: nothing filled */
	ring_complete(&r, 0);
	ring_reset(&r);
	cr_assert_eq(ring_take_slot(&r), -1);
	cr_assert_eq(r.done, 0);
	cr_assert_eq(ring_fill_slot(&r), 0);
}
