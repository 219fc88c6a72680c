"""The cluster: cluster TOML (``config``), replicas placed on the topology (``cluster``), service-mesh overhead
(``mesh``) and fault injection (``faults``)."""
