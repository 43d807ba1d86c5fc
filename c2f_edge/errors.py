"""One error hierarchy. The CLI prints `error: <message>` and `hint: <hint>`, and exits non-zero."""


class C2FError(Exception):
    """Base class: a problem the user can fix. `hint` says how."""

    exit_code = 2
    default_hint = ""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint if hint is not None else self.default_hint


class UsageError(C2FError):
    """Bad arguments or an invalid combination of options."""


class UnknownVariantError(UsageError):
    pass


class UnknownTargetError(UsageError):
    pass


class CheckpointError(C2FError):
    """A checkpoint that cannot be read or does not fit the model."""


class ArtifactError(C2FError):
    """A missing or corrupt input artifact (ONNX, bundle, package)."""


class ExportError(C2FError):
    pass


class OutputMismatchError(C2FError):
    """Two backends disagree beyond tolerance."""


class ShapeError(C2FError):
    pass


class ToolchainError(C2FError):
    """A cross-linker, SDK or codegen that is missing."""


class UnsupportedError(C2FError):
    """Something this installation cannot do (e.g. a codegen the TVM wheel lacks)."""


class RemoteError(C2FError):
    """An RPC tracker or board that cannot be reached or that dropped."""

    exit_code = 3


class MissingDependencyError(C2FError):
    """An optional Python package that is not installed."""
