"""Many runs at once: grids of traces x clusters x policies x loads x seeds (``sweep``) and the regression gate
(``regress``)."""
