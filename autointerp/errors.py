"""Typed errors. Every user-facing failure is an AutointerpError whose message is one line
that says what went wrong and what to do; the CLI prints it without a traceback."""


class AutointerpError(Exception):
    """Base class: str(err) is the one line shown to the user."""

    exit_code = 1


class UsageError(AutointerpError):
    """Bad flags or arguments."""

    exit_code = 2


class ModelSpecError(AutointerpError):
    """Unknown model spec, missing package, corrupt weights file."""


class UnitError(UsageError):
    """Malformed unit id or layer/neuron/head out of range."""


class HookError(UsageError):
    """Unknown hook name or a patch of the wrong shape."""


class StoreError(AutointerpError):
    """The store file is missing, not an autointerp store, or of a newer schema."""


class DatasetError(AutointerpError):
    """Malformed or misaligned dataset input (names the line where it can): bad input, exit 2."""

    exit_code = 2


class LLMError(AutointerpError):
    """An LLM call failed for good (after retries), or the endpoint cannot be reached."""


class BudgetExceeded(LLMError):
    """A token or cost cap was reached; work done so far is kept."""

    exit_code = 3
