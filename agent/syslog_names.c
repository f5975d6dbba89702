/*
 * syslog_names.c: the syslog facility and severity names (RFC 5424 codes
 * 0-23 and 0-7, with the names rsyslog and syslog-ng use), in one place for
 * the syslog input (which writes them as headers) and the syslog output
 * (which reads them back). Constant tables, pure functions, any thread.
 */
#include <stdlib.h>
#include <strings.h>

#include "spool/spool.h"

static const char *const facility_names[] = {
    "kern",   "user",   "mail",     "daemon", "auth",   "syslog",   "lpr",     "news",
    "uucp",   "cron",   "authpriv", "ftp",    "ntp",    "security", "console", "solaris-cron",
    "local0", "local1", "local2",   "local3", "local4", "local5",   "local6",  "local7"};

static const char *const severity_names[] = {"emerg",   "alert",  "crit", "err",
                                             "warning", "notice", "info", "debug"};

const char *spool_syslog_facility_name(int facility)
{
    return facility >= 0 && facility < 24 ? facility_names[facility] : NULL;
}

const char *spool_syslog_severity_name(int severity)
{
    return severity >= 0 && severity < 8 ? severity_names[severity] : NULL;
}

static int name_lookup(const char *s, const char *const *names, int count)
{
    if (s == NULL || *s == '\0') {
        return -1;
    }
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (*end == '\0') {
        return v >= 0 && v < count ? (int)v : -1;
    }
    for (int i = 0; i < count; i++) {
        if (strcasecmp(s, names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

int spool_syslog_facility_from_name(const char *s)
{
    return name_lookup(s, facility_names, 24);
}

int spool_syslog_severity_from_name(const char *s)
{
    if (s != NULL && strcasecmp(s, "warn") == 0) {
        return 4;
    }
    if (s != NULL && strcasecmp(s, "error") == 0) {
        return 3;
    }
    return name_lookup(s, severity_names, 8);
}
