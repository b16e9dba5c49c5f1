"""The cost model's steps (`aigrid`'s default profile): each estimator adds one term to the request's
predicted TTFT / TPOT at every candidate, and `slo_slack` picks from the predictions against the class
SLO. The arithmetic is `extproc.gateway.routing.costmodel`; each step owns the state it needs."""

from extproc.gateway.routing.steps.slo import decode, link, prefill, queue, reserve, slack, stall  # noqa: F401
