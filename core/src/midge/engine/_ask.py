"""Ask, then tell: a plugin decision the engine waits for, without awaiting itself.

The rule: a flow that needs a decision calls ``ask``. With no ``async def``
implementation the answer is computed at once and the flow goes on in the same call (the
hot path stays plain calls); otherwise ``ask`` returns an ``Ask`` and the flow stops
there. The shell awaits ``Ask.awaitable`` and tells the answer with
``Connection.answer``, which continues the flow where it stopped. One code path either
way: the continuation is the same function.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..hooks.dispatch import CONTRACT

if TYPE_CHECKING:
    from ..codec import Packet
    from ..hooks.dispatch import HookCaller

#: a continuation: ``then(*ctx, value, error)``, returning the next Ask or None
Then = Callable[..., "Ask | None"]


class Ask:
    """A decision to await: ``awaitable`` gives the value that ``tell`` passes on."""

    __slots__ = ("awaitable", "ctx", "packet", "then")

    def __init__(self, awaitable: Awaitable[Any], then: Then, ctx: tuple[Any, ...]) -> None:
        self.awaitable = awaitable
        self.then = then
        self.ctx = ctx
        #: the packet whose handling waits (set by the connection)
        self.packet: Packet | None = None

    def __repr__(self) -> str:
        return f"<Ask {getattr(self.then, '__name__', self.then)} for {self.packet!r}>"

    def tell(self, value: Any, error: BaseException | None) -> Ask | None:
        """The answer (or the contract exception a plugin raised): continue the flow."""
        return self.then(*self.ctx, value, error)


def ask(caller: HookCaller[..., Any] | None, args: tuple[Any, ...], default: Any,
        then: Then, *ctx: Any) -> Ask | None:
    """Ask a hook for a decision and continue with ``then(*ctx, value, error)``, now or
    once the shell has the answer. ``default`` is the value when no plugin implements
    the hook; ``error`` is a contract exception (``Refuse``, ``RejectPublish``) a plugin
    raised."""
    if caller is None:
        return then(*ctx, default, None)
    if caller.is_async:
        return Ask(caller.acall(*args), then, ctx)
    try:
        value = caller(*args)
    except CONTRACT as exc:
        return then(*ctx, None, exc)
    return then(*ctx, value, None)


def wait_for(awaitable: Awaitable[Any], then: Then, *ctx: Any) -> Ask:
    """An Ask for something other than a hook (a storage commit, say)."""
    return Ask(awaitable, then, ctx)
