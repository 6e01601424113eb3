"""Counting a segmenter's real image-encoder runs, to check its own `encoder_calls` (and the cache) against reality."""


def count_encoder_forwards(segmenter) -> list[int]:
    """A one-item list that a torch forward hook on `segmenter.model.image_encoder` increments."""
    forwards = [0]

    def on_forward(*_):
        forwards[0] += 1

    segmenter.model.image_encoder.register_forward_hook(on_forward)
    return forwards
