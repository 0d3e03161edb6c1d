"""semaflow's Lua scripts for Redis: one file each under ``shared/lua``, sent by their SHA1.

A script is named by its file (``shared/lua/job_transition.lua`` is ``job_transition``) and read
once, at its first use: importing a module that names one reads nothing and opens no connection.
A call sends ``EVALSHA``; when Redis answers ``NOSCRIPT`` (it restarted, was flushed, or is another
server) the script is loaded and the call sent again. ::

    TRANSITION = scripts.get("job_transition")         # a name: nothing read yet
    TRANSITION.run(client, keys, args)                  # a redis.Redis, or one of its pipelines
    await TRANSITION.arun(client, keys, args)           # a redis.asyncio.Redis, or one of its pipelines
    await batcher.call(TRANSITION.bind(client), keys, args)   # a ScriptBatcher takes it bound

In a pipeline the call is queued; the pipeline loads what Redis lacks before it sends its commands.

Every file opens with a header of ``--`` comments: what the script does, one line per key and per
argument (``-- KEYS[1]: ...``; ``-- ARGV[3..]: ...`` for the rest; ``-- KEYS: none`` when there are
none), then ``-- Returns: ...``.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any, Final

from redis.commands.core import AsyncScript

if TYPE_CHECKING:
    import redis
    import redis.asyncio as aioredis
    from redis.typing import EncodableT, KeyT

# The folder of the ``.lua`` files, inside the ``shared`` package (shipped as package data).
_FOLDER: Final = "lua"
_SUFFIX: Final = ".lua"


class LuaScript:
    """One script of ``shared/lua``: its name, its text (read at first use) and its SHA1."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"LuaScript({self.name!r})"

    @functools.cached_property
    def code(self) -> bytes:
        """The script as Redis gets it (the file's bytes).

        Raises:
            FileNotFoundError: there is no such script.
        """
        return resources.files("shared").joinpath(_FOLDER, self.name + _SUFFIX).read_bytes()

    @property
    def source(self) -> str:
        """The script's text."""
        return self.code.decode()

    @functools.cached_property
    def sha(self) -> str:
        """The SHA1 Redis knows the script by (hex)."""
        return hashlib.sha1(self.code).hexdigest()

    def run(self, client: redis.Redis, keys: Sequence[KeyT] = (), args: Sequence[EncodableT] = ()) -> Any:
        """Run the script on a blocking client and return its reply; on a pipeline, queue it.

        redis-py's own script object does the work: ``EVALSHA``, and on ``NOSCRIPT`` the script is
        loaded and sent again (a pipeline loads what Redis lacks before its commands).

        Raises:
            redis.RedisError: the script failed, or Redis could not be reached.
        """
        return client.register_script(self.code)(keys=keys, args=args)

    async def arun(self, client: aioredis.Redis, keys: Sequence[KeyT] = (), args: Sequence[EncodableT] = ()) -> Any:
        """:meth:`run` for an asyncio client (or pipeline).

        Raises:
            redis.RedisError: the script failed, or Redis could not be reached.
        """
        return await client.register_script(self.code)(keys=keys, args=args)

    def load(self, client: redis.Redis) -> str:
        """Send the script to Redis (``SCRIPT LOAD``); returns its SHA1."""
        return str(client.script_load(self.code))

    async def aload(self, client: aioredis.Redis) -> str:
        """:meth:`load` for an asyncio client."""
        return str(await client.script_load(self.code))

    def bind(self, client: aioredis.Redis) -> BoundScript:
        """The script tied to ``client``: what :class:`shared.scriptbatch.ScriptBatcher` takes."""
        return BoundScript(self, client)


class BoundScript(AsyncScript):
    """A script tied to an asyncio client, as redis-py's ``register_script`` gives one: ``sha``, and
    ``await bound(keys=..., args=...)`` runs it alone, loading it on ``NOSCRIPT``."""

    def __init__(self, script: LuaScript, client: aioredis.Redis) -> None:
        super().__init__(client, script.code)
        self.lua = script


@functools.cache
def get(name: str) -> LuaScript:
    """The script ``shared/lua/<name>.lua`` (one object per name; its file is read at first use)."""
    return LuaScript(name)


def names() -> tuple[str, ...]:
    """Every script's name, sorted (reads the folder)."""
    folder = resources.files("shared").joinpath(_FOLDER)
    return tuple(sorted(f.name.removesuffix(_SUFFIX) for f in folder.iterdir() if f.name.endswith(_SUFFIX)))
