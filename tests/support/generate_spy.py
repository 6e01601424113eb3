"""Counts a model's own `generate` calls and the rows each returned; the model still runs (a spy, not a stand-in)."""

from __future__ import annotations


class GenerateSpy:
    def __init__(self, model):
        self.model, self.inner, self.rows = model, model.generate, []

    def __enter__(self) -> "GenerateSpy":
        def counted(*args, **kwargs):
            output = self.inner(*args, **kwargs)
            self.rows.append(int(output.shape[0]))
            return output

        self.model.generate = counted
        return self

    def __exit__(self, *_) -> None:
        del self.model.generate  # back to the class's method
