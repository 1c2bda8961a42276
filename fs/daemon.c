/* placeholder: daemon.c is being written */
#include "config.h"
