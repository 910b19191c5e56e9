"""The harness's own exceptions: bad input (one line, exit status 2) and a lost claim (the job stops)."""


class HarnessError(ValueError):
    """A problem with the user's input (config, data, weights, store), found before expensive work."""


class LostLease(Exception):  # noqa: N818 - a state the job is in, not an error of the user's input
    """The job's claim was taken from it (its run was reaped while it was stopped or cut off): it must stop
    training and leave its run KILLED, since another process may now hold the same job."""

    def __init__(self, run_id: str, reason: str) -> None:
        super().__init__(f"run {run_id} lost its lease: {reason}")
        self.run_id, self.reason = run_id, reason
