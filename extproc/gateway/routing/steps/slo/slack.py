"""`slo_slack` (picker): the site where the request's predicted TTFT and TPOT leave the most of its class
SLO, or miss it by the least; near sites first for the classes that want them."""

from __future__ import annotations

import hashlib
import math

from pydantic import Field

from extproc.gateway.request.features import SlaClass
from extproc.gateway.routing.costmodel import slack
from extproc.gateway.routing.framework import Decision, Picker, Predictions, RoutingContext
from extproc.gateway.routing.registry import StepEnv, StepParams, register
from extproc.gateway.routing.steps.slo.common import SloBounds, speed_of
from extproc.gateway.routing.views import SiteView


@register("slo_slack")
class SloSlack(Picker):
    """Slack = the share of the class SLO the prediction leaves at its tighter bound (TTFT or TPOT).

    1. The sites predicted to meet the SLO that the estimators did not reserve (realtime headroom); if
       there are none, the reserved ones that meet it (this request would miss anywhere else); if none
       meets it, every site.
    2. For a class in `near_first`, the nearest tier with at least `near_min_slack` of slack.
    3. Else the site with the most slack (a predicted hit with the most room, or, when every site is
       predicted to miss, the least violation). Slacks within `tie` of the best tie, and the tie is drawn
       from the request's key (`ctx.u`): no fixed order decides.

    The reason names the term that decided: on the bound that limits the runner-up's slack (TTFT or
    TPOT), the term whose share of it differs most between the chosen site and the runner-up."""

    uses_predictions = True

    class Params(StepParams):
        # False: every request is judged against the standard class's SLO (the ablation without classes).
        sla_aware: bool = True
        near_first: list[SlaClass] = Field(default_factory=lambda: [SlaClass.realtime])
        near_min_slack: float = Field(default=0.15, ge=-1, le=1)
        tie: float = Field(default=0.01, ge=0, le=1)
        # Prefix affinity among the sites with at least this much slack: the one whose prefix cache saves
        # the most prefill (by more than `affinity_tokens` over the most-slack site), then the request key's
        # rendezvous home among equals. None: off (the most slack decides).
        affinity_min_slack: float | None = Field(default=0.1, ge=-1, le=1)
        affinity_tokens: int = Field(default=128, ge=0)
        # ... and within this much of the most-slack site's slack (None: any site above the minimum).
        # Measured: without it, affinity kept standard RAG on the near sites of the three-tier grid, where
        # realtime then queued behind it (R 156 -> 104 req/s); with 0.1 no miss at 96 and 128 req/s.
        affinity_spread: float | None = Field(default=0.1, ge=0, le=2)
        # For the near-first classes: prefix affinity among the near tier's sites within this much of its
        # best slack (a realtime request keeps the most room, give or take this). None: off.
        affinity_band: float | None = Field(default=0.05, ge=0, le=1)
        # Holding back: a request of these classes waits (`hold_step_ms` at a time, and at most
        # `hold_max_share` of its class's TTFT SLO in all) while every candidate's predicted TPOT, with
        # this request's prefill riding in its decode steps, leaves less than `hold_tpot_slack` of the
        # realtime TPOT SLO: its prefill would stall streams that are near their bound wherever it went.
        hold_classes: list[SlaClass] = Field(default_factory=lambda: [SlaClass.batch])
        hold_tpot_slack: float = Field(default=0.15, ge=-1, le=1)
        hold_step_ms: float = Field(default=100.0, gt=0, le=60_000)
        hold_max_share: float = Field(default=0.3, ge=0, le=1)
        hold_max_ms: float = Field(default=3000.0, ge=0, le=60_000)

    def __init__(self, name: str, params: Params, env: StepEnv) -> None:
        super().__init__(name)
        self.slo = SloBounds(env.config)
        self.sla_aware = params.sla_aware
        self.near_first = frozenset(params.near_first)
        self.near_min = params.near_min_slack
        self.tie = params.tie
        self.affinity_min = params.affinity_min_slack
        self.affinity_tokens = params.affinity_tokens
        self.affinity_band = params.affinity_band
        self.affinity_spread = params.affinity_spread
        self.hold_classes = frozenset(params.hold_classes)
        self.hold_tpot_slack = params.hold_tpot_slack
        self.hold_step_ms = params.hold_step_ms
        self.hold_max_share = params.hold_max_share
        self.hold_max_ms = params.hold_max_ms
        self._salts: dict[str, int] = {}

    def pick(self, ctx: RoutingContext, sites: list[SiteView], scores: list[float]) -> Decision:  # pragma: no cover
        raise TypeError("slo_slack chooses from predictions: the profile calls pick_predicted")

    def pick_predicted(self, ctx: RoutingContext, sites: list[SiteView], scores: list[float],
                       pred: Predictions) -> Decision:
        sla = ctx.features.sla if self.sla_aware else SlaClass.standard
        ttft_slo, tpot_slo = self.slo.of(sla)
        slacks = [slack(pred.ttft_ms[i], pred.tpot_ms[i], ttft_slo, tpot_slo) for i in range(len(sites))]
        everyone = range(len(sites))
        pool = ([i for i in everyone if slacks[i] >= 0 and not pred.reserved[i]]
                or [i for i in everyone if slacks[i] >= 0] or list(everyone))
        chosen: int | None = None
        how = "most slack"
        if sla in self.near_first:
            # Tier by tier (sites within rtt_tolerance_ms count as equally near), the most slack in the
            # nearest tier that has enough: equally near sites share the work rather than the first name.
            for tier in rtt_tiers(sites, pool, ctx.policy.rtt_tolerance_ms):
                i = self._most_slack(tier, slacks, ctx.u)
                if slacks[i] >= self.near_min:
                    chosen, how = i, "nearest with slack"
                    if self.affinity_band is not None:
                        # Within `affinity_band` of the tier's best slack, the prefix cache decides.
                        band = [j for j in tier if slacks[j] >= max(self.near_min, slacks[i] - self.affinity_band)]
                        chosen = self._affine_in(band, sites, self._unc(sites, pred, ctx.features.prompt_tokens), ctx.u)
                    break
        elif self.affinity_min is not None:
            i = self._affine(pool, sites, slacks, self._unc(sites, pred, ctx.features.prompt_tokens), ctx.u, None)
            if i is not None:
                chosen, how = i, "prefix home"
        if chosen is None:
            chosen = self._most_slack(pool, slacks, ctx.u)
            how = "most slack" if slacks[chosen] >= 0 else "least violation"
        hold = self._hold(ctx, pool, pred, ttft_slo)
        if hold:
            s = sites[chosen]
            return Decision(s.name, f"slo hold {hold:.0f} ms: realtime TPOT tight at every site (best "
                                    f"{max(pred.tpot_ms[i] for i in pool):.0f} ms predicted)", self.name, s.pressure,
                            ttft_ms=pred.ttft_ms[chosen], uncached_tokens=pred.uncached[chosen], hold_ms=hold)
        term, rival = self._decider(chosen, slacks, pred, ttft_slo, tpot_slo)
        s = sites[chosen]
        tpot = f", tpot {pred.tpot_ms[chosen]:.0f}/{tpot_slo:.0f} ms" if tpot_slo else ""
        vs = f"; {term} decided over {sites[rival].name}" if rival is not None else ""
        defaults = [v.name for v in sites if v.speed is None]
        note = f"; default speed for {', '.join(defaults)}" if defaults else ""
        reason = (f"slo {how} {s.name}: ttft {pred.ttft_ms[chosen]:.0f}/{ttft_slo:.0f} ms{tpot}, "
                  f"slack {slacks[chosen]:.2f}{vs}{note}")
        return Decision(s.name, reason, self.name, s.pressure, ttft_ms=pred.ttft_ms[chosen],
                        tpot_ms=pred.tpot_ms[chosen] if tpot_slo else None,
                        uncached_tokens=pred.uncached[chosen], slack=slacks[chosen],
                        site_slack=slack(pred.ttft_ms[chosen], pred.tpot_ms[chosen], *self.slo.of(SlaClass.realtime)),
                        term=term,
                        default_speed=tuple(defaults))

    def _hold(self, ctx: RoutingContext, pool: list[int], pred: Predictions, ttft_slo: float) -> float:
        """How long to hold this request back (0: route it now); see the `hold_*` parameters."""
        f = ctx.features
        if f.sla not in self.hold_classes or f.held_ms + self.hold_step_ms > min(self.hold_max_share * ttft_slo, self.hold_max_ms):
            return 0.0
        rt_tpot = self.slo.of(SlaClass.realtime)[1]
        if not rt_tpot:
            return 0.0
        least = min(pred.tpot_ms[i] for i in pool)
        return self.hold_step_ms if 1.0 - least / rt_tpot < self.hold_tpot_slack else 0.0

    @staticmethod
    def _unc(sites: list[SiteView], pred: Predictions, prompt: int) -> list[float]:
        """The uncached tokens affinity compares: at a site of R replicas the site's own balancer picks the
        replica, so a prefix this gateway sent there once is on the replica it lands on with chance 1 / R
        (counting it whole concentrated long prefills on multi-replica sites, and realtime queued behind
        them: reference grid, 48-64 req/s)."""
        out: list[float] = []
        for i, v in enumerate(sites):
            n = pred.uncached[i]
            r = max(v.replicas, 1)
            out.append(float(n) if r == 1 or n is None else n + max(prompt - n, 0) * (r - 1) / r)
        return out

    def _affine(self, pool: list[int], sites: list[SiteView], slacks: list[float], unc: list[float],
                u: float, fallback: int | None) -> int | None:
        """Among `pool`'s sites with at least `affinity_min_slack` (and within `affinity_spread` of the most
        slack), the one that computes the least prefill
        (its prefix cache holds the most of the prompt, within `affinity_tokens`), and among those the
        request key's rendezvous home: the same key keeps the same site while it has room, so each
        site's cache holds its own share of the prompts rather than every site the same popular ones."""
        if self.affinity_min is None:
            return fallback
        # A prompt that is cold everywhere goes where the most slack is (measured: homing cold prompts by
        # key sent long RAG prefills to the small near sites, and realtime missed there).
        best = self._most_slack(pool, slacks, u)
        floor = self.affinity_min if self.affinity_spread is None else max(self.affinity_min, slacks[best] - self.affinity_spread)
        ok = [i for i in pool if slacks[i] >= floor]
        if not ok:
            return fallback
        if min(unc[i] for i in ok) >= unc[best] - self.affinity_tokens:
            return fallback
        return self._affine_in(ok, sites, unc, u)

    def _affine_in(self, ok: list[int], sites: list[SiteView], unc: list[float], u: float) -> int:
        least = min(unc[i] for i in ok)
        near = [i for i in ok if unc[i] <= least + self.affinity_tokens]
        if len(near) == 1:
            return near[0]
        key = int(u * 18446744073709551616.0)
        return max(near, key=lambda i: rendezvous_weight(_mix(key ^ self._salt(sites[i].name)), capacity(sites[i])))

    def _salt(self, name: str) -> int:
        salt = self._salts.get(name)
        if salt is None:
            salt = self._salts[name] = hash_name(name)
        return salt

    def _most_slack(self, pool: list[int], slacks: list[float], u: float) -> int:
        best = max(slacks[i] for i in pool)
        tied = [i for i in pool if slacks[i] >= best - self.tie]
        return tied[min(int(u * len(tied)), len(tied) - 1)]

    @staticmethod
    def _decider(chosen: int, slacks: list[float], pred: Predictions, ttft_slo: float,
                 tpot_slo: float | None) -> tuple[str, int | None]:
        """The runner-up (the most slack among the other sites) and the term that favours the chosen site
        the most against it, on the runner-up's binding bound."""
        others = [i for i in range(len(slacks)) if i != chosen]
        if not others:
            return "only candidate", None
        rival = max(others, key=lambda i: slacks[i])
        if pred.reserved[rival] and not pred.reserved[chosen] and slacks[rival] >= slacks[chosen]:
            return "realtime_reserve", rival
        ttft_bound = not tpot_slo or 1 - pred.ttft_ms[rival] / ttft_slo <= 1 - pred.tpot_ms[rival] / tpot_slo
        rows = pred.ttft_terms if ttft_bound else pred.tpot_terms
        best_term, best_gap = "", float("-inf")
        for term, row in rows.items():
            gap = row[rival] - row[chosen]
            if gap > best_gap:
                best_term, best_gap = term, gap
        return best_term or "tie", rival


def _mix(x: int) -> int:
    """splitmix64's finaliser: a 64-bit hash of a 64-bit integer (rendezvous weights without hashlib)."""
    x &= 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def capacity(v: SiteView) -> float:
    """A site's share of the homes: its prefill capacity (replicas x one replica's prefill speed)."""
    return max(v.replicas, 1) * speed_of(v).prefill_tokens_per_s


def rendezvous_weight(h: int, weight: float) -> float:
    """Weighted rendezvous hashing (Schindelhauer & Schomaker 2005): with h a uniform 64-bit hash,
    argmax of weight / -ln(u) lands on each site with probability proportional to its weight."""
    u = (h + 0.5) / 18446744073709551616.0
    return weight / -math.log(u)


def hash_name(name: str) -> int:
    """A stable 64-bit hash of a site name (Python's own hash() is salted per process)."""
    return int.from_bytes(hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


def rtt_tiers(sites: list[SiteView], pool: list[int], tolerance_ms: float) -> list[list[int]]:
    """The pool's indices grouped by distance, nearest first: a site joins the current group while its
    RTT is within `tolerance_ms` of the group's nearest."""
    order = sorted(pool, key=lambda i: sites[i].rtt_ms)
    tiers: list[list[int]] = []
    for i in order:
        if tiers and sites[i].rtt_ms <= sites[tiers[-1][0]].rtt_ms + tolerance_ms:
            tiers[-1].append(i)
        else:
            tiers.append([i])
    return tiers
