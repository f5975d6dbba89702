/* no_symbol_plugin.c: a shared object that is not a spool plugin. */
int not_a_spool_plugin(void);

int not_a_spool_plugin(void)
{
    return 42;
}
