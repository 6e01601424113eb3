"""The identifier gate at the datastore itself: every image id and label tag passes `lib.common.identifiers` before a
datastore method turns it into a file name. The routes check first (to answer with a clear 422), but training and
batch inference run in subprocesses that call the datastore directly; this is the fence all callers meet."""

from __future__ import annotations

from lib.common.identifiers import check_id, check_tag


class IdentifierGate:
    """Mix in before a MONAI Label datastore class: `class D(IdentifierGate, LocalDatastore)`."""

    def get_image_uri(self, image_id: str, *args, **kwargs):
        return super().get_image_uri(check_id(image_id), *args, **kwargs)

    def get_image_info(self, image_id: str, *args, **kwargs):
        return super().get_image_info(check_id(image_id), *args, **kwargs)

    def update_image_info(self, image_id: str, *args, **kwargs):
        return super().update_image_info(check_id(image_id), *args, **kwargs)

    def add_image(self, image_id: str, *args, **kwargs):
        return super().add_image(check_id(image_id), *args, **kwargs)

    def remove_image(self, image_id: str, *args, **kwargs):
        return super().remove_image(check_id(image_id), *args, **kwargs)

    def get_label_uri(self, label_id: str, label_tag: str, *args, **kwargs):
        return super().get_label_uri(check_id(label_id, "label id"), check_tag(label_tag), *args, **kwargs)

    def get_label_info(self, label_id: str, label_tag: str, *args, **kwargs):
        return super().get_label_info(check_id(label_id, "label id"), check_tag(label_tag), *args, **kwargs)

    def update_label_info(self, label_id: str, label_tag: str, *args, **kwargs):
        return super().update_label_info(check_id(label_id, "label id"), check_tag(label_tag), *args, **kwargs)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, *args, **kwargs):
        return super().save_label(check_id(image_id), label_filename, check_tag(label_tag), *args, **kwargs)

    def remove_label(self, label_id: str, label_tag: str, *args, **kwargs):
        return super().remove_label(check_id(label_id, "label id"), check_tag(label_tag), *args, **kwargs)
