"""What every route of the hardened server shares: its limits, its admission control, and the MONAI Label app."""

from __future__ import annotations

from dataclasses import dataclass

from monailabel.config import settings
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.utils.app import app_instance

from lib.common.limits import ServerLimits
from lib.server.admission import Admission


@dataclass
class ServerContext:
    limits: ServerLimits
    admission: Admission

    @property
    def auth_enabled(self) -> bool:
        return bool(settings.MONAI_LABEL_AUTH_ENABLE)

    @staticmethod
    def app() -> MONAILabelApp:
        """The MONAI Label app instance (built on first use, then cached by MONAI Label)."""
        return app_instance()
