"""How long things take on a GPU: the cost-model interface and roofline baseline (``base``), fitted operator and
step models (``fitted``, ``vllm_step``) and KV transfer times (``transfer``).  Calibration imports this package,
never the reverse."""
