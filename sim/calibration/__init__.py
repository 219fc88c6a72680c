"""Calibration: measured timings (records), fitted cost models, validation.

- :mod:`sim.calibration.records`: the shared JSON Lines record format.
- :mod:`sim.calibration.vidur`: import of Vidur's profiling CSVs into records.
- :mod:`sim.calibration.fit`: fitting a cost model (TOML) from records.
- :mod:`sim.costmodel.fitted`: the fitted cost model the simulator runs.
- :mod:`sim.calibration.validate`: held-out error of a cost model on records.

Submodules are imported on use, so ``import sim.calibration`` stays light.
"""
