"""Serving-level fidelity: measured vLLM serving runs, the workloads they ran, and the
simulator's error on them.

- :mod:`sim.serving.runs`: the measured-runs CSV (one row per run and load stage).
- :mod:`sim.serving.workload`: the inference-perf ``shared_prefix`` workload of a run.
- :mod:`sim.serving.replay`: simulate a run and compute its per-stage metrics.
- :mod:`sim.serving.validate`: measured vs simulated tables and MAPE per metric.
- :mod:`sim.costmodel.vllm_step`: the vLLM engine-step cost model.
- :mod:`sim.serving.fit`: fitting the step model's global coefficients to measured runs.
"""
