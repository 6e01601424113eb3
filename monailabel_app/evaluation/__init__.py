"""The paper's evaluation: answers from any backend, scoring, metrics, the report, and the command line."""
