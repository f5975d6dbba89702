/*
 * abi_bad_signature.c: an output plugin that claims, in abi_signature, to
 * have been compiled against a spool.h whose spool_chunk was 8 bytes larger
 * than this spool's (as a plugin built against a later, incompatible header
 * would). abi_version and struct_size are right, so only the signature
 * check can refuse it.
 */
#include "spool/spool.h"

static int badsig_flush(spool_instance *ins, void *ctx, const spool_chunk *c)
{
    return SPOOL_OK;
}

static const spool_plugin badsig_plugin = {
    .abi_version = SPOOL_ABI_VERSION,
    .struct_size = sizeof(spool_plugin),
    .abi_signature = SPOOL_ABI_SIGNATURE + ((uint64_t)8 << 12), /* chunk + 8 bytes */
    .kind = SPOOL_PLUGIN_OUTPUT,
    .name = "abi_bad_signature",
    .flush = badsig_flush,
};

const spool_plugin *spool_plugin_register(void)
{
    return &badsig_plugin;
}
