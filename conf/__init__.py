"""Hydra configs of the harness, a package so that an installed harness finds them (`config_path="conf"`)."""
