"""Seed for the whole-loop browser test (``python -m tests.ops.loop_seed TINY_MODEL ADAPTER_DIR``, with the
stack's environment): the newcomer's admin account and a production guard.

The production guard is what ``demo_setup`` registers in the demo (a LoRA adapter on the base model), but on
the tiny random model, so the test exercises the plumbing in seconds rather than the 270M model's minutes:
a LoRA adapter of rank 4 on the top layer of the tiny Gemma 3.
"""

from __future__ import annotations

import sys

USERNAME = "newcomer"
PASSWORD = "loop-test-password-1"
PRODUCTION = "house-guard-v1"


def seed(tiny_model: str, adapter_dir: str) -> None:
    import django

    django.setup()
    from django.contrib.auth.models import Group, User
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from guard.models import ModelVersion
    from guardsite.roles import ADMIN
    from trainer.model_loading import LINEAR_MODULES

    user = User.objects.create_superuser(USERNAME, password=PASSWORD)
    user.groups.add(Group.objects.get_or_create(name=ADMIN)[0])
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=LINEAR_MODULES, layers_to_transform=[1],
                        task_type="CAUSAL_LM")
    get_peft_model(model, config).save_pretrained(adapter_dir)
    # Production with no promotion time, as demo_setup registered the shipped guard before it recorded one:
    # the registry must still offer it as a rollback target once something replaced it.
    ModelVersion.objects.create(name=PRODUCTION, base_model_path=tiny_model, adapter_path=adapter_dir,
                                status=ModelVersion.Status.PRODUCTION, promoted_at=None,
                                provenance={"recipe": "sft", "note": "seeded by the whole-loop test"})


def seed_shipped() -> None:
    """The account, and the shipped guard as production exactly as ``demo_setup`` registers it (the real
    270M model: minutes per phase on a CPU; used to take the docs' screenshots)."""
    import django

    django.setup()
    from django.contrib.auth.models import Group, User

    from guard.shipped import register_shipped_model
    from guardsite.roles import ADMIN

    user = User.objects.create_superuser(USERNAME, password=PASSWORD)
    user.groups.add(Group.objects.get_or_create(name=ADMIN)[0])
    assert register_shipped_model() is not None, "this checkout has no shipped guard"


if __name__ == "__main__":
    if sys.argv[1:] == ["shipped"]:
        seed_shipped()
    elif len(sys.argv) == 3:
        seed(sys.argv[1], sys.argv[2])
    else:
        raise SystemExit("usage: python -m tests.ops.loop_seed TINY_MODEL_DIR ADAPTER_DIR | shipped")
