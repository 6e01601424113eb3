"""`--conf models implicit_query`: the reasoner + frozen segmenter task, shown in both of Slicer's panels.

Two views of one task (one set of models in memory):
- `implicit_query` has type "segmentation": Slicer's and OHIF's auto-segmentation panels list it; the slice comes
  from the `slice` option (-1 = middle slice).
- `implicit_query_slice` has type "deepgrow", dimension 2: Slicer's and OHIF's point panels list it. The first click
  on a slice asks the question there (it only chooses the slice); later clicks correct that answer's mask without
  asking the reasoner again (`grounding/pipeline.py`). Both clients write the result on that slice only.
- `implicit_query_3d` has type "deepgrow", dimension 3: the same, then carried through the volume from that slice
  (scope volume); Slicer sends every click and replaces the whole segment with the result.
String options (the question) appear as editable text fields in Slicer and OHIF; lists as drop-downs; bools as ticks.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any, Dict, Optional

from monailabel.interfaces.config import TaskConfig
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
from monailabel.interfaces.tasks.train import TrainTask

from lib.common.limits import ServerLimits
from lib.infers.implicit_query import ImplicitQueryInfer
from lib.options.start_options import read_start_options
from lib.trainers.implicit_query import ImplicitQueryTrainer
from monailabel_app.demo.demo_reasoner import ensure_demo_reasoner
from monailabel_app.grounding.answer_log import AnswerLog
from monailabel_app.grounding.service import GroundingService
from monailabel_app.grounding.settings import GroundingSettings
from monailabel_app.imaging.windowing import WINDOW_CHOICES

logger = logging.getLogger(__name__)

DEMO_REASONER_DIR = "demo_tiny_reasoner"


class ImplicitQuery(TaskConfig):
    def init(self, name: str, model_dir: str, conf: Dict[str, str], planner: Any, options=None, **kwargs):
        """`options`: the app's parsed start options (`lib/options`; parsed here when MONAI Label builds the task
        alone)."""
        super().init(name, model_dir, conf, planner, **kwargs)
        self.options = options if options is not None else read_start_options(conf)
        self.settings = GroundingSettings.from_options(self.options)
        build_demo = None
        if self.settings.demo:  # built (first start only) by the models' load, in a process of its own
            self.settings.reasoner = os.path.join(model_dir, DEMO_REASONER_DIR)
            build_demo = functools.partial(ensure_demo_reasoner, self.settings.reasoner)
            logger.warning(f"DEMO mode: tiny untrained reasoner at {self.settings.reasoner}; its answers mean nothing")
        limits = ServerLimits.from_options(self.options).image
        self.service = GroundingService(self.settings, model_dir, limits, before_first_load=build_demo)
        answers_dir = self.options["answers_dir"] or os.path.join(model_dir, "answers")
        self.answer_log = AnswerLog(answers_dir, self.options["answers_keep"])
        logger.warning(self.service.startup_report())

    def infer(self) -> Dict[str, InferTask]:
        options = {
            "question": "",
            "think": self.settings.think,
            "window": list(WINDOW_CHOICES),
            "confidence_samples": self.service.default_confidence_samples(),  # 0 = off
        }
        what = (
            "Ask an implicit clinical question; a reasoning model ({}) answers with a box and two points and a "
            "frozen {} segmenter draws the mask."
        ).format(self.settings.reasoner, self.settings.segmenter)
        return {
            self.name: ImplicitQueryInfer(
                self.service,
                InferType.SEGMENTATION,
                3,
                what + " Volumes: the slice option (-1 = middle); scope volume carries the answer through the volume.",
                {**options, "slice": -1, "scope": ["slice", "volume"]},
            ),
            f"{self.name}_slice": ImplicitQueryInfer(
                self.service,
                InferType.DEEPGROW,
                2,
                what + " Click a point on a slice to ask there; more clicks correct the mask (the answer is kept).",
                options,
            ),
            f"{self.name}_3d": ImplicitQueryInfer(
                self.service,
                InferType.DEEPGROW,
                3,
                what + " Click a point on a slice to ask there and carry the answer through the volume; more clicks "
                "on that slice correct it.",
                {**options, "scope": ["volume", "slice"]},
            ),
        }

    def trainer(self) -> Optional[TrainTask]:
        return ImplicitQueryTrainer(
            self.model_dir, self.service.reasoner_path, self.options.train_defaults(), self.settings
        )
