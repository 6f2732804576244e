"""The search-rate dial in a request (sem.rate): a rate asked (by the request, else the deployment) becomes the
`confidence` gate's threshold for this answer (each served model has its own dial), held lower by the deployment's
search budget so it lasts its window."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sem.loop import LoopOptions, SearchPolicy

if TYPE_CHECKING:
    from service.models import ServedModel
    from service.state import ServiceState


async def apply_search_rate(state: ServiceState, model: ServedModel, options: LoopOptions, asked: float | None) -> bool:
    """Set `options`' threshold from the dial; True when it did (the answer counts toward the rate achieved). A
    request's rate makes it a `confidence` answer (its validation refused any other policy); the deployment's applies
    to `confidence` answers only."""
    rate = asked if asked is not None else model.defaults.search_rate
    dial = model.rate_dial
    if rate is None or options.search_budget_exhausted or options.client_search:
        return False
    if asked is not None:
        options.policy = SearchPolicy.confidence
    elif options.policy is not SearchPolicy.confidence:
        return False
    left = reset_s = None
    standing = options.allowance.last if options.allowance is not None else None
    if standing is not None and standing.left is not None:
        left, reset_s = standing.left, standing.reset_s
    used, options.confidence_threshold = await dial.plan(rate, left=left, reset_s=reset_s)
    state.metrics.observe_rate(rate, used)
    return True
