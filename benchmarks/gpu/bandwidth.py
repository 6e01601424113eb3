"""The decode row's floor: the bytes one decoding step must read over the GPU's memory bandwidth (a vendor figure by
card name, else a measured device copy). Decoding is bound by memory, so this says how far from the card's limit
the reasoner runs."""

from __future__ import annotations

from typing import Optional

import torch

from benchmarks.gpu.measuring import free_memory

# HBM bandwidth by GPU name, TB/s (vendor figures). Names matched loosely; H100 NVL and GH200 differ from their
# namesakes, so they (and anything else not here) get a measured figure instead.
SPEC_BANDWIDTH_TBS = (
    (("H200",), 4.8, "H200"),
    (("H100", "PCIE"), 2.0, "H100 PCIe"),
    (("H100",), 3.35, "H100 SXM"),
    (("A100", "80GB"), 2.0, "A100 80GB"),
    (("A100", "40GB"), 1.55, "A100 40GB"),
    (("L40S",), 0.864, "L40S"),
)
NOT_IN_SPEC_TABLE = ("NVL", "GH200")


def decode_bytes_per_token(model, context_tokens: int) -> int:
    """What one decoding step reads from memory: the language model's weights (the input embedding is gathered, one
    row per token, not read whole) and lm_head, plus the KV cache of the context so far."""
    language = model.model.language_model
    weights = sum(p.numel() * p.element_size() for p in language.parameters())
    weights -= language.embed_tokens.weight.numel() * language.embed_tokens.weight.element_size()
    weights += model.lm_head.weight.numel() * model.lm_head.weight.element_size()
    text = model.config.text_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    element = next(model.parameters()).element_size()
    kv_cache = 2 * text.num_hidden_layers * text.num_key_value_heads * head_dim * context_tokens * element
    return weights + kv_cache


def spec_bandwidth(gpu_name: str) -> Optional[tuple[float, str]]:
    """Bytes/s and the table's label for a GPU the spec table knows, else None."""
    upper = gpu_name.upper().replace("-", " ")
    if any(word in upper for word in NOT_IN_SPEC_TABLE):
        return None
    for needles, terabytes, label in SPEC_BANDWIDTH_TBS:
        if all(needle in upper for needle in needles):
            return terabytes * 1e12, label
    return None


def measured_copy_bandwidth(gib: int = 1, copies: int = 10) -> float:
    """Bytes/s of a large device-to-device copy (each copy reads and writes the buffer once)."""
    source = torch.empty(gib * 2**30, dtype=torch.uint8, device="cuda")
    target = torch.empty_like(source)
    target.copy_(source)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(copies):
        target.copy_(source)
    end.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(end) / 1000
    del source, target
    free_memory()
    return 2 * gib * 2**30 * copies / seconds


def gpu_bandwidth() -> tuple[float, str]:
    """The spec figure when the GPU is in the table (with the measured copy beside it), else the measured one."""
    name = torch.cuda.get_device_name()
    measured = measured_copy_bandwidth()
    spec = spec_bandwidth(name)
    if spec is None:
        return measured, f"measured: a device-to-device copy, {measured / 1e12:.2f} TB/s ({name} not in the table)"
    bandwidth, label = spec
    return bandwidth, f"{label} spec {bandwidth / 1e12:.2f} TB/s; a device copy measured {measured / 1e12:.2f} TB/s"
