/* placeholder: cache.c is being written */
#include "config.h"
