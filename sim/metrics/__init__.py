"""Per-call records and the run summary (``recorder``); confidence intervals and paired tests (``stats``)."""
