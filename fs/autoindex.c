/* placeholder: autoindex.c is being written */
#include "config.h"
