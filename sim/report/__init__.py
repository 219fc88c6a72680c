"""Writing a run's results directory (``results``) and its markdown, HTML and plots."""
