from __future__ import annotations

import secrets

import factory
from django.contrib.auth import get_user_model

from accounts.models import ApiToken
from runs.models import Run
from tuning.models import Trial, TuningJob


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password("pass-word-123")


class RunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Run

    owner = factory.SubFactory(UserFactory)
    trainer = "sklearn-mlp"
    dataset = "digits"
    hyperparameters = factory.LazyFunction(lambda: {"learning_rate": 0.001, "batch_size": 32})


class TuningJobFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = TuningJob

    owner = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"job {n}")
    trainer = "sklearn-mlp"
    dataset = "digits"
    metric = "val_accuracy"
    mode = TuningJob.Mode.MAX
    search_space = factory.LazyFunction(lambda: {"learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-1}})
    num_samples = 4


class TrialFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Trial

    job = factory.SubFactory(TuningJobFactory)
    ray_trial_id = factory.Sequence(lambda n: f"trial_{n:05d}")
    number = factory.Sequence(lambda n: n)


class ApiTokenFactory(factory.django.DjangoModelFactory):
    """A token whose key is on the instance (`token.key`): only its hash is stored."""

    class Meta:
        model = ApiToken

    user = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"token {n}")
    key = factory.LazyFunction(lambda: secrets.token_hex(20))
    key_hash = factory.LazyAttribute(lambda t: ApiToken.hash_key(t.key))
    prefix = factory.LazyAttribute(lambda t: t.key[: ApiToken.PREFIX_LENGTH])

    @classmethod
    def _create(cls, model_class, *args, key, **kwargs):
        token = super()._create(model_class, *args, **kwargs)
        token.key = key
        return token
