"""semaflow's one error tree; foreign errors are translated into these at the edge."""

from __future__ import annotations


class SemaflowError(Exception):
    """Base class of every error semaflow raises on purpose."""


class ConfigurationError(SemaflowError):
    """Settings are inconsistent or point at something that does not exist."""


class NotFound(SemaflowError):
    """The named resource does not exist (or belongs to another tenant)."""


class Conflict(SemaflowError):
    """The request conflicts with the resource's current state."""


class Misdirected(SemaflowError):
    """The request reached a gateway that does not serve the collection it names (another group does)."""


class BadRequest(SemaflowError):
    """A request the API cannot read although its schema allows it (a page cursor it never handed out)."""


class InvalidInput(SemaflowError):
    """Input that can never succeed, however often it is retried."""


class PermanentError(SemaflowError):
    """A task failure that retrying cannot fix; the task is not retried."""


class CorruptObject(PermanentError):
    """A stored object failed its checksum or could not be decoded."""


class TransientError(SemaflowError):
    """A failure that may go away on retry (a dependency was briefly unavailable)."""


class StorageUnavailable(TransientError):
    """The object store could not be reached or answered with a server error."""


class ObjectNotFound(SemaflowError):
    """The object store holds no object under the requested key."""


class PreconditionFailed(SemaflowError):
    """A conditional write lost: the object already exists (or changed)."""


class StaleIndex(TransientError):
    """The collection's index moved while a publish was being prepared."""


class ModelUnavailable(TransientError):
    """The embedding model is not loaded yet, or failed to load."""


class Cancelled(SemaflowError):
    """The job was cancelled while its work ran; the work stops without publishing anything."""
