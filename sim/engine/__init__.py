"""One replica's engine (vLLM-shaped): the iteration-level scheduler (``replica``) and the paged KV cache with
prefix caching (``kvcache``)."""
