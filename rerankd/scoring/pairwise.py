"""The pairwise path: the query and each document read together (cross-encoders, yes/no LLMs).

A score depends on the (query, document) pair and everything the request adds (policy,
instruction, family options), so the cache holds one float per pair under all of that. Only
the pairs the cache misses are planned (images decoded only for them) and run; a document
cut into chunks scores as its best chunk (the family's plan says how).
"""

from __future__ import annotations

import numpy as np

from rerankd.admission import estimate_chars, estimate_tokens
from rerankd.cache import ScoreCache, score_key
from rerankd.families.prefix import shared_tokens
from rerankd.images import ImageLoader
from rerankd.metrics import Metrics
from rerankd.scoring.base import Scored, ScoringJob, ScoringKind, Target, chars


class PairwisePath:
    kind: ScoringKind = "pairwise"

    def __init__(self, cache: ScoreCache | None, images: ImageLoader, metrics: Metrics | None):
        self.cache = cache
        self.images = images
        self.metrics = metrics

    async def score(self, target: Target, job: ScoringJob) -> Scored:
        query, firsts = job.query, job.documents
        raw = np.empty(len(firsts), dtype=np.float64)
        inputs = job.inputs()
        keys = [score_key(target.identity, inputs, query.digest, d.digest) for _, d in firsts]
        found = await self.cache.get_many(keys) if self.cache else [None] * len(firsts)
        missing = [i for i, value in enumerate(found) if value is None]
        for i, value in enumerate(found):
            if value is not None:
                raw[i] = value
        tokens = 0
        if missing:
            engine, policy = target.engine, job.policy
            chunks = policy.max_chunks_per_doc if policy.strategy == "chunk" else 1
            sizes = [chars(firsts[i][1]) for i in missing]
            estimate = estimate_tokens(chars(query), sizes, engine.max_length, chunks)
            target.admit(estimate)  # refuse before paying for images and tokens
            todo = await self.images.decode_request(query, [firsts[i] for i in missing])
            plan = await target.prepare(
                lambda: engine.plan(todo[0], todo[1:], job.policy, job.instruction, job.options),
                estimate,
                estimate_chars(chars(query), sizes, engine.max_length, chunks),
            )
            outputs = await target.submit(plan.sequences)
            if self.metrics is not None:
                self.metrics.shared_prefix.labels(target.name).inc(shared_tokens(plan.sequences))
            scores = plan.combine(outputs)
            raw[missing] = scores
            tokens = plan.tokens
            if self.cache:
                await self.cache.set_many(
                    {keys[i]: float(s) for i, s in zip(missing, scores, strict=True)}
                )
        return Scored(raw, tokens, len(firsts) - len(missing))
