/* bad_abi_plugin.c: claims an ABI version this spool does not have. */
#include "spool/spool.h"

static int bad_flush(spool_instance *ins, void *ctx, const spool_chunk *c)
{
    return SPOOL_OK;
}

static const spool_plugin bad_plugin = {
    .abi_version = SPOOL_ABI_VERSION + 41,
    .struct_size = sizeof(spool_plugin),
    .kind = SPOOL_PLUGIN_OUTPUT,
    .name = "bad_abi",
    .flush = bad_flush,
};

const spool_plugin *spool_plugin_register(void)
{
    return &bad_plugin;
}
