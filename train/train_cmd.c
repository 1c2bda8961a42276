/* placeholder: `ferry train` is being written. */
#include "config.h"

#include <stdio.h>

#include "train/train.h"

int train_main(int argc, char **argv)
{
	fprintf(stderr, "ferry train: not built yet\n");
	return 1;
}
