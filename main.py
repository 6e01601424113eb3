"""The MONAI Label app: `monailabel start_server --app . --studies <folder or DICOMweb URL> --conf models implicit_query`."""

from __future__ import annotations

import logging
import os
from typing import Dict

from fastapi import HTTPException
from monailabel.config import settings
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.config import TaskConfig
from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.utils.async_tasks.task import AsyncTask
from monailabel.utils.others.class_utils import get_class_names

import lib.configs
from lib.infers.implicit_query import LAST_QUERY_KEY
from lib.pacs_datastore import open_pacs_datastore
from monailabel_app.retraining import last_training_stats

logger = logging.getLogger(__name__)
APP_VERSION = "0.1.0"
AUTO_RETRAIN_TASK = "implicit_query"


class MedReasonerApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: Dict[str, str]):
        self.model_dir = conf.get("model_dir") or f"{app_dir}/model"  # retrained reasoners are published here
        available = {c.split(".")[-2].lower(): c for c in get_class_names(lib.configs, "TaskConfig")}
        wanted = [m.strip() for m in conf.get("models", "all").split(",") if m.strip()]
        unknown = [m for m in wanted if m != "all" and m not in available]
        if unknown:
            raise ValueError(f"Unknown model(s) {unknown} in --conf models; available: all, {', '.join(available)}")
        self.task_configs: Dict[str, TaskConfig] = {}
        for name, class_path in sorted(available.items()):
            if "all" in wanted or name in wanted:
                module_path, class_name = class_path.rsplit(".", 1)
                task_config = getattr(__import__(module_path, fromlist=[class_name]), class_name)()
                task_config.init(name, self.model_dir, conf, None)
                self.task_configs[name] = task_config
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="MedReasoner - implicit-query grounding",
            description="Ask an implicit clinical question; a reasoning model grounds it and a frozen SAM draws the mask",
            version=APP_VERSION,
        )

    def init_remote_datastore(self) -> Datastore:
        """A DICOMweb PACS gets lib/pacs_datastore.py (modalities, whole series, the question in the SEG)."""
        if settings.MONAI_LABEL_DATASTORE.lower() in ("xnat", "dsa"):
            return super().init_remote_datastore()
        return open_pacs_datastore(self.studies, self.conf, APP_VERSION)

    def init_infers(self) -> Dict[str, InferTask]:
        infers: Dict[str, InferTask] = {}
        for task_config in self.task_configs.values():
            infers.update(task_config.infer())
        return infers

    def init_trainers(self) -> Dict[str, TrainTask]:
        trainers: Dict[str, TrainTask] = {}
        for name, task_config in self.task_configs.items():
            trainer = task_config.trainer()
            if trainer:
                trainers[name] = trainer
        return trainers

    def infer(self, request, datastore=None):
        """MONAI Label answers an unknown model or image id with a 500 or a confusing error; a client deserves a 404.
        The question asked about a datastore image is remembered, so the label the user saves next can carry it."""
        model, image = request.get("model"), request.get("image")
        if model not in self._infers:
            raise HTTPException(404, f"No model {model!r}; available: {', '.join(self._infers)}")
        store = datastore or self.datastore()
        from_datastore = isinstance(image, str) and not os.path.exists(image)
        if from_datastore and not store.get_image_uri(image):
            raise HTTPException(404, f"No image with id {image!r} in the datastore")
        result = super().infer(request, datastore)
        asked = (result or {}).get("params") or {}
        if from_datastore and asked.get("question"):
            query = {"question": asked["question"], "slice": asked.get("slice"), "reasoner": asked.get("reasoner")}
            store.update_image_info(image, {LAST_QUERY_KEY: query})
        return result

    def on_save_label(self, image_id, label_id):
        """Slicer and OHIF save a label without the question; copy in the last one asked about this image."""
        store = self.datastore()
        if store.get_label_by_image_id(image_id, DefaultLabelTag.FINAL) != label_id:
            return super().on_save_label(image_id, label_id)  # not a final label: nothing to train on
        info = store.get_label_info(label_id, DefaultLabelTag.FINAL) or {}
        query = store.get_image_info(image_id).get(LAST_QUERY_KEY)
        if query and not info.get("question"):
            store.update_label_info(label_id, DefaultLabelTag.FINAL, {k: v for k, v in query.items() if v is not None})
            logger.info(f"Label {label_id} of {image_id} records its question: {query['question']!r}")
        self._retrain_if_due(store)
        return super().on_save_label(image_id, label_id)

    def _retrain_if_due(self, store) -> None:
        """`--conf auto_retrain_after N`: start GRPO once N final labels were saved since the last training (off: 0)."""
        every = int(self.conf.get("auto_retrain_after") or 0)
        if every <= 0 or AUTO_RETRAIN_TASK not in self._trainers:
            return
        new_labels = len(store.get_labeled_images()) - last_training_stats(self.model_dir).get("final_labels", 0)
        if new_labels >= every:
            _, busy = AsyncTask.run("train", request={"model": AUTO_RETRAIN_TASK})
            logger.info(f"{new_labels} new final labels: " + (busy or "retraining started"))
