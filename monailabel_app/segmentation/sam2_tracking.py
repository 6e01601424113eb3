"""A volume's slices as the frames of SAM2's video predictor: the key slice's mask tracked through the volume with
SAM2's memory of the slices before it (how MedSAM2 segments 3D CT and MRI).

sam2 1.1's `init_state` reads frames only from a JPEG folder or an mp4 file. The slices are in memory already and a
JPEG round trip would blur them, so `tracking_state` builds the same state with `SliceFrames`: a slice is rendered,
resized and normalised as the package's own loader does it when the tracker reaches it; only the latest is kept (the
stop rule reads it). The tests compare the state's keys with the package's, so an upgrade that changes them fails
there and not in a clinic.

`Sam2Segmenter.track` runs each direction as its own session, whose frames run from the key slice outwards (frame i
is slice key ± i), so both are tracked forwards from a mask on frame 0. Memory stays bounded on long series: one
frame is held at a time, a session holds at most `max_slices` + 1 frames, and the per-frame memories go to the CPU
when the model is on a GPU.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

IMAGE_MEAN = (0.485, 0.456, 0.406)  # the package's video loader's defaults (ImageNet)
IMAGE_STD = (0.229, 0.224, 0.225)


class SliceFrames(Sequence):
    """Slices `slices` (in tracking order) of a volume as the video predictor's frames, made on demand."""

    def __init__(self, render: Callable[[int], np.ndarray], slices: Sequence[int], image_size: int):
        self.render, self.slices, self.image_size = render, list(slices), image_size
        self._last: tuple[int, np.ndarray] = (-1, np.empty(0))  # the tracker asks for a frame right before its mask
        self._mean = torch.tensor(IMAGE_MEAN, dtype=torch.float32)[:, None, None]
        self._std = torch.tensor(IMAGE_STD, dtype=torch.float32)[:, None, None]

    def __len__(self) -> int:
        return len(self.slices)

    def picture(self, index: int) -> np.ndarray:
        """Frame `index` as rendered (RGB uint8), rendered once when the tracker asks for it and then the mask."""
        if self._last[0] != index:
            self._last = (index, self.render(self.slices[index]))
        return self._last[1]

    def __getitem__(self, index: int) -> torch.Tensor:
        picture = Image.fromarray(self.picture(index)).convert("RGB")
        resized = np.array(picture.resize((self.image_size, self.image_size))) / 255.0  # as sam2's JPEG loader
        return (torch.from_numpy(resized).permute(2, 0, 1).float() - self._mean) / self._std


def tracking_state(predictor, frames: SliceFrames, height: int, width: int) -> dict:
    """What `SAM2VideoPredictor.init_state` returns, with `frames` as the video."""
    device = predictor.device
    state = {
        "images": frames,
        "num_frames": len(frames),
        "offload_video_to_cpu": True,  # frames are made on the CPU, one at a time
        "offload_state_to_cpu": device.type != "cpu",
        "video_height": height,
        "video_width": width,
        "device": device,
        "storage_device": torch.device("cpu"),
        "point_inputs_per_obj": {},
        "mask_inputs_per_obj": {},
        "cached_features": {},
        "constants": {},
        "obj_id_to_idx": OrderedDict(),
        "obj_idx_to_id": OrderedDict(),
        "obj_ids": [],
        "output_dict_per_obj": {},
        "temp_output_dict_per_obj": {},
        "frames_tracked_per_obj": {},
    }
    with torch.inference_mode():
        predictor._get_image_feature(state, frame_idx=0, batch_size=1)  # as init_state: frame 0's features cached
    return state
