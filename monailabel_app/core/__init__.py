"""The bottom layer: the error taxonomy, the model frame <-> original pixels mapping, box and point overlap."""
