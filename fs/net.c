/* placeholder: net.c is being written */
#include "config.h"
