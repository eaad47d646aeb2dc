"""Reference trainer: a scikit-learn MLP trained epoch by epoch on a dataset scikit-learn ships.

Fast (a default run takes about a second here) and real: learning rate, batch size and model size
change the result. scikit-learn is imported inside `train`, never by the web process.
"""

from __future__ import annotations

import json
import pickle
import time
from dataclasses import dataclass
from typing import Any

from .base import EvaluationResult, HyperParameter, RunContext, RunStoppedEarly, Trainer

# A fixed split seed keeps the held-out test set identical across runs, so scores compare.
SPLIT_SEED = 20261127
DATASET_LOADERS = {
    "digits": "load_digits",
    "wine": "load_wine",
    "breast_cancer": "load_breast_cancer",
    "iris": "load_iris",
}


@dataclass
class _Splits:
    x_train: Any
    y_train: Any
    x_val: Any
    y_val: Any
    x_test: Any
    y_test: Any
    classes: Any


def load_splits(dataset: str) -> _Splits:
    """60/20/20 train/validation/test split of a bundled dataset, standardised on train."""
    import numpy as np
    from sklearn import datasets
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    bunch = getattr(datasets, DATASET_LOADERS[dataset])()
    x, y = bunch.data.astype(np.float64), bunch.target
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=0.2, random_state=SPLIT_SEED, stratify=y)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=0.25, random_state=SPLIT_SEED, stratify=y_rest
    )
    scaler = StandardScaler().fit(x_train)
    return _Splits(
        scaler.transform(x_train),
        y_train,
        scaler.transform(x_val),
        y_val,
        scaler.transform(x_test),
        y_test,
        np.unique(y),
    )


class SklearnMLPTrainer(Trainer):
    name = "sklearn-mlp"
    title = "scikit-learn MLP classifier"
    description = (
        "A multi-layer perceptron trained one epoch at a time (Adam) on a dataset bundled with "
        "scikit-learn. Reports train loss, validation loss and accuracy every epoch; evaluated on a "
        "fixed held-out test split (accuracy is the primary score)."
    )
    datasets = tuple(DATASET_LOADERS)
    default_metric = "val_accuracy"
    default_mode = "max"
    metrics = ("train_loss", "val_loss", "val_accuracy")
    hyperparameters = (
        HyperParameter("learning_rate", "float", 1e-3, "Adam step size.", low=1e-6, high=1.0, log=True),
        HyperParameter("batch_size", "int", 32, "Examples per gradient step.", low=1, high=2048),
        HyperParameter("hidden_units", "int", 64, "Units in each hidden layer.", low=1, high=2048),
        HyperParameter("hidden_layers", "int", 1, "Number of hidden layers.", low=1, high=8),
        HyperParameter("epochs", "int", 20, "Passes over the training split.", low=1, high=1000),
        HyperParameter("alpha", "float", 1e-4, "L2 penalty.", low=0.0, high=10.0),
        HyperParameter("seed", "int", 0, "Weight initialisation and shuffling seed.", low=0, high=2**31 - 1),
        HyperParameter(
            "epoch_delay_s",
            "float",
            0.0,
            "Seconds to pause after each epoch: slows a run down for demos and tests.",
            low=0.0,
            high=60.0,
        ),
    )

    def train(self, ctx: RunContext) -> Any:
        import numpy as np
        from sklearn.metrics import accuracy_score, log_loss
        from sklearn.neural_network import MLPClassifier

        hp = ctx.hyperparameters
        splits = load_splits(ctx.dataset)
        model = MLPClassifier(
            hidden_layer_sizes=(hp["hidden_units"],) * hp["hidden_layers"],
            learning_rate_init=hp["learning_rate"],
            batch_size=hp["batch_size"],
            alpha=hp["alpha"],
            random_state=hp["seed"],
            solver="adam",
        )
        ctx.log(f"training on {ctx.dataset}: {len(splits.y_train)} train, {len(splits.y_val)} validation examples")
        for epoch in range(1, hp["epochs"] + 1):
            model.partial_fit(splits.x_train, splits.y_train, classes=splits.classes)
            proba = model.predict_proba(splits.x_val)
            val_loss = log_loss(splits.y_val, proba, labels=splits.classes)
            val_accuracy = accuracy_score(splits.y_val, splits.classes[np.argmax(proba, axis=1)])
            train_loss = float(model.loss_)
            if not np.isfinite(train_loss):
                raise FloatingPointError(f"training diverged at epoch {epoch} (loss {train_loss})")
            ctx.log(
                f"epoch {epoch}: train_loss={train_loss:.4f} val_loss={val_loss:.4f} val_accuracy={val_accuracy:.4f}"
            )
            try:
                ctx.report(epoch, {"train_loss": train_loss, "val_loss": val_loss, "val_accuracy": val_accuracy})
            except RunStoppedEarly:
                break  # a scheduler stopped the trial: the model so far is evaluated

            if hp["epoch_delay_s"]:
                time.sleep(hp["epoch_delay_s"])
        with open(ctx.output_dir / "model.pkl", "wb") as fh:
            pickle.dump(model, fh)
        return {"model": model, "splits": splits}

    def evaluate(self, ctx: RunContext, state: Any) -> EvaluationResult:
        from sklearn.metrics import accuracy_score, f1_score, log_loss

        model, splits = state["model"], state["splits"]
        proba = model.predict_proba(splits.x_test)
        predicted = splits.classes[proba.argmax(axis=1)]
        metrics = {
            "accuracy": float(accuracy_score(splits.y_test, predicted)),
            "macro_f1": float(f1_score(splits.y_test, predicted, average="macro")),
            "log_loss": float(log_loss(splits.y_test, proba, labels=splits.classes)),
            "test_examples": float(len(splits.y_test)),
        }
        (ctx.output_dir / "evaluation.json").write_text(json.dumps(metrics, indent=2))
        return EvaluationResult(metrics=metrics, primary_metric="accuracy")
