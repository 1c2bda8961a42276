/* placeholder: io_sync.c is being written */
#include "config.h"
