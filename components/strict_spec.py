"""The base of every typed spec a component receives: unknown keys and bad values are errors.

`pipeline/config.py` composes these specs into the one configuration a user writes; each
component gets only its own spec, so a key it does not read cannot invalidate its cache.
"""
from pydantic import BaseModel, ConfigDict


class StrictSpec(BaseModel):
    model_config = ConfigDict(extra='forbid', frozen=True, validate_default=True)


def is_remote(path: str) -> bool:
    """A URI (gs://, s3://, https://) rather than a path on this machine."""
    return '://' in path
