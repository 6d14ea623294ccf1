"""The one exception type for errors a user can cause (bad params, bad data, wrong weights)."""


class PipelineError(Exception):
    """A user-fixable problem; the message names the file or key and what to do."""
