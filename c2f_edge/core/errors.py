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


def first_line(e: BaseException, limit: int = 200) -> str:
    """The line of an exception's text that says what went wrong, for a one-line error.

    Most messages (TVM's included) lead with it; a text that carries a traceback (a remote error
    over TVM RPC, a child process's stderr) has it last. An empty message gives the exception's type.
    """
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    traced = any(ln.startswith("Traceback") for ln in lines)
    return (lines[-1] if traced else lines[0])[:limit]


def report(e: C2FError, stream=None) -> int:
    """Print `error: ...` and `hint: ...` (stderr) the way every entry point does; returns the exit code."""
    import sys

    stream = stream or sys.stderr
    print(f"error: {e}", file=stream)
    if e.hint:
        print(f"hint: {e.hint}", file=stream)
    return e.exit_code
