"""Errors FirstLight raises on purpose. The CLI prints them without a traceback."""


class FirstLightError(Exception):
    """A problem the user can fix; the message says what and how."""


class DataError(FirstLightError):
    """Input data is unusable. Messages name the file, the row or column, and the fix."""

    def __init__(self, path, problem: str, fix: str, where: str | None = None):
        self.path, self.problem, self.fix, self.where = str(path), problem, fix, where
        location = f"{self.path}, {where}" if where else self.path
        super().__init__(f"{location}: {problem}. Fix: {fix}")


class ConfigError(FirstLightError):
    """A configuration value is invalid. Messages name the field and the fix."""

    def __init__(self, field: str, problem: str, fix: str):
        self.field = field
        super().__init__(f"config field '{field}': {problem}. Fix: {fix}")
