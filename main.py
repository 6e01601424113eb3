"""The MONAI Label app, as `scripts/start.sh` starts it:

    monailabel start_server --app . --studies <folder or DICOMweb URL> --uvicorn_app lib.server.asgi:app \
        --conf models implicit_query
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Dict
from urllib.parse import quote

from monailabel.config import settings
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.config import TaskConfig
from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.utils.async_tasks.task import AsyncTask

from lib.activelearning.app_scoring import InProcessScoring
from lib.activelearning.least_confident import LeastConfident
from lib.activelearning.random import Random
from lib.activelearning.reasoner_confidence import ActiveLearningSettings, ReasonerConfidence
from lib.common import scratch
from lib.common.identifiers import check_id, check_tag, is_inside
from lib.common.limits import ServerLimits
from lib.configs.implicit_query import ImplicitQuery
from lib.datastore.label_store import LabelStore, as_label_store
from lib.datastore.local import GatedLocalDatastore
from lib.datastore.saved_answer import with_saved_answer
from lib.infers.answer_request import ImageRef
from lib.infers.answering import AnswerService, LabelSave
from lib.infers.implicit_query import labels_dir
from lib.options.start_options import read_start_options
from lib.pacs.datastore import open_pacs_datastore
from lib.server.errors import TooManyRequests
from monailabel_app.core.errors import NotFoundError
from monailabel_app.training import run_owner
from monailabel_app.training.run_records import last_training_stats

logger = logging.getLogger(__name__)
# MONAI Label logs at INFO every label's and image's info (datastores, active learning's "Next sample"), background
# tasks' whole requests (a batch inference's question) and their results; those hold clinicians' questions. The server
# log keeps ids, statuses and timings, not clinical text (docs/security.md).
CHATTY_LOGGERS = (
    "monailabel.datastore.local",
    "monailabel.datastore.dicom",
    "monailabel.endpoints.activelearning",
    "monailabel.utils.async_tasks.task",
    "monailabel.utils.async_tasks.utils",
    "monailabel.interfaces.utils.app",
)
for _chatty in CHATTY_LOGGERS:
    logging.getLogger(_chatty).setLevel(logging.WARNING)
APP_VERSION = "0.1.0"
AUTO_RETRAIN_TASK = "implicit_query"
# The task configs this app can load, by the name `--conf models` uses (the schema's TASK_NAMES). An explicit list,
# never a scan of a folder: a module that appeared in lib/configs/ must not be imported (and run) just because it is.
TASK_CONFIGS: Dict[str, type] = {"implicit_query": ImplicitQuery}


class MedReasonerApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: Dict[str, str]):
        self.options = read_start_options(conf)  # the one parse of --conf in this process (lib/options)
        self.model_dir = self.options["model_dir"] or f"{app_dir}/model"  # retrained reasoners are published here
        self.limits = ServerLimits.from_options(self.options)
        self.auto_retrain_after = self.options["auto_retrain_after"]
        self.active_learning = ActiveLearningSettings.from_options(self.options)
        self._scoring_runner = InProcessScoring(lambda method: self.scoring({"method": method}))
        self._train_start_lock = threading.Lock()
        # held around every read-merge-write of an image's info (each clinician's last answer, the confidence book,
        # active learning's hand-outs): without it, two requests at once each write back what they read, and one
        # clinician's record is lost
        self.image_info_lock = threading.RLock()
        wanted = self.options["models"]
        self.task_configs: Dict[str, TaskConfig] = {}
        for name, config_class in TASK_CONFIGS.items():
            if "all" in wanted or name in wanted:
                task_config = config_class()
                task_config.init(name, self.model_dir, conf, None, options=self.options)
                self.task_configs[name] = task_config
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="MedReasoner - implicit-query grounding",
            description="Ask an implicit clinical question; a reasoning model grounds it, a frozen SAM draws the mask",
            version=APP_VERSION,
        )
        # the one path of an answer (lib/infers/answering.py), which the infer route and `infer` below take
        self.answers = AnswerService(self._infers, self.answer_log, self.datastore, self.image_info_lock)

    def init_datastore(self) -> Datastore:
        """A folder datastore keeps earlier versions and gates every id (`lib/datastore/`); a URL is a PACS."""
        if self.studies.startswith(("http://", "https://")):
            return super().init_datastore()
        return as_label_store(
            GatedLocalDatastore(
                self.studies,
                keep_versions=self.limits.keep_versions,
                extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
                auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
                read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
            )
        )

    def init_remote_datastore(self) -> Datastore:
        """A DICOMweb PACS gets lib/pacs/datastore.py (modalities, whole series, the question in the SEG)."""
        if settings.MONAI_LABEL_DATASTORE.lower() in ("xnat", "dsa"):
            raise ValueError(
                f"MONAI_LABEL_DATASTORE={settings.MONAI_LABEL_DATASTORE} is not supported by this app: it serves a "
                "folder or a DICOMweb PACS (--studies http://.../dicom-web), where it keeps each answer with its label."
            )
        return as_label_store(open_pacs_datastore(self.studies, self.options, APP_VERSION))

    def init_strategies(self) -> Dict[str, Strategy]:
        return {"random": Random(), "least_confident": LeastConfident()}

    def init_scoring_methods(self) -> Dict[str, ScoringMethod]:
        """`reasoner_confidence` when the site gave a question list (`--conf al_questions`) and the task is loaded."""
        task = self.task_configs.get(AUTO_RETRAIN_TASK)
        if not self.active_learning.questions or task is None:
            return {}
        return {"reasoner_confidence": ReasonerConfidence(task.service, self.active_learning)}

    def async_scoring(self, method, params=None):
        """Scoring runs on a thread of the server process, with the models it holds (`lib/activelearning/app_scoring`),
        never in a subprocess; elsewhere (MONAI Label's train subprocess) it is left to the server's next run."""
        if not self._scoring_methods or not getattr(self, "hardened_server", False):
            return {}
        return self._scoring_runner.request([method] if method else list(self._scoring_methods))

    def scoring_status(self) -> dict:
        return self._scoring_runner.status()

    def init_infers(self) -> Dict[str, InferTask]:
        infers: Dict[str, InferTask] = {}
        for task_config in self.task_configs.values():
            infers.update(task_config.infer())
        return infers

    # MONAI Label keeps its tasks in private attributes: this app reads them here, and the routes ask these
    def train_tasks(self) -> Dict[str, TrainTask]:
        return dict(self._trainers)

    def scoring_method_names(self) -> list[str]:
        return list(self._scoring_methods)

    def init_trainers(self) -> Dict[str, TrainTask]:
        trainers: Dict[str, TrainTask] = {}
        for name, task_config in self.task_configs.items():
            trainer = task_config.trainer()
            if trainer:
                trainers[name] = trainer
        return trainers

    @property
    def answer_log(self):
        """Where every answer is kept for audit (the answers page, OHIF's answer panel); None without the task."""
        task = self.task_configs.get(AUTO_RETRAIN_TASK)
        return getattr(task, "answer_log", None)

    def info(self, *_request):  # MONAI Label's command line passes a request; its own signature takes none
        """MONAI Label's info, plus which reasoner answers each task now (folder, source, version, weights digest)."""
        meta = super().info()
        meta["reasoners"] = {
            name: task.service.reasoner_identity()
            for name, task in self.task_configs.items()
            if hasattr(task, "service")
        }
        # loading / ready / failed (with the reason): the models load in the background from the start
        meta["model_load"] = {name: task.service.load_state() for name, task in self.task_configs.items()}
        return meta

    def on_init_complete(self):
        """Serve only behind this app's hardened routes (`lib/server/asgi.py`), never MONAI Label's own."""
        if not getattr(self, "hardened_server", False):  # set by lib/server/asgi.py's start-up, by nobody else
            raise RuntimeError(
                "Start this app with --uvicorn_app lib.server.asgi:app (scripts/start.sh does): MONAI Label's own "
                "routes don't check ids, uploads or paths."
            )
        recovered = run_owner.recover_after_restart(self.model_dir)  # a run the previous server left dies with it
        if recovered:
            logger.warning(f"Retraining left by the previous server: {recovered}")
        for task in self.task_configs.values():  # while the server starts serving; a question waits for the load
            task.service.start_loading()
        super().on_init_complete()

    def infer(self, request, datastore=None):
        """MONAI Label's own callers (batch inference, its command line) come here; the infer route takes the answer's
        path directly. The image is a datastore id, gated and resolved here, or a path the server made (an upload or
        session in a server folder, a datastore file): never a path a client chose. `datastore` is the app's."""
        model = self.answers.model(request.get("model"))
        store = datastore or self.datastore()
        image = self._resolve_image(request.get("image"), store)
        save = None
        if request.get("save_label") and image.image_id:
            tag = check_tag(request.get("label_tag") or DefaultLabelTag.ORIGINAL.value)
            save = LabelSave(tag, request.get("saved_by") or {})
        answered = self.answers.answer(model, image, request, request.get("asked_by"), labels_dir(), save)
        if answered.saved_label:  # stored in the datastore: the loose copy is not needed
            os.unlink(answered.label_file)
            return {"label": answered.saved_label, "tag": save.tag, "file": None, "params": answered.json}
        tag = DefaultLabelTag.ORIGINAL
        return {"label": answered.label_file, "tag": tag, "file": answered.label_file, "params": answered.json}

    def _resolve_image(self, image: object, store: LabelStore) -> ImageRef:
        if isinstance(image, str) and os.path.isabs(image) and self._is_server_path(image, store):
            return ImageRef(image)
        image_id = check_id(image)
        uri = store.get_image_uri(image_id)
        if not uri:
            raise NotFoundError(f"No image with id {image_id!r} in the datastore")
        return ImageRef(uri, image_id)

    def _is_server_path(self, path: str, store: LabelStore) -> bool:
        """Inside a request's scratch folder, the datastore's folder, or MONAI Label's sessions folder."""
        roots = [str(scratch.SCRATCH_ROOT), store.root_folder()]
        if self._sessions is not None:
            roots.append(self._sessions.store_path)
        return any(os.path.isdir(root) and is_inside(root, path) for root in roots)

    def next_sample(self, request):
        strategy = request.get("strategy") or "random"
        if strategy not in self._strategies:
            raise NotFoundError(
                f"No active learning strategy {str(strategy)[:80]!r}; available: {', '.join(self._strategies)}"
            )
        return super().next_sample(request)

    def save_label(self, image_id: str, label_file: str, tag: str, info: dict) -> tuple[str, dict]:
        """The one way a label is saved (`PUT /datastore/label`), for every datastore: a final label takes the saver's
        last answer on the image into its info before it is stored (a folder keeps it in the label's info, a PACS in
        the SEG and the report), with no other save of this datastore in between. Returns the label id and what the
        save's answer adds (3D Slicer's "Submit Label" dialog shows it)."""
        store = self.datastore()
        with store.exclusive():
            if tag == DefaultLabelTag.FINAL:
                with self.image_info_lock:
                    info = with_saved_answer(store.get_image_info(image_id), info)
            label_id = store.save_label(image_id, label_file, tag, info)
            summary = self.on_save_label(image_id, label_id) or {}
        if tag == DefaultLabelTag.FINAL:  # as stored (a PACS adds its report's series)
            summary.update(saved_answer_summary(image_id, store.get_label_info(label_id, tag) or info))
        return label_id, summary

    def on_save_label(self, image_id, label_id):
        """MONAI Label's hook after a save: a final label may start a retraining (`--conf auto_retrain_after`)."""
        store = self.datastore()
        if store.get_label_by_image_id(image_id, DefaultLabelTag.FINAL) == label_id:
            self._retrain_if_due(store)
        return super().on_save_label(image_id, label_id)

    def _retrain_if_due(self, store) -> None:
        """`--conf auto_retrain_after N`: start GRPO once N final labels were saved since the last training (off: 0)."""
        every = self.auto_retrain_after
        if every <= 0 or AUTO_RETRAIN_TASK not in self._trainers:
            return
        new_labels = len(store.get_labeled_images()) - last_training_stats(self.model_dir).get("final_labels", 0)
        if new_labels < every:
            return
        try:
            self.start_training(AUTO_RETRAIN_TASK, {})
            logger.info(f"{new_labels} new final labels: retraining started")
        except TooManyRequests:
            logger.info(f"{new_labels} new final labels; a retraining is already running")

    def start_training(self, model: str, options: Dict) -> Dict:
        """The one way a retraining starts (the train routes and auto-retraining): one run at a time, counting runs
        that were started but whose process hasn't begun yet (MONAI Label only sees running processes, so two starts
        at the same moment both passed its check and queued), and a living run that holds the model folder's run lock
        whoever started it (`run_owner`). The run is told which server asked for it: it dies with this server."""
        with self._train_start_lock:
            if _training_in_progress():
                raise TooManyRequests(
                    "A retraining is already running; wait for it (GET /train/) or stop it (DELETE /train/)."
                )
            trainer = self._trainers[model]
            try:
                with run_owner.server_holds_lock(self.model_dir, timeout_s=2):  # a stopped run's process may be ending
                    if hasattr(trainer, "before_run"):
                        trainer.before_run()
            except run_owner.RunBusyError as busy:
                raise TooManyRequests(f"{busy}; wait for it (GET /train/).") from None
            request = {"model": model, **options, run_owner.SERVER_KEY: run_owner.ProcessIdentity.current().to_dict()}
            result, detail = AsyncTask.run("train", request=request, enqueue=False)
            if result is None:
                raise TooManyRequests(detail or "A retraining is already running.")
            return result


def saved_answer_summary(image_id: str, info: dict) -> dict:
    """What the save's answer adds: the answer the label records, which 3D Slicer's "Submit Label" dialog shows under
    "Show Details" (it prints the whole JSON answer), and where to see it with its picture."""
    if not info.get("question"):
        return {}
    keys = ("question", "status", "reasoning", "box", "points", "slice", "window", "reasoner", "answered_at")
    summary = {"answer": {k: info[k] for k in keys if info.get(k) is not None}}
    version = info.get("reasoner_version")
    summary["answer"]["model_version"] = version.get("version") if isinstance(version, dict) else None
    if info.get("ReportSeriesInstanceUID"):
        summary["report_series"] = info["ReportSeriesInstanceUID"]  # the DICOM SR beside the SEG
    summary["answers_page"] = f"/answers/?image={quote(image_id)}"
    return summary


def _training_in_progress() -> bool:
    from monailabel.utils.async_tasks.utils import processes, tasks

    return bool(processes("train")) or any(task.get("status") in ("SUBMITTED", "RUNNING") for task in tasks("train"))
