/* placeholder: namespace.c is being written */
#include "config.h"
