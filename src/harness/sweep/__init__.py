"""A multirun as a whole: every job checked before any trains, the parent run and its ledger, the summary and
exit status (`lifecycle`, `ledger`), and what the console shows at the end (`console`). The Hydra Sweeper
plugin that calls it is `hydra_plugins.harness_sweeper`."""
