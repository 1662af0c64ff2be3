"""One private training run's privacy bookkeeping: the plan, the ledger reservation, the DP
step, and the report that goes into checkpoints and `summary.json`.

Order of events: plan (calibrate sigma for the target) -> reserve the planned spend in the
ledger (refused before training if it would exceed the dataset's cap) -> train -> commit what
was spent. A run that dies keeps its reservation counted in full; resuming it reuses that
reservation instead of reserving again.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from simmim.config import Config
from simmim.data.batches import EncodedSet
from simmim.errors import PrivacyError
from simmim.privacy.ledger import Ledger
from simmim.privacy.training import PrivateStep, plan_privacy


class PrivateTraining:
    def __init__(self, cfg: Config, model, train_set: EncodedSet, dataset: str, out_dir: Path,
                 resumed_job: str | None = None, video_set: EncodedSet | None = None):
        self.plan = plan_privacy(cfg, train_set.records, video_set.records if video_set is not None else ())
        self.dataset = dataset
        self.ledger = Ledger(cfg.privacy.ledger or None)
        if dataset not in self.ledger.datasets():
            # No cap yet: the first job's target becomes the dataset's cap (raise it deliberately with
            # `simmim budget set-cap` to allow more jobs on the same data).
            self.ledger.set_cap(dataset, epsilon=self.plan.epsilon, delta=self.plan.delta)
        if resumed_job and self._still_reserved(resumed_job):
            self.job_id = resumed_job
        else:
            self.job_id = f"train-{uuid.uuid4().hex[:12]}"
            self.ledger.reserve(dataset, self.job_id, [self.plan.event()], self.plan.delta,
                                description=f"DP-SGD training into {out_dir}")
        self.step = PrivateStep(model, train_set, self.plan, micro_batch_size=cfg.privacy.micro_batch_size,
                                mask_ratio=cfg.train.mask_ratio, video_set=video_set)

    def _still_reserved(self, job_id: str) -> bool:
        try:
            return self.ledger.job(job_id).status == "reserved"
        except PrivacyError:
            return False

    def report(self, steps: int) -> dict:
        return {**self.plan.to_dict(), "steps": steps, "epsilon_spent": self.plan.spent(steps),
                "ledger_job": self.job_id, "ledger_dataset": self.dataset}

    def commit(self, steps: int) -> None:
        if steps > self.plan.steps:
            raise PrivacyError(f"trained {steps} steps but reserved {self.plan.steps}")
        self.ledger.commit(self.job_id, [self.plan.event(steps)])

    def close(self) -> None:
        self.step.close()
