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


class StoreUnavailable(EnforcementError):
    """The store did not take a write; memory and the switches were put back:
    nothing changed, and the call may be sent again."""


class OutcomeUnknown(EnforcementError):
    """The store did not take a write and a switch could not be put back:
    whether the change holds is not known until the same request is sent
    again (its request_id makes that safe)."""
