/* placeholder: url.c is being written */
#include "config.h"
