"""The preference pairs: reading a source (`loading`), its shapes (`shapes`), the checks on the eval pairs
(`checks`), and the bundled pair set with its generator (`bundled/`)."""
