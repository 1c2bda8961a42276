/* placeholder: `ferry data` is being written. */
#include "config.h"

#include <stdio.h>

#include "loader/loader.h"

int data_main(int argc, char **argv)
{
	fprintf(stderr, "ferry data: not built yet\n");
	return 1;
}
