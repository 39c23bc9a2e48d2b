"""One error hierarchy; each error carries the HTTP status it maps to."""

from __future__ import annotations


class OnnxfnError(Exception):
    """Base of every error a client may see; ``status_code`` is its HTTP status."""

    status_code = 500
    kind = "Internal"

    MAX_MESSAGE = 500  # messages quote client values (names, shapes): keep them short in logs and replies

    def __init__(self, message: str) -> None:
        if len(message) > self.MAX_MESSAGE:
            message = message[: self.MAX_MESSAGE - 1] + "…"
        super().__init__(message)
        self.message = message


class InvalidInput(OnnxfnError):
    """The request is malformed or does not match the model's inputs."""

    status_code = 400
    kind = "InvalidInput"


class ModelNotFound(OnnxfnError):
    """The request names a model or version this function does not serve."""

    status_code = 404
    kind = "ModelNotFound"


class RouteNotFound(OnnxfnError):
    """No route matches the request's method and path."""

    status_code = 404
    kind = "RouteNotFound"


class PayloadTooLarge(OnnxfnError):
    """The request body or the tensors it declares exceed a limit."""

    status_code = 413
    kind = "PayloadTooLarge"


class UnsupportedMediaType(OnnxfnError):
    """The request's content type cannot be decoded."""

    status_code = 415
    kind = "UnsupportedMediaType"


class ModelUnavailable(OnnxfnError):
    """The model could not be loaded now; the next request tries again."""

    status_code = 503
    kind = "ModelUnavailable"
