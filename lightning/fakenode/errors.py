"""Errors of the simulated node's services. The fake backend turns them into the interface's
errors: `FakeNodeDown` into NodeUnreachable, `FakeNodeError` into NodeRejected(reason)."""


class FakeNodeError(Exception):
    """The simulated node (or the outside world) refused; nothing was changed."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


class FakeNodeDown(FakeNodeError):
    def __init__(self, name: str) -> None:
        super().__init__(f"simulated node {name} is down", reason="node_down")
