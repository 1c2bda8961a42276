/* train/: what a run shows a person: the loss curve as a hand-written SVG (train and
 * validation), rewritten after evaluations and at the end of a run. */
#ifndef FERRY_TRAIN_REPORT_H
#define FERRY_TRAIN_REPORT_H

#include <stddef.h>

struct loss_point {
	int step;
	float loss;     /* training loss of the step */
	float val_loss; /* NAN where not evaluated */
};

/* Writes an SVG of the points (sorted by step) to path via a temp file and rename.
 * 0 or -errno. */
int report_write_svg(const char *path, const struct loss_point *points, size_t nr_points,
	const char *title);

#endif
