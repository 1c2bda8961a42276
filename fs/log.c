/* Logging to stderr or syslog; see log.h. */
#include "config.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <syslog.h>

#include "fs/log.h"

static atomic_int log_level = LOG_LEVEL_WARN;
static atomic_bool log_syslog;

void log_use_syslog(void)
{
	openlog("ferry", LOG_PID, LOG_DAEMON);
	log_syslog = true;
}

void log_set_level(enum log_level level)
{
	log_level = level;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	static const char *const names[] = { "error", "warning", "info", "debug" };
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	char line[1024];
	va_list ap;

	if ((int)level > log_level)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (log_syslog)
		syslog(prio[level], "%s", line);
	else
		fprintf(stderr, "ferry: %s: %s\n", names[level], line);
}
