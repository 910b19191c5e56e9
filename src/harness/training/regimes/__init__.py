"""One module per regime, each declaring its `SPEC` (`harness.training.regime.RegimeSpec`); the registry
(`harness.training.specs`) lists them. Keras is imported inside their functions, never at import: the config's
checks read the specs before any job has passed them."""
