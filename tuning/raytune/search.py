"""Search algorithms whose trial ids survive a restore.

Tune's SearchGenerator (Optuna and every other Searcher) names each trial with a fresh random id.
A driver killed after creating trials but before its next experiment-state save comes back, on
restore, without those trials: it samples again under new random ids, so the database holds the
lost ones (never finished) next to their replacements. Numbering trials "<prefix>_<index:05d>",
the index being the generator's own count (saved and restored with its state), gives the
replacement the lost trial's id: the same trial row and run execute again, exactly num_samples in
all. Tune's BasicVariantGenerator already names trials this way.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

from ray.tune.experiment.config_parser import _create_trial_from_spec
from ray.tune.search import Searcher, SearchGenerator
from ray.tune.search.variant_generator import _resolve_nested_dict, format_vars
from ray.tune.utils.util import flatten_dict, merge_dicts


class IndexedSearchGenerator(SearchGenerator):
    """A SearchGenerator naming trials "<prefix>_<index:05d>" in creation order."""

    def __init__(self, searcher: Searcher):
        super().__init__(searcher)
        self.id_prefix = uuid.uuid4().hex[:5] + "_"

    def create_trial_if_possible(self, experiment_spec: dict) -> Any:
        # SearchGenerator.create_trial_if_possible (Ray 2.60), with the trial id from the count.
        trial_id = f"{self.id_prefix}{self._counter:05d}"
        suggested_config = self.searcher.suggest(trial_id)
        if suggested_config == Searcher.FINISHED:
            self._finished = True
            return None
        if suggested_config is None:
            return None
        spec = copy.deepcopy(experiment_spec)
        spec["config"] = merge_dicts(spec["config"], copy.deepcopy(suggested_config))
        flattened_config = _resolve_nested_dict(spec["config"])
        self._counter += 1
        return _create_trial_from_spec(
            spec,
            self._parser,
            evaluated_params=flatten_dict(suggested_config),
            experiment_tag=f"{self._counter}_{format_vars(flattened_config)}",
            trial_id=trial_id,
        )

    def get_state(self) -> dict:
        return {**super().get_state(), "id_prefix": self.id_prefix}

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        self.id_prefix = state.get("id_prefix", self.id_prefix)
