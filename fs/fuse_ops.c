/* placeholder: fuse_ops.c is being written */
#include "config.h"
