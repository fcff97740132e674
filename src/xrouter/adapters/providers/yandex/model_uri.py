"""Yandex names models by URI, `gpt://<folder>/<model>` (`gpt://b1g.../yandexgpt/latest`);
clients name them as on every other provider (`yandex/yandexgpt/latest`). Pure, no I/O."""

from __future__ import annotations

from xrouter.adapters.providers.transport_settings import SettingNames
from xrouter.domain.errors import GatewayError

SCHEME = "gpt://"


class FolderMissing(GatewayError):
    """A model id needs the folder and the provider has none configured: the operator's to fix,
    so the message names the setting."""

    status = 500
    type = "server_error"
    code = "provider_misconfigured"


def model_uri(
    model: str, folder_id: str | None, *, provider: str, setting_names: SettingNames
) -> str:
    """`model` as Yandex names it: unchanged when it already is a `gpt://` URI."""
    if model.startswith(SCHEME):
        return model
    if not folder_id:
        raise FolderMissing(
            f"The provider '{provider}' has no folder: set {setting_names('folder_id')} to the "
            f"Yandex Cloud folder id, or ask for the model as gpt://<folder>/{model}."
        )
    return f"{SCHEME}{folder_id}/{model}"


def folder_of(model: str) -> str | None:
    """The folder a `gpt://<folder>/<model>` URI names; None for any other id."""
    if not model.startswith(SCHEME):
        return None
    folder, sep, _ = model.removeprefix(SCHEME).partition("/")
    return folder if sep and folder else None


def public_id(model: str, folder_id: str | None) -> str:
    """A discovered model's id as clients name it: this folder's URIs without the prefix."""
    if folder_id and model.startswith(f"{SCHEME}{folder_id}/"):
        return model.removeprefix(f"{SCHEME}{folder_id}/")
    return model
