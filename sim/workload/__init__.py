"""Stage 1 of the data flow: trace readers (``traces/``) turn recorded traces into sessions of calls (``calls``)."""
