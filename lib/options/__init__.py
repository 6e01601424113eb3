"""The start options (`--conf key value`): one schema, parsed once per process (`start_options.read_start_options`)."""
