/* A shared object without the entry symbol: the loader must refuse it. */
int sesame_plugin_entry_misspelt(void);

int
sesame_plugin_entry_misspelt(void)
{
    return 1;
}
