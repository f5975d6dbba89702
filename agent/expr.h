/*
 * expr.h: the condition language of processors and streams (docs/conditions.md).
 *
 * The API is public (spool/spool.h, "Conditions"): plugins use it through that header. This
 * header stays for the core's files and tests that included it.
 */
#ifndef SPOOL_EXPR_H
#define SPOOL_EXPR_H

/* Relative, so the fuzz and unit builds of expr_*.c need only agent/ on their path. */
#include "include/spool/spool.h"

#endif
