/* placeholder: io_uring.c is being written */
#include "config.h"
