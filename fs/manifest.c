/* placeholder: manifest.c is being written */
#include "config.h"
