/* A plugin built for another ABI version: the loader must refuse it. */
#include <sesame/plugin.h>

static const struct sesame_plugin plugin = {
    .abi_version = 999,
    .name = "badabi",
};

SESAME_PLUGIN_EXPORT const struct sesame_plugin *sesame_plugin_entry(void);

SESAME_PLUGIN_EXPORT const struct sesame_plugin *
sesame_plugin_entry(void)
{
    return &plugin;
}
