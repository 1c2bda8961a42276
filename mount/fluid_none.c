/* ferry fluid-mount in a build without jansson (-Dfluid=disabled, or auto on a machine without
 * it): says so in one line. mount/fluid.c is the real one. */
#include <stdio.h>

#include "mount/cmd.h"

int fluid_mount_main(int argc, char **argv)
{
	fprintf(stderr, "ferry fluid-mount: this build has no Fluid support (built without "
			"jansson)\n");
	return 1;
}
