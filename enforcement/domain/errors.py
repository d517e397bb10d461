"""Domain errors. The API layer maps each to one gRPC status code."""


class EnforcementError(Exception):
    """Base: the message says what to fix."""


class InvalidArgument(EnforcementError):
    pass


class NotFound(EnforcementError):
    pass


class FailedPrecondition(EnforcementError):
    pass


class AlreadyExists(EnforcementError):
    pass


class SwitchError(EnforcementError):
    """The switch refused a change or did not confirm it in time."""


class SwitchUnreachable(SwitchError):
    """No answer (timeout, closed connection): worth retrying, unlike a refusal."""


class NotLeader(EnforcementError):
    """This instance does not lead (any more): the call goes to the leader."""
