/* placeholder: fetch.c is being written */
#include "config.h"
