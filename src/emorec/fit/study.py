"""The search's bookkeeping as an Optuna study: one trial per candidate, in `OUTPUT/study.db`
(SQLite) or any Optuna RDB URL (`--storage`), which several `emorec fit` processes share.

A trial carries the candidate's id (`candidate`) and its leaderboard row (`row`: settings and
scores) as user attributes; its value is the val macro-F1. Finished trials are what a rerun skips,
and `OUTPUT/leaderboard.csv` is written from them (`rows`). A done candidate is COMPLETE, a
fine-tune stopped at a rung (`rung_survivors`) PRUNED (with its last score), a failed, skipped or interrupted one
FAIL (tried again by the next run).

Claims: a process takes a candidate by creating a RUNNING trial that names it and its claimant
(host, pid, a random id) in one insert, then keeps it only if no live trial of that candidate
has a lower trial id (the earliest claim wins; the loser closes its own as `released`). A claim
of this host whose process has died (a kill) is stale and closed as interrupted. With SQLite
inserts are serialised, so two claims always see each other; an RDB server that commits two
inserts at the same instant could let both run, which wastes time but records the candidate
once (`rows` keeps its best trial).
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

STUDY_FILE = "study.db"
STUDY_NAME = "emorec-fit"
# Successive halving (Jamieson & Talwalkar 2016): a fine-tune goes on past a rung only while in the
# top 1/RUNG_FACTOR of the fine-tunes that reached it (`rung_survivors`). Rungs end at 1, 3, 9
# epochs (FIRST_RUNG_EPOCHS times powers of RUNG_FACTOR), the last one standing trains on to the
# budget. The rule is applied when every fine-tune of the rung has reported, not by Optuna's
# SuccessiveHalvingPruner: that is ASHA's asynchronous rule (Li et al. 2020), under which the first
# trial to reach a rung is always promoted, so with fine-tunes run rung by rung in one process
# the first would never be stopped (a 2-way rung kept the worse one whenever it reported first).
RUNG_FACTOR = 3
RUNGS = 3
FIRST_RUNG_EPOCHS = 1
DONE, PRUNED, FAILED, SKIPPED, RUNNING = "done", "pruned", "failed", "skipped", "running"


def storage_url(output: Path, storage: str | None) -> str:
    return storage or f"sqlite:///{(Path(output) / STUDY_FILE).resolve()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class CandidateStudy:
    """The study of one search; `claimant` names this process's claims."""

    def __init__(self, output: Path, storage: str | None = None):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = optuna.create_study(
            storage=storage_url(output, storage), study_name=STUDY_NAME, direction="maximize", load_if_exists=True,
            pruner=optuna.pruners.NopPruner())  # rung decisions: rung_survivors
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.claimant = f"{self.host}:{self.pid}:{uuid.uuid4().hex[:8]}"

    def _trials(self, candidate_id: str | None = None):
        trials = self.study.get_trials(deepcopy=False)
        return [t for t in trials if candidate_id is None or t.user_attrs.get("candidate") == candidate_id]

    def finished(self, candidate_id: str):
        """The COMPLETE or PRUNED trial of `candidate_id`, if any."""
        from optuna.trial import TrialState

        return next((t for t in self._trials(candidate_id) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)),
                    None)

    def claim(self, candidate_id: str, row: dict):
        """A RUNNING trial of `candidate_id` for this process, or None when the candidate is
        finished or another live process holds it."""
        from optuna.trial import FrozenTrial, Trial, TrialState

        if self.finished(candidate_id) is not None:
            return None
        self._close_stale(candidate_id)
        template = FrozenTrial(number=-1, state=TrialState.RUNNING, value=None, datetime_start=None,
                               datetime_complete=None, params={}, distributions={},
                               user_attrs={"candidate": candidate_id, "row": {**row, "status": RUNNING},
                                           "claimant": self.claimant, "host": self.host, "pid": self.pid},
                               system_attrs={}, intermediate_values={}, trial_id=-1)
        storage, study_id = self.study._storage, self.study._study_id
        trial_id = storage.create_new_trial(study_id, template_trial=template)
        rivals = [t for t in self._trials(candidate_id) if t._trial_id != trial_id
                  and (t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                       or (t.state == TrialState.RUNNING and t._trial_id < trial_id))]
        trial = Trial(self.study, trial_id)
        if rivals:
            trial.set_user_attr("released", True)
            self.study.tell(trial, state=TrialState.FAIL)
            return None
        return trial

    def _close_stale(self, candidate_id: str) -> None:
        """RUNNING trials of this host whose process is gone (killed): closed as interrupted."""
        from optuna.trial import Trial, TrialState

        for t in self._trials(candidate_id):
            pid = t.user_attrs.get("pid")
            if t.state == TrialState.RUNNING and t.user_attrs.get("host") == self.host and pid != self.pid \
                    and isinstance(pid, int) and not _alive(pid):
                trial = Trial(self.study, t._trial_id)
                trial.set_user_attr("row", {**t.user_attrs.get("row", {}), "status": FAILED, "note": "interrupted"})
                self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)

    def finish(self, trial, row: dict) -> None:
        """Close `trial` by row['status']: done (value val_macro_f1), pruned, else failed."""
        from optuna.trial import TrialState

        trial.set_user_attr("row", row)
        status = row.get("status")
        if status == DONE:
            self.study.tell(trial, float(row["val_macro_f1"]), skip_if_finished=True)
        elif status == PRUNED:
            self.study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
        else:
            self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)

    def record(self, row: dict) -> None:
        """A trial for work that is not claimed (a backbone's extraction: every process needs its
        features), added finished, unless one of that id is done already."""
        import optuna
        from optuna.trial import TrialState

        if row.get("status") == DONE and self.finished(row["candidate"]) is not None:
            return
        done = row.get("status") == DONE
        value = row.get("val_macro_f1")
        self.study.add_trial(optuna.trial.create_trial(
            state=TrialState.COMPLETE if done else TrialState.FAIL,
            value=float(value) if done and value not in (None, "") else (0.0 if done else None),
            user_attrs={"candidate": row["candidate"], "row": row, "claimant": self.claimant}))

    def rung_values(self, step: int) -> dict[str, float]:
        """candidate id -> the val score it reported after `step` epochs, over every trial of the
        study (this process's and others'), a released claim's excepted."""
        values: dict[str, float] = {}
        for t in self._trials():
            name = t.user_attrs.get("candidate")
            if name is not None and not t.user_attrs.get("released") and step in t.intermediate_values:
                values[name] = max(values.get(name, float("-inf")), float(t.intermediate_values[step]))
        return values

    def rows(self) -> list[dict]:
        """One leaderboard row per candidate, in the order candidates were first tried: its
        COMPLETE trial, else PRUNED, else a live claim, else its last failed or skipped one."""
        from optuna.trial import TrialState

        rank = {TrialState.COMPLETE: 4, TrialState.PRUNED: 3, TrialState.RUNNING: 2, TrialState.FAIL: 1}
        chosen: dict[str, tuple] = {}
        for t in self._trials():
            name = t.user_attrs.get("candidate")
            if name is None or t.user_attrs.get("released") or t.state not in rank:
                continue
            key = (rank[t.state], t.number)
            if name not in chosen or key > chosen[name][0]:
                chosen[name] = (key, chosen.get(name, (None, t.number))[1], t)
        ordered = sorted(chosen.values(), key=lambda c: c[1])
        return [dict(c[2].user_attrs.get("row", {})) for c in ordered]


def rung_survivors(values: dict[str, float], live: list[str], factor: int = RUNG_FACTOR) -> list[str]:
    """The ones of `live` that go on past a rung: the top max(1, n // factor) of the n fine-tunes
    that reported there (`values`, candidate id -> score; the earlier-listed wins a tie)."""
    keep = max(1, len(values) // factor)
    top = set(sorted(values, key=lambda name: -values[name])[:keep])
    return [name for name in live if name in top]
