from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, subprocess_env


@pytest.mark.django_db
def test_registry_lists_tunix_sft_without_importing_jax_or_tunix():
    code = (
        "import django, sys; django.setup();"
        "from runs.trainers.registry import get_trainer;"
        "t = get_trainer('tunix-sft');"
        "heavy = sorted(m for m in ('jax', 'tunix', 'flax') if m in sys.modules);"
        "print(json.dumps({'names': t.dataset_names(), 'heavy': heavy}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", "import json;" + code],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert "addition@1" in result["names"]
    assert result["heavy"] == []


def test_lora_without_pretrained_weights_is_refused():
    from runs.trainers.registry import get_trainer
    from tunix_rt.exceptions import ValidationError

    with pytest.raises(ValidationError) as info:
        get_trainer("tunix-sft").check_combination(
            {"num_heads": 4, "num_kv_heads": 3, "pretrained_path": "", "pretrained_config": "", "lora_rank": 8}
        )
    assert set(info.value.errors["hyperparameters"]) == {"num_kv_heads", "lora_rank"}
