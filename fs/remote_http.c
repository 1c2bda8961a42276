/* placeholder: remote_http.c is being written */
#include "config.h"
