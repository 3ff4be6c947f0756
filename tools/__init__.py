"""Operator and developer tools on the top floor: the `alcove` CLI, the probe, benchmarks, the hostile relay
used by tests and probes (mitm), and the Chromium launcher."""
