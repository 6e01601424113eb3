"""Grounding samples and where they come from: U-MRG parquet, a folder with an index, a datastore's saved labels;
ground truth from masks; the report of what was skipped."""
