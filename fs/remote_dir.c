/* placeholder: remote_dir.c is being written */
#include "config.h"
