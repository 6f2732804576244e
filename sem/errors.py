"""Domain errors. Core code raises these; the service maps them to HTTP status codes in one place."""


class SEMError(Exception):
    """Base class of every error SEM raises on purpose."""


class ConfigError(SEMError):
    """A setting is missing or wrong (e.g. an unknown engine name)."""


class AssetsMissingError(ConfigError):
    """The embedded model or corpus has not been prepared on this machine."""


class EngineError(SEMError):
    """The generation engine failed or is not available."""


class SearchError(SEMError):
    """A search backend failed."""


class SearchModeError(SEMError, ValueError):
    """A request asked for a search mode the backend does not offer (a client error)."""


class UnknownBackendError(SEMError, KeyError):
    """No search backend is registered under that name."""

    def __init__(self, name: str, choices: list[str]) -> None:
        super().__init__(f"unknown search backend {name!r}; choose one of: {', '.join(sorted(choices))}")
        self.name = name
        self.choices = choices

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class SearchBudgetExhausted(SEMError):
    """The search budget of the key or the deployment is spent and the request asked to search (`always`) (429)."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PromptTooLong(SEMError):
    """The prompt (template, history, question) has more tokens than allowed."""
